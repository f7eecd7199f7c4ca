"""GQA prefill solutions (torch, Triton, FlashInfer) against the reference on the GPU, and the
FlashInfer solution's plan made once per workload."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from attention_helpers import reference
from catalogue_cases import DEFINITIONS, entry, import_file, solution_file
from test_attention_prefill import NAMES, SEQUENCES, ours, prefill_inputs

from fib_runtime.measure.compare import check_outputs

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
VARIANTS = ["torch_prefill", "triton_prefill", "flashinfer_prefill"]
# (queries, keys) per sequence: long prompts over many tiles, appends, blind queries
MIXES = {
    "small": SEQUENCES,
    "prompts": [(1000, 1000), (313, 313), (2048, 2048)],
    "appends": [(128, 4096), (1, 777), (64, 64), (0, 3), (500, 1500)],
    "blind": [(300, 20), (17, 16), (64, 0)],
}


def _on_gpu(args: list) -> list:
    return [a.cuda() if torch.is_tensor(a) else a for a in args]


@pytest.mark.parametrize("mix", sorted(MIXES))
@pytest.mark.parametrize("name", NAMES)
def test_solutions_match_reference_on_gpu(name: str, mix: str) -> None:
    args = _on_gpu(prefill_inputs(name, MIXES[mix], seed=len(mix)))
    want = reference(ours(name))(*args)
    failures = []
    for variant in VARIANTS:
        got = entry(f"{name}__{variant}")(*args)
        result = check_outputs(DEFINITIONS[name], got, want)
        if result.status.value != "PASSED" or \
                not torch.equal(torch.isneginf(got[1]), torch.isneginf(want[1])):
            failures.append(f"{variant}: {result.log}")
    assert not failures, "\n".join(failures)


def test_flashinfer_plans_once_per_workload(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "gqa_paged_prefill_causal_h32_kv8_d128_ps1"
    module = import_file(solution_file(f"{name}__flashinfer_prefill"))
    args = _on_gpu(prefill_inputs(name, MIXES["appends"]))
    wrapper = module._wrapper("paged", args[0].device)
    plans = []
    plan = type(wrapper).plan
    monkeypatch.setattr(type(wrapper), "plan", lambda self, *a, **k: (plans.append(1),
                                                                      plan(self, *a, **k)))
    first = module.run_paged_ps1(*args)
    for _ in range(3):
        again = module.run_paged_ps1(*args)
    assert len(plans) == 1 and torch.equal(first[0], again[0])
    args[5][:2] = args[5][:2].flip(0)  # the engine rewrote its page table: plan again
    module.run_paged_ps1(*args)
    assert len(plans) == 2


MLA_MIXES = {"decode": [(1, k) for k in (1, 0, 700, 4096, 33)],
             "prefill": [(512, 512), (64, 3000), (0, 4), (40, 10), (1, 1)]}


@pytest.mark.parametrize("mix", sorted(MLA_MIXES))
def test_mla_solutions_match_reference_on_gpu(mix: str) -> None:
    from test_attention_mla import DECODE, PREFILL, mla_inputs
    from test_attention_mla import ours as mla_definition

    name = DECODE if mix == "decode" else PREFILL
    args = _on_gpu(mla_inputs(name, MLA_MIXES[mix], seed=3))
    want = reference(mla_definition(name))(*args)
    failures = []
    for variant in ("torch_mla", "triton_mla", "flashinfer_mla"):
        got = entry(f"{name}__{variant}")(*args)
        result = check_outputs(DEFINITIONS[name], got, want)
        if result.status.value != "PASSED" or \
                not torch.equal(torch.isneginf(got[1]), torch.isneginf(want[1])):
            failures.append(f"{variant}: {result.log}")
    assert not failures, "\n".join(failures)
