"""MLA paged decode and causal prefill (page size 1) on the CPU: the references against the
official ones and on the official workloads' shapes, the torch solution and the Triton kernel
(in the interpreter, split-KV decode included) against the reference with retune's
tolerances."""

import json
import math
import sys
import uuid
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from attention_helpers import REPO, official_definition, reference, signature
from catalogue_cases import DEFINITIONS, entry, import_file, solution_file

from fib_runtime.measure.compare import check_outputs
from fib_runtime.measure.inputs import materialise
from fib_runtime.schema import Workload

TRACE = REPO.parent / "shared" / "flashinfer-trace"
DECODE = "mla_paged_decode_h16_ckv512_kpe64_ps1"
PREFILL = "mla_paged_prefill_causal_h16_ckv512_kpe64_ps1"
NAMES = [DECODE, PREFILL]
SCALE = 1 / math.sqrt(192)
# (queries, tokens) per sequence: append over a prefix, empty, fresh prompt, blind queries
SEQUENCES = [(5, 9), (0, 0), (37, 37), (1, 1), (6, 2), (3, 40)]
DECODE_LENGTHS = [9, 0, 70, 1, 33]


def ours(name: str) -> dict:
    return json.loads((REPO / "definitions" / "mla_paged" / f"{name}.json").read_text())


def mla_inputs(name: str, sequences: list[tuple[int, int]], seed: int = 0) -> list:
    """Inputs in definition order; decode takes sequences of one query (their token counts)."""
    gen = torch.Generator().manual_seed(seed)
    q_lens = [q for q, _ in sequences]
    kv_lens = [k for _, k in sequences]
    num_pages = sum(kv_lens) + 5
    indices = torch.randperm(num_pages, generator=gen)[:sum(kv_lens)].to(torch.int32)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen).bfloat16()

    def offsets(lengths: list[int]) -> torch.Tensor:
        return torch.tensor([0, *lengths]).cumsum(0).to(torch.int32)

    rows = sum(q_lens)
    head = [randn(rows, 16, 512), randn(rows, 16, 64), randn(num_pages, 1, 512),
            randn(num_pages, 1, 64)]
    if name == DECODE:
        return [*head, offsets(kv_lens), indices, SCALE]
    return [*head, offsets(q_lens), offsets(kv_lens), indices, SCALE]


def _check(name: str, got: tuple, want: tuple, label: str) -> None:
    result = check_outputs(DEFINITIONS[name], got, want)
    assert result.status.value == "PASSED", f"{label}: {result.log}"
    assert torch.equal(torch.isneginf(got[1]), torch.isneginf(want[1])), label


def _cases(name: str) -> list[tuple[int, int]]:
    return [(1, k) for k in DECODE_LENGTHS] if name == DECODE else SEQUENCES


def _official(name: str) -> dict:
    return official_definition(TRACE / "definitions" / "mla_paged", name)


@pytest.mark.parametrize("name", NAMES)
def test_definition_matches_official(name: str) -> None:
    assert signature(ours(name)) == signature(_official(name))


@pytest.mark.parametrize("name", NAMES)
def test_reference_agrees_with_official_reference(name: str) -> None:
    args = mla_inputs(name, _cases(name), seed=1)
    out, lse = reference(ours(name))(*args)
    theirs = reference(_official(name))(*args)
    blind = torch.isneginf(lse).all(dim=1)
    assert int(blind.sum()) == (1 if name == DECODE else 4)  # an empty sequence / 4 queries
    assert not out[blind].any()
    _check(name, (out[~blind], lse[~blind]), (theirs[0][~blind], theirs[1][~blind]), "official")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("variant", ["torch_mla", "triton_mla"])
def test_solutions_match_reference(name: str, variant: str) -> None:
    args = mla_inputs(name, _cases(name), seed=4)
    _check(name, entry(f"{name}__{variant}")(*args), reference(ours(name))(*args), variant)


@pytest.mark.parametrize(("splits", "block_n"), [(3, 16), (8, 16), (2, 32)])
def test_triton_decode_split_over_tokens(splits: int, block_n: int) -> None:
    """Several programs a sequence, some with nothing to read; the merge pass combines them."""
    module = import_file(solution_file(f"{DECODE}__triton_mla"))
    args = mla_inputs(DECODE, _cases(DECODE), seed=splits)
    got = module.attend(*args[:4], None, *args[4:], num_splits=splits, block_n=block_n)
    _check(DECODE, got, reference(ours(DECODE))(*args), f"splits {splits}")


def test_triton_prefill_blocks_of_two_tokens() -> None:
    module = import_file(solution_file(f"{PREFILL}__triton_mla"))
    args = mla_inputs(PREFILL, [*SEQUENCES, (9, 30)], seed=9)
    got = module.attend(*args, block_t=2, block_n=16)
    _check(PREFILL, got, reference(ours(PREFILL))(*args), "block_t 2")


def test_decode_split_count() -> None:
    choose = import_file(solution_file(f"{DECODE}__triton_mla")).choose_num_splits
    cpu = torch.device("cpu")
    assert choose(1, 2708, cpu) == 32  # one long sequence: spread, capped
    assert choose(1, 8, cpu) == 1  # too short to be worth a merge pass
    assert choose(256, 256 * 1000, cpu) == 2  # the batch nearly fills the GPU already


@pytest.mark.parametrize("name", NAMES)
def test_solutions_on_the_official_workloads_shapes(name: str) -> None:
    """The smallest official workloads (index tensors generated from the axes as retune does,
    the pool capped at 4096 tokens): the reference runs; torch and Triton agree with it."""
    path = TRACE / "workloads" / "mla_paged" / f"{name}.jsonl"
    if not path.exists():
        pytest.skip(f"official workloads not found at {path}")
    workloads = [json.loads(line)["workload"] for line in path.read_text().splitlines()]
    small = sorted(workloads, key=lambda w: w["axes"]["num_kv_indices"])[:3]
    definition = DEFINITIONS[name]
    for workload in small:
        axes = dict(workload["axes"])
        axes["num_pages"] = min(axes["num_pages"], max(4096, axes["num_kv_indices"]))
        inputs = {n: {"type": "random"} for n in definition.inputs if n != "sm_scale"}
        inputs["sm_scale"] = workload["inputs"]["sm_scale"]
        args = materialise(definition, Workload.from_dict(
            {"uuid": str(uuid.uuid4()), "axes": axes, "inputs": inputs}), alternates=0).args
        want = reference(ours(name))(*args)
        assert want[0].shape[1:] == (16, 512)
        for variant in ("torch_mla", "triton_mla"):
            _check(name, entry(f"{name}__{variant}")(*args), want, f"{variant} {axes}")
