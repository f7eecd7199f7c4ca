"""The official DeepSeek-V3 FP8 block-scale MoE definition: our reference and the torch
solution agree at the official workloads' token counts (CPU: the smallest ones), and on a GPU
our reference agrees with the official data set's own reference at every workload size up to
a few hundred tokens."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from catalogue_cases import DEFINITIONS, ROOT, import_file

from fib_runtime.build import build_reference
from fib_runtime.measure.compare import check_outputs

NAME = "moe_fp8_block_scale_ds_routing_topk8_ng8_kg4_e32_h7168_i2048"
DEFINITION = DEFINITIONS[NAME]
SOLUTION = import_file(ROOT / "moe" / "solutions" / "torch_fp8_moe.py")
OFFICIAL = ROOT.parents[1] / "shared" / "flashinfer-trace"
WORKLOADS = OFFICIAL / "workloads" / "moe" / f"{NAME}.jsonl"
CUDA = torch.cuda.is_available()


def _official_token_counts() -> list[int]:
    if not WORKLOADS.is_file():
        return []
    return sorted({json.loads(line)["workload"]["axes"]["seq_len"]
                   for line in WORKLOADS.read_text().splitlines() if line.strip()})


_WEIGHTS: dict[str, list] = {}  # GPU device -> the expert weights and scales, made once


def _inputs(tokens: int, device: str, offset: int = 96, distinct: int = 4) -> list:
    """Random inputs of the official shapes; the FP8 weights repeat `distinct` random experts
    (made one at a time: no float32 copy of all of them); on a GPU the same for every call."""
    gen = torch.Generator().manual_seed(tokens)
    consts = DEFINITION.const_axes
    experts, local = consts["num_experts"], consts["num_local_experts"]
    hidden, inter = consts["hidden_size"], consts["intermediate_size"]
    fp8 = torch.float8_e4m3fn

    def weights(rows: int, cols: int) -> torch.Tensor:
        some = [torch.randn(rows, cols, generator=gen).to(fp8) for _ in range(distinct)]
        return torch.stack([some[e % distinct] for e in range(local)])

    def scales(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen) * 0.02 + 0.005

    args = [torch.randn(tokens, experts, generator=gen),
            (torch.randn(experts, generator=gen) * 0.1).to(torch.bfloat16),
            torch.randn(tokens, hidden, generator=gen).to(fp8),
            scales(hidden // 128, tokens)]
    experts_of = _WEIGHTS.get(device) or [t.to(device) for t in (
        weights(2 * inter, hidden), scales(local, 2 * inter // 128, hidden // 128),
        weights(hidden, inter), scales(local, hidden // 128, inter // 128))]
    if device != "cpu":  # 1.4 GB: kept on a GPU only, not in the CPU suite's memory
        _WEIGHTS[device] = experts_of
    return [a.to(device) for a in args] + experts_of + [offset, 2.5]


def _agree(got, expected) -> None:
    check = check_outputs(DEFINITION, got, (expected,))
    assert check.status.value == "PASSED", check.log


@pytest.mark.skipif(not WORKLOADS.is_file(), reason="../shared/flashinfer-trace is absent")
def test_reference_and_torch_solution_agree_at_the_smallest_official_token_counts():
    reference = build_reference(DEFINITION)
    for tokens in _official_token_counts()[:2]:  # 1 and 7 tokens
        args = _inputs(tokens, "cpu")
        expected = reference(*args)
        assert expected.shape == (tokens, 7168) and expected.dtype == torch.bfloat16
        assert expected.float().abs().sum() > 0  # some tokens routed to this rank's experts
        _agree(SOLUTION.moe_fp8_ds(*args), expected)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.skipif(not WORKLOADS.is_file(), reason="../shared/flashinfer-trace is absent")
def test_reference_matches_the_official_reference_on_gpu():
    official = json.loads((OFFICIAL / "definitions" / "moe" / f"{NAME}.json").read_text())
    namespace: dict = {}
    exec(compile(official["reference"], NAME, "exec"), namespace)
    reference = build_reference(DEFINITION)
    for tokens in [t for t in _official_token_counts() if t <= 1000]:
        args = _inputs(tokens, "cuda", offset=0)
        expected = namespace["run"](*args)
        _agree(reference(*args), expected)
        _agree(SOLUTION.moe_fp8_ds(*args), expected)
