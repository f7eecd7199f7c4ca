"""The Triton FP8 block-scale MoE against the official DeepSeek-V3 definition's reference.

CPU (Triton's interpreter): every launch configuration on small shapes (hidden 256,
intermediate 128, 32 local experts of 256: the definition's reference with those constants),
one configuration at the official shapes, the routing and the pair alignment; each checked
with retune's tolerances, and the comparison shown to catch a wrong [up; gate] order, scale
or expert offset. GPU (marked): every configuration at the official workloads' token counts.
"""

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
TRITON = import_file(ROOT / "moe" / "solutions" / "triton_fp8_moe.py")
WORKLOADS = ROOT.parents[1] / "shared" / "flashinfer-trace" / "workloads" / "moe" / \
    f"{NAME}.jsonl"
CUDA = torch.cuda.is_available()
# (seq_len, local_expert_offset) of the 19 official workloads
OFFICIAL = ((1, 32), (7, 192), (14, 0), (15, 32), (16, 224), (32, 32), (52, 160), (53, 32),
            (54, 128), (55, 128), (56, 64), (57, 96), (58, 64), (59, 160), (62, 96), (80, 96),
            (901, 96), (11948, 128), (14107, 32))
SMALL = {"HIDDEN": 256, "INTER": 128, "LOCAL": 32}
FP8 = torch.float8_e4m3fn


def _reference(**constants: int):
    """The definition's own reference code, with its size constants replaced."""
    namespace: dict = {}
    exec(compile(DEFINITION.reference, NAME, "exec"), namespace)
    namespace.update(constants)
    return namespace


SMALL_REFERENCE = _reference(**SMALL)


