"""The bfloat16 MoE family: the Triton fused MoE in every launch configuration, and the torch
solution, against the definition's reference on small shapes (the interpreter on the CPU),
with retune's tolerances; the pair alignment; a GPU run on the catalogue's shapes."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from catalogue_cases import DEFINITIONS, ROOT, import_file

from fib_runtime.build import build_reference
from fib_runtime.measure.compare import check_outputs

TRITON = import_file(ROOT / "moe" / "solutions" / "triton_fused_moe.py")
TORCH = import_file(ROOT / "moe" / "solutions" / "torch_moe.py")
DEFINITION = DEFINITIONS["moe_bf16_topk8_e64_h2048_i1024"]  # its reference takes any sizes
REFERENCE = build_reference(DEFINITION)
CUDA = torch.cuda.is_available()


def _inputs(tokens: int, experts: int, top_k: int, hidden: int, inter: int,
            device: str = "cpu", skewed: bool = False, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, hidden, generator=gen).to(torch.bfloat16)
    scores = torch.rand(tokens, experts, generator=gen)
    if skewed:  # most tokens on the first experts
        scores[:, : max(1, experts // 4)] += 1.0
    ids = scores.topk(top_k, dim=-1).indices.to(torch.int32)
    weights = torch.rand(tokens, top_k, generator=gen) + 0.1
    weights = weights / weights.sum(-1, keepdim=True)
    on_device = torch.Generator(device=device).manual_seed(seed)  # weights made in place
    w13 = torch.randn(experts, 2 * inter, hidden, generator=on_device, device=device,
                      dtype=torch.bfloat16).div_(hidden ** 0.5)
    w2 = torch.randn(experts, hidden, inter, generator=on_device, device=device,
                     dtype=torch.bfloat16).div_(inter ** 0.5)
    return [t.to(device) for t in (x, weights, ids)] + [w13, w2]


def _assert_matches(got, args):
    check = check_outputs(DEFINITION, got, (REFERENCE(*args),))
    assert check.status.value == "PASSED", check.log


@pytest.mark.parametrize("config", sorted(TRITON.CONFIGS))
def test_triton_config_matches_reference_in_the_interpreter(config: str):
    # odd sizes: partial M, N and K tiles, an expert with no tokens, repeated tokens per expert
    args = _inputs(tokens=5, experts=6, top_k=2, hidden=40, inter=24)
    _assert_matches(TRITON.fused_moe(*args, TRITON.CONFIGS[config]), args)


def test_every_entry_serves_its_config_and_an_empty_batch():
    args = _inputs(tokens=3, experts=4, top_k=2, hidden=32, inter=16, skewed=True)
    for entry in TRITON.FIB_SOLUTIONS:
        _assert_matches(getattr(TRITON, entry["entry_point"])(*args), args)
    empty = _inputs(tokens=0, experts=4, top_k=2, hidden=32, inter=16)
    assert TRITON.moe_default(*empty).shape == (0, 32)


def test_torch_solution_matches_reference():
    for skewed in (False, True):
        args = _inputs(tokens=9, experts=8, top_k=2, hidden=64, inter=48, skewed=skewed)
        _assert_matches(TORCH.moe_experts(*args), args)


def test_align_pads_each_expert_to_whole_blocks():
    ids = torch.tensor([[2, 0], [2, 1], [2, 0]], dtype=torch.int32)  # counts 2, 1, 3
    sorted_ids, expert_ids, blocks = TRITON._align(ids, 4, 2)
    runs = sorted_ids.view(blocks, 2)
    assert expert_ids.tolist()[:4] == [0, 1, 2, 2]
    assert set(expert_ids.tolist()[4:]) <= {-1}
    flat = ids.reshape(-1)
    for block, expert in enumerate(expert_ids.tolist()[:4]):
        real = [i for i in runs[block].tolist() if i < 6]
        assert real and all(int(flat[i]) == expert for i in real)
    assert sorted(i for i in sorted_ids.tolist() if i < 6) == list(range(6))


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", sorted(n for n in DEFINITIONS if n.startswith("moe_bf16_")))
def test_every_config_matches_reference_on_gpu(name: str):
    consts = DEFINITIONS[name].const_axes
    for tokens, skewed in ((1, False), (33, False), (512, True)):
        args = _inputs(tokens, consts["num_experts"], consts["top_k"], consts["hidden_size"],
                       consts["intermediate_size"], device="cuda", skewed=skewed)
        expected = (build_reference(DEFINITIONS[name])(*args),)
        for entry in TRITON.FIB_SOLUTIONS:
            got = getattr(TRITON, entry["entry_point"])(*args)
            check = check_outputs(DEFINITIONS[name], got, expected)
            assert check.status.value == "PASSED", (entry["variant"], tokens, check.log)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_alignment_and_launches_do_not_sync_on_gpu():
    """The pair alignment and the launches queue without waiting for the GPU (CUDA graphs,
    overlap with the host): torch raises on a synchronising call in this mode."""
    args = _inputs(33, 8, 2, 256, 128, device="cuda")
    entry = TRITON.FIB_SOLUTIONS[0]["entry_point"]
    getattr(TRITON, entry)(*args)  # compiled first
    torch.cuda.set_sync_debug_mode("error")
    try:
        getattr(TRITON, entry)(*args)
    finally:
        torch.cuda.set_sync_debug_mode("default")
