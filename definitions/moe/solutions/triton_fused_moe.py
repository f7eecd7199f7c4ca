"""The bfloat16 MoE experts in Triton: one grouped GEMM kernel, launched twice, per config.

The (token, slot) pairs are sorted by expert and each expert's run padded to BLOCK_M
(`_align`, torch ops, no host sync); one program computes a BLOCK_M x BLOCK_N tile of one
expert. Launch 1 reads the tokens' hidden states and both halves of w13 (gate and up
tiles, two accumulators) and stores silu(gate) * up in bfloat16; launch 2 multiplies that
by w2 and the routing weight and stores one row per pair; a float32 sum over the slots
gives the output. Each launch configuration (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, warps,
stages) is a solution of its own, so retune picks one per GPU and token count, as vLLM's
per-device fused_moe tables do; `default` is the fixed configuration vLLM falls back to
without a table.
"""

import os

import torch
import triton
import triton.language as tl

FIB_SOLUTIONS = [
    {"variant": "triton_default", "entry_point": "moe_default",
     "definitions": ["moe_bf16_topk*"],
     "language": "triton", "destination_passing_style": False, "target_hardware": ["nvidia"],
     "dependencies": ["triton", "torch"],
     "description": "BLOCK 64x64x32, GROUP_M 8, 4 warps, 3 stages: the untuned default."},
    {"variant": "triton_m16_n64_k128", "entry_point": "moe_m16_n64_k128",
     "definitions": ["moe_bf16_topk*"],
     "language": "triton", "destination_passing_style": False, "target_hardware": ["nvidia"],
     "dependencies": ["triton", "torch"],
     "description": "BLOCK 16x64x128, GROUP_M 1, 4 warps, 4 stages: decode."},
    {"variant": "triton_m16_n128_k128", "entry_point": "moe_m16_n128_k128",
     "definitions": ["moe_bf16_topk*"],
     "language": "triton", "destination_passing_style": False, "target_hardware": ["nvidia"],
     "dependencies": ["triton", "torch"],
     "description": "BLOCK 16x128x128, GROUP_M 1, 4 warps, 3 stages: decode, wider N tiles."},
    {"variant": "triton_m32_n64_k128", "entry_point": "moe_m32_n64_k128",
     "definitions": ["moe_bf16_topk*"],
     "language": "triton", "destination_passing_style": False, "target_hardware": ["nvidia"],
     "dependencies": ["triton", "torch"],
     "description": "BLOCK 32x64x128, GROUP_M 8, 4 warps, 4 stages: small batches."},
    {"variant": "triton_m64_n128_k64", "entry_point": "moe_m64_n128_k64",
     "definitions": ["moe_bf16_topk*"],
     "language": "triton", "destination_passing_style": False, "target_hardware": ["nvidia"],
     "dependencies": ["triton", "torch"],
     "description": "BLOCK 64x128x64, GROUP_M 8, 4 warps, 4 stages: medium batches."},
    {"variant": "triton_m128_n64_k64", "entry_point": "moe_m128_n64_k64",
     "definitions": ["moe_bf16_topk*"],
     "language": "triton", "destination_passing_style": False, "target_hardware": ["nvidia"],
     "dependencies": ["triton", "torch"],
     "description": "BLOCK 128x64x64, GROUP_M 8, 4 warps, 4 stages: prefill."},
    {"variant": "triton_m128_n128_k64", "entry_point": "moe_m128_n128_k64",
     "definitions": ["moe_bf16_topk*"],
     "language": "triton", "destination_passing_style": False, "target_hardware": ["nvidia"],
     "dependencies": ["triton", "torch"],
     "description": "BLOCK 128x128x64, GROUP_M 16, 8 warps, 3 stages: large prefill."},
]
# Triton's interpreter multiplies bfloat16 tiles as their raw bits: upcast there only (on a
# GPU the tiles stay bfloat16 for the tensor cores).
_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
# name -> (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages)
CONFIGS = {
    "default": (64, 64, 32, 8, 4, 3),
    "m16_n64_k128": (16, 64, 128, 1, 4, 4),
    "m16_n128_k128": (16, 128, 128, 1, 4, 3),
    "m32_n64_k128": (32, 64, 128, 8, 4, 4),
    "m64_n128_k64": (64, 128, 64, 8, 4, 4),
    "m128_n64_k64": (128, 64, 64, 8, 4, 4),
    "m128_n128_k64": (128, 128, 64, 16, 8, 3),
}