def _inputs(tokens: int, offset: int, hidden: int = 256, inter: int = 128, local: int = 32,
            device: str = "cpu", seed: int = 0, experts: list | None = None) -> list:
    """Inputs as retune makes them (N(0, 1) values and scales) at these sizes; a third of
    the tokens lean to the experts at `offset`, so some tokens use several local experts and
    some none. `experts`: the weights and scales of an earlier call, reused."""
    gen = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, device=device)

    def fp8(*shape: int) -> torch.Tensor:  # one expert at a time: no float32 copy of all
        return torch.stack([randn(*shape[1:]).to(FP8) for _ in range(shape[0])])

    logits = randn(tokens, 256)
    logits[: tokens // 3, offset: offset + 8] += 3.0
    experts = experts or [fp8(local, 2 * inter, hidden),
                          randn(local, 2 * inter // 128, hidden // 128),
                          fp8(local, hidden, inter), randn(local, hidden // 128, inter // 128)]
    return [logits, (randn(256) * 0.1).to(torch.bfloat16), randn(tokens, hidden).to(FP8),
            randn(hidden // 128, tokens), *experts, offset, 2.5]


def _check(got, expected):
    return check_outputs(DEFINITION, got, (expected,))


def _assert_matches(got, expected, what=""):
    check = _check(got, expected)
    assert check.status.value == "PASSED", (what, check.log)


@pytest.mark.parametrize("config", sorted(TRITON.CONFIGS))
def test_every_config_matches_the_reference_in_the_interpreter(config: str):
    # an offset inside a group and one across two groups; 1 token with no local expert
    for tokens, offset in ((13, 80), (7, 96), (1, 0)):
        args = _inputs(tokens, offset)
        expected = SMALL_REFERENCE["run"](*args)
        _assert_matches(TRITON.fused_moe_fp8(*args, TRITON.CONFIGS[config]), expected, tokens)


def test_every_entry_serves_its_config_and_an_empty_batch():
    args = _inputs(5, 96, seed=1)
    expected = SMALL_REFERENCE["run"](*args)
    assert expected.float().abs().sum() > 0
    for entry in TRITON.FIB_SOLUTIONS:
        _assert_matches(getattr(TRITON, entry["entry_point"])(*args), expected, entry)
    assert sorted((e["variant"], e["entry_point"]) for e in TRITON.FIB_SOLUTIONS) == \
        sorted((f"triton_{c}", f"moe_fp8_{c}") for c in TRITON.CONFIGS)
    empty = TRITON.moe_fp8_default(*_inputs(0, 96))
    assert empty.shape == (0, 256) and empty.dtype == torch.bfloat16


def test_the_comparison_catches_wrong_gate_order_scales_offset_and_factor():
    """Each way of misreading the contract fails the check these tests use."""
    args = _inputs(40, 80)
    expected = SMALL_REFERENCE["run"](*args)
    run = TRITON.moe_fp8_m16_n64
    _assert_matches(run(*args), expected)
    up, gate = args[4].chunk(2, dim=1)
    up_scale, gate_scale = args[5].chunk(2, dim=1)
    wrong = {"[gate; up]": {4: torch.cat([gate, up], 1), 5: torch.cat([gate_scale, up_scale], 1)},
             "activation scales of one block": {3: args[3] * torch.tensor([[1.0], [1.1]])},
             "scales not transposed": {3: args[3].t().contiguous().view(2, -1)},
             "local expert offset + 1": {8: 81},
             "routed scaling factor": {9: 2.4}}
    for what, changes in wrong.items():
        changed = [changes.get(i, a) for i, a in enumerate(args)]
        assert _check(run(*changed), expected).status.value != "PASSED", what


def test_routing_is_the_references_ties_included():
    namespace = _reference()
    logits = torch.randn(64, 256)
    logits[::2, 40:60] = 1.5  # tied scores inside and across groups
    logits[::4] = 0.25  # rows of one value: every group ties
    bias = (torch.randn(256) * 0.1).to(torch.bfloat16)
    experts, weights = TRITON.route(logits, bias, 2.5)
    want_experts, want_weights = namespace["_route"](logits, bias, 2.5)
    assert torch.equal(experts, want_experts)
    assert torch.equal(weights, want_weights)


def test_align_keeps_only_local_pairs_each_expert_padded_to_blocks():
    local_ids = torch.tensor([[2, 3], [2, 1], [3, 3], [2, 0]])  # 3 = not local (3 experts)
    sorted_ids, expert_ids, blocks = TRITON._align(local_ids, 3, 2)
    runs = sorted_ids.view(blocks, 2).tolist()
    flat = local_ids.reshape(-1).tolist()
    real = [[i for i in run if i < 8] for run in runs]
    assert expert_ids.tolist()[:4] == [0, 1, 2, 2] and set(expert_ids.tolist()[4:]) <= {-1}
    assert real[:4] == [[7], [3], [0, 2], [6]] and not any(real[4:])
    assert all(flat[i] == e for run, e in zip(real, expert_ids.tolist(), strict=True) for i in run)


def test_official_shapes_in_the_interpreter():
    """One configuration at the definition's sizes (7168 hidden, 2048 intermediate, 56 and
    16 scale blocks): one token with two local experts, and the gate half 2048 rows on."""
    gen = torch.Generator().manual_seed(0)
    consts = DEFINITION.const_axes
    hidden, inter, local = (consts["hidden_size"], consts["intermediate_size"],
                            consts["num_local_experts"])

    def weights(rows: int, cols: int) -> torch.Tensor:  # two distinct experts, repeated
        some = [torch.randn(rows, cols, generator=gen).to(FP8) for _ in range(2)]
        return torch.stack([some[e % 2] for e in range(local)])

    logits = torch.randn(1, 256, generator=gen)
    logits[:, 96:98] += 3.0
    args = [logits, (torch.randn(256, generator=gen) * 0.1).to(torch.bfloat16),
            torch.randn(1, hidden, generator=gen).to(FP8), torch.randn(hidden // 128, 1,
                                                                      generator=gen),
            weights(2 * inter, hidden), torch.randn(local, 2 * inter // 128, hidden // 128,
                                                    generator=gen),
            weights(hidden, inter), torch.randn(local, hidden // 128, inter // 128,
                                                generator=gen), 96, 2.5]
    experts, _ = TRITON.route(logits, args[1], 2.5)
    assert int(((experts >= 96) & (experts < 96 + local)).sum()) >= 2
    _assert_matches(TRITON.moe_fp8_m16_n128(*args), build_reference(DEFINITION)(*args))


@pytest.mark.skipif(not WORKLOADS.is_file(), reason="../shared/flashinfer-trace is absent")
def test_gpu_token_counts_are_the_official_workloads():
    found = []
    for line in WORKLOADS.read_text().splitlines():
        workload = json.loads(line)["workload"]
        found.append((workload["axes"]["seq_len"],
                      workload["inputs"]["local_expert_offset"]["value"]))
    assert sorted(found) == sorted(OFFICIAL)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_every_config_matches_the_reference_on_gpu():
    consts = DEFINITION.const_axes
    reference = build_reference(DEFINITION)
    experts = None  # made once: 1.4 GB
    for tokens, offset in OFFICIAL:
        args = _inputs(tokens, offset, consts["hidden_size"], consts["intermediate_size"],
                       consts["num_local_experts"], device="cuda", seed=tokens, experts=experts)
        experts = args[4:8]
        expected = reference(*args)
        for entry in TRITON.FIB_SOLUTIONS:
            got = getattr(TRITON, entry["entry_point"])(*args)
            check = _check(got, expected)
            assert check.status.value == "PASSED", (entry["variant"], tokens, check.log)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_no_host_sync_on_gpu():
    """Routing, alignment and the launches queue without waiting for the GPU (CUDA graphs,
    overlap with the host): torch raises on a synchronising call in this mode."""
    args = _inputs(33, 96, device="cuda")
    TRITON.moe_fp8_default(*args)  # compiled first
    torch.cuda.set_sync_debug_mode("error")
    try:
        TRITON.moe_fp8_default(*args)
    finally:
        torch.cuda.set_sync_debug_mode("default")
