"""Dispatch is never wrong, over the whole catalogue: every solution that runs here is forced
through fib.apply and called in every dtype, layout, aliasing, batch and calling form of
contract_cases; each call either gives the original's answer within the definition's
tolerance (a sampler: ids inside the support, its check kind) (served) or is answered by the
original and counted, and writes no input the definition does not let it write. A solution
whose module says `FIB_ANY_LAYOUT = True` must serve every layout itself, and right; any
other is refused non-contiguous arguments.

Solutions are discovered from the catalogue. Each solution file's entry function is run on
the smallest definition it serves, generated from the families at tiny sizes where a family
template exists (so the Triton interpreter stays fast). CPU: torch and CPU solutions, and
Triton through the interpreter (TRITON_INTERPRET=1, set by conftest). GPU (marked `gpu`):
every solution that targets NVIDIA GPUs, on the device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import fib_runtime as fib
from fib_runtime import families
from fib_runtime.catalogue import load_catalogue
from fib_runtime.measure.checks import TOLERANCE, check_kind, check_result
from fib_runtime.measure.compare import as_tuple
from fib_runtime.schema import Definition, Solution
from tests.dispatch.contract_cases import DEVICE, Call, calls, copied, original, same
from tests.dispatch.forced import forced_db, interpreted_triton  # noqa: F401 (fixture)

TINY_FAMILIES = (
    ("rmsnorm", {"hidden_size": 64, "eps": 1e-6}), ("rmsnorm", {"hidden_size": 64, "eps": 1e-5}),
    ("fused_add_rmsnorm", {"hidden_size": 64, "eps": 1e-6}),
    ("fused_add_rmsnorm", {"hidden_size": 64, "eps": 1e-5}),
    ("silu_and_mul", {"intermediate_size": 32}), ("gemm", {"n": 48, "k": 32}),
    ("rope", {"head_size": 32, "rotary_dim": 32}), ("rope", {"head_size": 32, "rotary_dim": 16}),
)
TINY = [families.resolve(f, load_catalogue().definitions, **c) for f, c in TINY_FAMILIES]
CATALOGUE = load_catalogue(generated=TINY)
DEFINITIONS = CATALOGUE.definitions

# Known solution bugs (definitions/**, issue 31b's area): (solution variant, call) -> why.
# A listed call may pass (the bug shows on some inputs only); one that fails is an xfail.
_NAN_HEAD = ("a head whose query holds NaN or +inf: the reference gives NaN for the head's "
             "outputs")
KNOWN_BUGS: dict[tuple[str, str], str] = {
    ("torch_padded", "NaN and Inf"): _NAN_HEAD + "; torch_padded gives -inf",
    ("torch_pages", "NaN and Inf"): _NAN_HEAD + "; torch_pages gives +-inf for some",
    ("triton_split_kv", "NaN and Inf"): _NAN_HEAD + "; triton_split_kv gives 0.0 (finite) "
                                                    "and an lse of -inf",
    ("triton_single_pass", "NaN and Inf"): _NAN_HEAD + "; triton_single_pass gives 0.0 "
                                                       "(finite) and an lse of -inf",
    ("flashinfer_decode", "NaN and Inf"): _NAN_HEAD + "; FlashInfer's decode gives a "
                                                      "number for one head's lse (H100)",
    # issue 25's prefill and MLA solutions: the same NaN head, answered with finite rows
    **{(variant, "NaN and Inf"): _NAN_HEAD + f"; {variant} does not propagate it to every row"
       for variant in ("torch_prefill", "triton_prefill", "flashinfer_prefill", "torch_mla",
                       "triton_mla", "flashinfer_mla")},
}


# On the CPU, solutions whose smallest definition has more input elements than this are left
# to the GPU test (the MoE experts: hundreds of millions of weights, and the Triton ones in
# the interpreter); tests/definitions/test_moe.py runs those kernels on small shapes.
CPU_MAX_ELEMENTS = 1 << 26


def _size(definition: Definition) -> int:
    consts = definition.const_axes
    return sum(int(torch.tensor([consts.get(a, 2) for a in s.shape]).prod())
               for s in definition.inputs.values() if s.shape)


def _smallest_per_entry(cpu: bool) -> list[str]:
    """One solution per (solution file, entry function): the one on the smallest
    definition."""
    chosen: dict[tuple[str, str], Solution] = {}
    for s in CATALOGUE.solutions:
        runs = s.spec.language == "triton" or bool({"any", "cpu"} & set(s.spec.target_hardware)) \
            if cpu else bool({"any", "nvidia"} & set(s.spec.target_hardware))
        if not runs:
            continue
        entry = (DEFINITIONS[s.definition].op_type, s.spec.entry_point)
        best = chosen.get(entry)
        if best is None or _size(DEFINITIONS[s.definition]) < _size(DEFINITIONS[best.definition]):
            chosen[entry] = s
    return sorted(s.name for s in chosen.values()
                  if not cpu or _size(DEFINITIONS[s.definition]) <= CPU_MAX_ELEMENTS)


CPU_SOLUTIONS = _smallest_per_entry(cpu=True)
GPU_SOLUTIONS = _smallest_per_entry(cpu=False)
SOLUTIONS = {s.name: s for s in CATALOGUE.solutions}


def _variant(name: str) -> str:
    return name.split("__", 1)[1]


def _problems(definition: Definition, call: Call, site: Any, run: Any) -> list[str]:
    """What is wrong with one call through dispatch, compared with the original's. Where the
    original raises (a float32 weight in a float16 matmul), the call may raise or be served:
    only its inputs are checked."""
    try:
        expected = run(*copied(call.args))
    except Exception:
        expected = None
    before = copied(call.args)
    counters = dict(fib.stats()[definition.name])
    try:
        if call.keywords:
            names = [*definition.inputs, *definition.outputs]
            got = site(**dict(zip(names, call.args, strict=False)))
        else:
            got = site(*call.args)
    except Exception as exc:  # a call must never fail where the original does not
        return [] if expected is None else [f"raised {type(exc).__name__}: {exc}"]
    after = fib.stats()[definition.name]
    served = after["hits"] - counters["hits"] == 1
    problems = []
    if after["calls"] - counters["calls"] != 1 or (
            not served and sum(after["fallbacks"].values()) - sum(
                counters["fallbacks"].values()) != 1):
        problems.append("not counted once as a hit or a fallback")
    if call.served is not None and served != call.served:
        reasons = {k: v - counters["fallbacks"].get(k, 0) for k, v in after["fallbacks"].items()}
        problems.append(f"{'served' if served else 'answered by the original'}, expected "
                        f"otherwise (fallbacks {reasons}, errors {after['errors']})")
    if expected is None:
        pass
    elif served or check_kind(definition) != TOLERANCE:  # random outputs: judged by kind
        check = check_result(definition, as_tuple(got), as_tuple(expected), call.args)
        if check.status.value != "PASSED":
            problems.append(f"served a wrong answer: {check.status.value}: {check.log}")
    elif not same(got, expected):
        problems.append("answered, not as the original answers")
    for i, (now, then) in enumerate(zip(call.args, before, strict=True)):
        if isinstance(now, torch.Tensor) and i not in call.written and not same(now, then):
            problems.append(f"argument {i} was written")
    return problems


def _check_solution(name: str, root: Path) -> None:
    solution = SOLUTIONS[name]
    definition = DEFINITIONS[solution.definition]
    torch.manual_seed(0)  # the same inputs every run: a known bug shows the same way
    forced_db(root, [name], batches=(0, 1, 2, 3), definitions=TINY)
    run = original(definition)
    site = fib.apply(definition.name)(lambda *args: run(*args))
    any_layout = "\nFIB_ANY_LAYOUT = True\n" in solution.sources[0].content
    failures, known = [], []
    with fib.enable_apply(root, {"check_interval_s": 0}):
        for call in calls(definition):
            if call.layout and any_layout:  # every layout is the solution's own to serve
                call.served = True
            problems = _problems(definition, call, site, run)
            bug = KNOWN_BUGS.get((_variant(name), call.name))
            if bug is not None:  # shows on some inputs only (NaN placement): not strict
                if problems:
                    known.append(f"{call.name}: {'; '.join(problems)}")
            elif problems:
                failures.append(f"{call.name}: {'; '.join(problems)}")
    assert not failures, f"{name}:\n  " + "\n  ".join(failures)
    if known:
        pytest.xfail(f"{name} (known solution bugs): " + "; ".join(known))


@pytest.mark.usefixtures("interpreted_triton")
@pytest.mark.parametrize("name", CPU_SOLUTIONS)
def test_every_call_is_the_originals_answer_or_answered_by_it(name: str, tmp_path: Path) -> None:
    _check_solution(name, tmp_path)


@pytest.mark.gpu
@pytest.mark.parametrize("name", GPU_SOLUTIONS)
def test_every_call_on_the_gpu_is_the_originals_answer_or_answered_by_it(
        name: str, tmp_path: Path) -> None:
    DEVICE[0] = "cuda"
    try:
        _check_solution(name, tmp_path)
    finally:
        DEVICE[0] = "cpu"