@triton.jit
def _moe_gemm(a_ptr, b_ptr, c_ptr, w_ptr, sorted_ids_ptr, expert_ids_ptr, pairs, N, K,
              stride_am, stride_be, stride_bn, stride_cm, up_offset, num_blocks_m,
              A_ROW_DIV: tl.constexpr, SILU: tl.constexpr, WEIGHTED: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
              GROUP_M: tl.constexpr, UPCAST: tl.constexpr):
    pid = tl.program_id(0)
    blocks_n = tl.cdiv(N, BLOCK_N)
    in_group = GROUP_M * blocks_n
    first_m = (pid // in_group) * GROUP_M
    group_m = min(num_blocks_m - first_m, GROUP_M)
    pid_m = first_m + (pid % in_group) % group_m
    pid_n = (pid % in_group) // group_m
    expert = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
    if expert < 0:  # a block past the last expert's padded run
        return
    ids = tl.load(sorted_ids_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
    valid = ids < pairs
    a_rows = (ids // A_ROW_DIV).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + a_rows[:, None] * stride_am + offs_k[None, :]
    b_ptrs = b_ptr + expert * stride_be + offs_n[None, :].to(tl.int64) * stride_bn + \
        offs_k[:, None]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    n_ok = offs_n < N
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_ok = offs_k < K - k * BLOCK_K
        a = tl.load(a_ptrs, mask=valid[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc)
        if SILU:
            up = tl.load(b_ptrs + up_offset * stride_bn, mask=k_ok[:, None] & n_ok[None, :],
                         other=0.0)
            if UPCAST:
                up = up.to(tl.float32)
            acc_up = tl.dot(a, up, acc_up)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K
    if SILU:
        acc = acc * tl.sigmoid(acc) * acc_up
    if WEIGHTED:
        acc = acc * tl.load(w_ptr + ids, mask=valid, other=0.0)[:, None]
    c_ptrs = c_ptr + ids[:, None].to(tl.int64) * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=valid[:, None] & n_ok[None, :])


def _align(topk_ids, num_experts: int, block_m: int):
    """Pair ids sorted by expert, each expert's run padded to block_m with the id `pairs`,
    and the expert of each block (-1 past the end). Sized for the worst case: no sync."""
    flat = topk_ids.reshape(-1).to(torch.int64)
    pairs = flat.numel()
    # counted by scatter_add_: torch.bincount reads the ids' maximum back to the host (a sync)
    counts = torch.zeros(num_experts, dtype=torch.int64, device=flat.device).scatter_add_(
        0, flat, torch.ones_like(flat))
    padded = (counts + block_m - 1) // block_m * block_m
    ends = torch.cumsum(padded, 0)
    order = torch.argsort(flat, stable=True)
    experts = flat[order]
    first_of = torch.cumsum(counts, 0) - counts
    dest = (ends - padded)[experts] + torch.arange(pairs, device=flat.device) - first_of[experts]
    blocks = triton.cdiv(pairs + min(pairs, num_experts) * (block_m - 1), block_m)
    sorted_ids = torch.full((blocks * block_m,), pairs, dtype=torch.int32, device=flat.device)
    sorted_ids[dest] = order.to(torch.int32)
    starts = torch.arange(blocks, device=flat.device) * block_m
    expert_ids = torch.searchsorted(ends, starts, right=True)
    expert_ids = torch.where(expert_ids < num_experts, expert_ids, -1).to(torch.int32)
    return sorted_ids, expert_ids, blocks


def _gemm(a, b, c, weights, sorted_ids, expert_ids, blocks, pairs, n, k, up_offset, row_div,
          silu, config):
    block_m, block_n, block_k, group_m, warps, stages = config
    grid = (blocks * triton.cdiv(n, block_n),)
    _moe_gemm[grid](a, b, c, weights, sorted_ids, expert_ids, pairs, n, k, a.stride(0),
                    b.stride(0), b.stride(1), c.stride(0), up_offset, blocks,
                    A_ROW_DIV=row_div, SILU=silu, WEIGHTED=not silu, BLOCK_M=block_m,
                    BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=group_m, num_warps=warps,
                    num_stages=stages, UPCAST=_INTERPRETED)


@torch.no_grad()
def fused_moe(hidden_states, topk_weights, topk_ids, w13, w2, config):
    """The experts' output with one launch configuration (a CONFIGS value)."""
    tokens, top_k = topk_ids.shape
    hidden, inter = w2.shape[1], w2.shape[2]
    pairs = tokens * top_k
    if pairs == 0:
        return hidden_states.new_empty(tokens, hidden)
    x = hidden_states.contiguous()
    w13, w2 = w13.contiguous(), w2.contiguous()
    weights = topk_weights.to(torch.float32).reshape(-1).contiguous()
    sorted_ids, expert_ids, blocks = _align(topk_ids, w13.shape[0], config[0])
    act = torch.empty(pairs, inter, dtype=x.dtype, device=x.device)
    _gemm(x, w13, act, weights, sorted_ids, expert_ids, blocks, pairs, inter, hidden, inter,
          top_k, True, config)
    per_pair = torch.empty(pairs, hidden, dtype=x.dtype, device=x.device)
    _gemm(act, w2, per_pair, weights, sorted_ids, expert_ids, blocks, pairs, hidden, inter, 0,
          1, False, config)
    return per_pair.view(tokens, top_k, hidden).sum(1, dtype=torch.float32).to(x.dtype)


def moe_default(hidden_states, topk_weights, topk_ids, w13, w2):
    return fused_moe(hidden_states, topk_weights, topk_ids, w13, w2, CONFIGS["default"])


def moe_m16_n64_k128(hidden_states, topk_weights, topk_ids, w13, w2):
    return fused_moe(hidden_states, topk_weights, topk_ids, w13, w2, CONFIGS["m16_n64_k128"])


def moe_m16_n128_k128(hidden_states, topk_weights, topk_ids, w13, w2):
    return fused_moe(hidden_states, topk_weights, topk_ids, w13, w2, CONFIGS["m16_n128_k128"])


def moe_m32_n64_k128(hidden_states, topk_weights, topk_ids, w13, w2):
    return fused_moe(hidden_states, topk_weights, topk_ids, w13, w2, CONFIGS["m32_n64_k128"])


def moe_m64_n128_k64(hidden_states, topk_weights, topk_ids, w13, w2):
    return fused_moe(hidden_states, topk_weights, topk_ids, w13, w2, CONFIGS["m64_n128_k64"])


def moe_m128_n64_k64(hidden_states, topk_weights, topk_ids, w13, w2):
    return fused_moe(hidden_states, topk_weights, topk_ids, w13, w2, CONFIGS["m128_n64_k64"])


def moe_m128_n128_k64(hidden_states, topk_weights, topk_ids, w13, w2):
    return fused_moe(hidden_states, topk_weights, topk_ids, w13, w2, CONFIGS["m128_n128_k64"])
