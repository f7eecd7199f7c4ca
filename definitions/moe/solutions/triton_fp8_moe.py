"""The DeepSeek-V3 FP8 block-scale MoE with Triton GEMMs, one launch configuration per solution.

Routing runs in torch with the reference's own operations (float32 sigmoid, bias, the best 4
of 8 groups by their top-2 sums, top-8, weights from the unbiased scores, normalised and
scaled), so the chosen experts are the reference's, ties included. The (token, slot) pairs
whose expert is local are sorted by local expert and each expert's run padded to BLOCK_M
(`_align`, torch ops, no host sync); the other pairs are left out. One grouped GEMM kernel,
launched twice:

- GEMM1 (FP8 x FP8): the tokens' FP8 hidden states against both halves of the expert's
  [up; gate] rows; each 128-wide K step is one `tl.dot` of FP8 tiles into a fresh float32
  tile, multiplied by the token's activation scale and the weight block's scale and added to
  the float32 accumulator (the promotion DeepSeek-V3 does every 128 elements); stores
  silu(gate) * up in bfloat16.
- GEMM2 (bfloat16 x FP8 weights): that activation against the expert's down weights, each
  FP8 tile upcast to bfloat16 (exact) and its block scale applied per K step; the routing
  weight multiplies the float32 result; one bfloat16 row per pair.

A third small kernel sums each token's local pairs in float32 into the bfloat16 output.
The activation stays bfloat16 rather than being requantised to FP8 per 128 columns (as
serving engines do): requantising moves the output ~2.7x past retune's bfloat16 tolerance
against this definition's float32 reference, bfloat16 uses ~1/4 of it.

Each launch configuration (BLOCK_M, BLOCK_N, GROUP_M, warps, stages; BLOCK_K is 128, the scale
block) is a solution of its own, so retune picks one per GPU and token count as vLLM's
per-device fused_moe tables do; `default` is vLLM's fallback for FP8 block-scale MoE without
a table. FP8 `tl.dot` needs sm89 or later: the solutions target the sm90 GPUs.
"""

import os

import torch
import triton
import triton.language as tl

FIB_SOLUTIONS = [
    {"variant": "triton_default", "entry_point": "moe_fp8_default",
     "definitions": ["moe_fp8_block_scale_ds_routing_topk8_ng8_kg4_e32_h7168_i2048"],
     "language": "triton", "destination_passing_style": False,
     "target_hardware": ["H100", "H200", "H800", "H20", "GH200"],
     "dependencies": ["triton", "torch"],
     "description": "BLOCK 64x128x128, GROUP_M 32, 4 warps, 3 stages: the untuned default."},
    {"variant": "triton_m16_n64", "entry_point": "moe_fp8_m16_n64",
     "definitions": ["moe_fp8_block_scale_ds_routing_topk8_ng8_kg4_e32_h7168_i2048"],
     "language": "triton", "destination_passing_style": False,
     "target_hardware": ["H100", "H200", "H800", "H20", "GH200"],
     "dependencies": ["triton", "torch"],
     "description": "BLOCK 16x64x128, GROUP_M 1, 4 warps, 4 stages: decode, most programs."},
    {"variant": "triton_m16_n128", "entry_point": "moe_fp8_m16_n128",
     "definitions": ["moe_fp8_block_scale_ds_routing_topk8_ng8_kg4_e32_h7168_i2048"],
     "language": "triton", "destination_passing_style": False,
     "target_hardware": ["H100", "H200", "H800", "H20", "GH200"],
     "dependencies": ["triton", "torch"],
     "description": "BLOCK 16x128x128, GROUP_M 16, 4 warps, 4 stages: decode."},
    {"variant": "triton_m32_n128", "entry_point": "moe_fp8_m32_n128",
     "definitions": ["moe_fp8_block_scale_ds_routing_topk8_ng8_kg4_e32_h7168_i2048"],
     "language": "triton", "destination_passing_style": False,
     "target_hardware": ["H100", "H200", "H800", "H20", "GH200"],
     "dependencies": ["triton", "torch"],
     "description": "BLOCK 32x128x128, GROUP_M 16, 4 warps, 3 stages: small batches."},
    {"variant": "triton_m64_n64", "entry_point": "moe_fp8_m64_n64",
     "definitions": ["moe_fp8_block_scale_ds_routing_topk8_ng8_kg4_e32_h7168_i2048"],
     "language": "triton", "destination_passing_style": False,
     "target_hardware": ["H100", "H200", "H800", "H20", "GH200"],
     "dependencies": ["triton", "torch"],
     "description": "BLOCK 64x64x128, GROUP_M 8, 4 warps, 4 stages: medium batches."},
    {"variant": "triton_m64_n128_s4", "entry_point": "moe_fp8_m64_n128_s4",
     "definitions": ["moe_fp8_block_scale_ds_routing_topk8_ng8_kg4_e32_h7168_i2048"],
     "language": "triton", "destination_passing_style": False,
     "target_hardware": ["H100", "H200", "H800", "H20", "GH200"],
     "dependencies": ["triton", "torch"],
     "description": "BLOCK 64x128x128, GROUP_M 32, 4 warps, 4 stages: prefill."},
    {"variant": "triton_m64_n128_w8", "entry_point": "moe_fp8_m64_n128_w8",
     "definitions": ["moe_fp8_block_scale_ds_routing_topk8_ng8_kg4_e32_h7168_i2048"],
     "language": "triton", "destination_passing_style": False,
     "target_hardware": ["H100", "H200", "H800", "H20", "GH200"],
     "dependencies": ["triton", "torch"],
     "description": "BLOCK 64x128x128, GROUP_M 16, 8 warps, 3 stages: prefill, half the "
                    "registers per thread for GEMM1's two accumulators."},
    {"variant": "triton_m128_n128", "entry_point": "moe_fp8_m128_n128",
     "definitions": ["moe_fp8_block_scale_ds_routing_topk8_ng8_kg4_e32_h7168_i2048"],
     "language": "triton", "destination_passing_style": False,
     "target_hardware": ["H100", "H200", "H800", "H20", "GH200"],
     "dependencies": ["triton", "torch"],
     "description": "BLOCK 128x128x128, GROUP_M 16, 8 warps, 3 stages: large prefill."},
]
# Triton's interpreter multiplies bfloat16 tiles as their raw bits: upcast GEMM2's tiles there
# only (FP8 tiles it multiplies correctly, so GEMM1 keeps them FP8 in the interpreter too).
_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
SCALE_BLOCK = 128
GROUPS, KEEP_GROUPS, TOP_K = 8, 4, 8
# name -> (BLOCK_M, BLOCK_N, GROUP_M, num_warps, num_stages); BLOCK_K is SCALE_BLOCK
CONFIGS = {
    "default": (64, 128, 32, 4, 3),
    "m16_n64": (16, 64, 1, 4, 4),
    "m16_n128": (16, 128, 16, 4, 4),
    "m32_n128": (32, 128, 16, 4, 3),
    "m64_n64": (64, 64, 8, 4, 4),
    "m64_n128_s4": (64, 128, 32, 4, 4),
    "m64_n128_w8": (64, 128, 16, 8, 3),
    "m128_n128": (128, 128, 16, 8, 3),
}


@triton.jit
def _moe_gemm(a_ptr, a_scale_ptr, b_ptr, b_scale_ptr, c_ptr, w_ptr, sorted_ids_ptr,
              expert_ids_ptr, pairs, N, K, stride_am, stride_ask, stride_asm, stride_be,
              stride_bn, stride_bse, stride_bsn, stride_bsk, stride_cm, gate_offset,
              num_blocks_m, A_ROW_DIV: tl.constexpr, GEMM1: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
              GROUP_M: tl.constexpr, UPCAST: tl.constexpr):
    """One BLOCK_M x BLOCK_N tile of one expert. GEMM1: FP8 A with per-row scales per K block,
    two weight tiles (up, gate at `gate_offset` rows), silu(gate) * up stored. GEMM2: bfloat16
    A, the weight tile upcast, the routing weight applied. N and K are multiples of
    BLOCK_N and BLOCK_K, BLOCK_K the scale block."""
    pid = tl.program_id(0)
    blocks_n = N // BLOCK_N
    in_group = GROUP_M * blocks_n
    first_m = (pid // in_group) * GROUP_M
    group_m = min(num_blocks_m - first_m, GROUP_M)
    pid_m = first_m + (pid % in_group) % group_m
    pid_n = (pid % in_group) // group_m
    expert = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
    if expert < 0:  # a block past the last local expert's padded run
        return
    ids = tl.load(sorted_ids_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
    valid = ids < pairs
    a_rows = (ids // A_ROW_DIV).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + a_rows[:, None] * stride_am + offs_k[None, :]
    b_ptrs = b_ptr + expert * stride_be + offs_n[None, :].to(tl.int64) * stride_bn + \
        offs_k[:, None]
    b_scale_ptrs = b_scale_ptr + expert * stride_bse + (offs_n // BLOCK_K) * stride_bsn
    gate_scale_ptrs = b_scale_ptrs + (gate_offset // BLOCK_K) * stride_bsn
    a_scale_ptrs = a_scale_ptr + a_rows * stride_asm
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_gate = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, K // BLOCK_K):
        a = tl.load(a_ptrs, mask=valid[:, None], other=0.0)
        b = tl.load(b_ptrs)
        b_scale = tl.load(b_scale_ptrs + k * stride_bsk)
        if GEMM1:
            a_scale = tl.load(a_scale_ptrs + k * stride_ask, mask=valid, other=0.0)
            acc += tl.dot(a, b) * a_scale[:, None] * b_scale[None, :]
            gate = tl.load(b_ptrs + gate_offset * stride_bn)
            gate_scale = tl.load(gate_scale_ptrs + k * stride_bsk)
            acc_gate += tl.dot(a, gate) * a_scale[:, None] * gate_scale[None, :]
        else:
            if UPCAST:
                partial = tl.dot(a.to(tl.float32), b.to(tl.float32))
            else:
                partial = tl.dot(a, b.to(a.dtype))
            acc += partial * b_scale[None, :]
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K
    if GEMM1:
        acc = acc_gate * tl.sigmoid(acc_gate) * acc
    else:
        acc = acc * tl.load(w_ptr + ids, mask=valid, other=0.0)[:, None]
    c_ptrs = c_ptr + ids[:, None].to(tl.int64) * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=valid[:, None])


@triton.jit
def _combine(per_pair_ptr, local_ptr, out_ptr, H, TOP_K_SLOTS: tl.constexpr,
             BLOCK_H: tl.constexpr):
    """out[token] = the float32 sum of the token's local pairs' rows (0 where none)."""
    token = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    acc = tl.zeros((BLOCK_H,), dtype=tl.float32)
    for slot in tl.static_range(TOP_K_SLOTS):
        pair = token * TOP_K_SLOTS + slot
        width = tl.load(local_ptr + pair).to(tl.int32) * H  # H for a local pair, else 0
        acc += tl.load(per_pair_ptr + pair * H + offs, mask=offs < width, other=0.0).to(
            tl.float32)
    tl.store(out_ptr + token * H + offs, acc.to(out_ptr.dtype.element_ty), mask=offs < H)


def route(routing_logits, routing_bias, routed_scaling_factor):
    """The reference's DeepSeek-V3 no-aux routing: expert ids [T, 8] and float32 weights."""
    tokens, experts = routing_logits.shape
    scores = torch.sigmoid(routing_logits.float())
    biased = scores + routing_bias.float()
    best_two = biased.view(tokens, GROUPS, experts // GROUPS).topk(2, dim=-1).values.sum(-1)
    groups = best_two.topk(KEEP_GROUPS, dim=-1).indices
    allowed = torch.zeros_like(best_two, dtype=torch.bool).scatter_(1, groups, True)
    allowed = allowed[:, :, None].expand(-1, -1, experts // GROUPS).reshape(tokens, experts)
    chosen = biased.masked_fill(~allowed, float("-inf")).topk(TOP_K, dim=-1).indices
    weights = scores.gather(1, chosen)
    weights = weights / (weights.sum(-1, keepdim=True) + 1e-20) * float(routed_scaling_factor)
    return chosen, weights


def _align(local_ids, num_local: int, block_m: int):
    """Pair ids of the local pairs (local_ids in [0, num_local); others are num_local) sorted
    by expert, each expert's run padded to block_m with the id `pairs`, and the expert of each
    block (-1 past the end). Sized for the worst case: no host sync."""
    flat = local_ids.reshape(-1)
    pairs = flat.numel()
    counts = torch.zeros(num_local + 1, dtype=torch.int64, device=flat.device)
    counts = counts.scatter_add_(0, flat, torch.ones_like(flat))[:num_local]  # bincount syncs
    padded = (counts + block_m - 1) // block_m * block_m
    ends = torch.cumsum(padded, 0)
    order = torch.argsort(flat, stable=True)
    experts = flat[order]
    local = experts < num_local
    experts = torch.where(local, experts, 0)
    first_of = torch.cumsum(counts, 0) - counts
    dest = (ends - padded)[experts] + torch.arange(pairs, device=flat.device) - first_of[experts]
    blocks = triton.cdiv(pairs + min(pairs, num_local) * (block_m - 1), block_m)
    dump = blocks * block_m  # where the pairs that are not local go
    sorted_ids = torch.full((dump + 1,), pairs, dtype=torch.int32, device=flat.device)
    sorted_ids[torch.where(local, dest, dump)] = order.to(torch.int32)
    sorted_ids = sorted_ids[:dump]
    starts = torch.arange(blocks, device=flat.device) * block_m
    expert_ids = torch.searchsorted(ends, starts, right=True)
    expert_ids = torch.where(expert_ids < num_local, expert_ids, -1).to(torch.int32)
    return sorted_ids, expert_ids, blocks


def _launch(a, a_scale, b, b_scale, c, weights, sorted_ids, expert_ids, blocks, pairs, n,
            row_div, gemm1, config):
    block_m, block_n, group_m, warps, stages = config
    k = b.shape[2]
    a_scale = a_scale if gemm1 else b_scale  # GEMM2 reads no activation scale
    _moe_gemm[(blocks * (n // block_n),)](
        a, a_scale, b, b_scale, c, weights, sorted_ids, expert_ids, pairs, n, k, a.stride(0),
        a_scale.stride(0), a_scale.stride(1) if gemm1 else 0, b.stride(0), b.stride(1),
        b_scale.stride(0), b_scale.stride(1), b_scale.stride(2), c.stride(0), n, blocks,
        A_ROW_DIV=row_div, GEMM1=gemm1, BLOCK_M=block_m, BLOCK_N=block_n,
        BLOCK_K=SCALE_BLOCK, GROUP_M=group_m, UPCAST=_INTERPRETED, num_warps=warps,
        num_stages=stages)


@torch.no_grad()
def fused_moe_fp8(routing_logits, routing_bias, hidden_states, hidden_states_scale,
                  gemm1_weights, gemm1_weights_scale, gemm2_weights, gemm2_weights_scale,
                  local_expert_offset, routed_scaling_factor, config):
    """The definition's output [T, hidden] bfloat16 with one launch configuration."""
    tokens, hidden = hidden_states.shape
    num_local, inter = gemm2_weights.shape[0], gemm2_weights.shape[2]
    if hidden % SCALE_BLOCK or inter % SCALE_BLOCK or SCALE_BLOCK % config[1]:
        raise ValueError(f"hidden {hidden} and intermediate {inter} must be multiples of "
                         f"{SCALE_BLOCK}, and BLOCK_N {config[1]} divide it")
    out = torch.empty(tokens, hidden, dtype=torch.bfloat16, device=hidden_states.device)
    if tokens == 0:
        return out
    experts, weights = route(routing_logits, routing_bias, routed_scaling_factor)
    local_ids = experts - int(local_expert_offset)
    is_local = (local_ids >= 0) & (local_ids < num_local)
    local_ids = torch.where(is_local, local_ids, num_local)
    pairs = local_ids.numel()
    sorted_ids, expert_ids, blocks = _align(local_ids, num_local, config[0])
    x = hidden_states.contiguous()
    w13, w2 = gemm1_weights.contiguous(), gemm2_weights.contiguous()
    act = torch.empty(pairs, inter, dtype=torch.bfloat16, device=x.device)
    weights = weights.reshape(-1).contiguous()
    _launch(x, hidden_states_scale.float(), w13, gemm1_weights_scale.float(), act, weights,
            sorted_ids, expert_ids, blocks, pairs, inter, experts.shape[1], True, config)
    per_pair = torch.empty(pairs, hidden, dtype=torch.bfloat16, device=x.device)
    _launch(act, None, w2, gemm2_weights_scale.float(), per_pair, weights, sorted_ids,
            expert_ids, blocks, pairs, hidden, 1, False, config)
    block_h = 1024
    _combine[(tokens, triton.cdiv(hidden, block_h))](
        per_pair, is_local.to(torch.int8), out, hidden, TOP_K_SLOTS=experts.shape[1],
        BLOCK_H=block_h)
    return out


def moe_fp8_default(routing_logits, routing_bias, hidden_states, hidden_states_scale,
                    gemm1_weights, gemm1_weights_scale, gemm2_weights, gemm2_weights_scale,
                    local_expert_offset, routed_scaling_factor):
    return fused_moe_fp8(routing_logits, routing_bias, hidden_states, hidden_states_scale,
                         gemm1_weights, gemm1_weights_scale, gemm2_weights, gemm2_weights_scale,
                         local_expert_offset, routed_scaling_factor, CONFIGS["default"])


def moe_fp8_m16_n64(routing_logits, routing_bias, hidden_states, hidden_states_scale,
                    gemm1_weights, gemm1_weights_scale, gemm2_weights, gemm2_weights_scale,
                    local_expert_offset, routed_scaling_factor):
    return fused_moe_fp8(routing_logits, routing_bias, hidden_states, hidden_states_scale,
                         gemm1_weights, gemm1_weights_scale, gemm2_weights, gemm2_weights_scale,
                         local_expert_offset, routed_scaling_factor, CONFIGS["m16_n64"])


def moe_fp8_m16_n128(routing_logits, routing_bias, hidden_states, hidden_states_scale,
                     gemm1_weights, gemm1_weights_scale, gemm2_weights, gemm2_weights_scale,
                     local_expert_offset, routed_scaling_factor):
    return fused_moe_fp8(routing_logits, routing_bias, hidden_states, hidden_states_scale,
                         gemm1_weights, gemm1_weights_scale, gemm2_weights, gemm2_weights_scale,
                         local_expert_offset, routed_scaling_factor, CONFIGS["m16_n128"])


def moe_fp8_m32_n128(routing_logits, routing_bias, hidden_states, hidden_states_scale,
                     gemm1_weights, gemm1_weights_scale, gemm2_weights, gemm2_weights_scale,
                     local_expert_offset, routed_scaling_factor):
    return fused_moe_fp8(routing_logits, routing_bias, hidden_states, hidden_states_scale,
                         gemm1_weights, gemm1_weights_scale, gemm2_weights, gemm2_weights_scale,
                         local_expert_offset, routed_scaling_factor, CONFIGS["m32_n128"])


def moe_fp8_m64_n64(routing_logits, routing_bias, hidden_states, hidden_states_scale,
                    gemm1_weights, gemm1_weights_scale, gemm2_weights, gemm2_weights_scale,
                    local_expert_offset, routed_scaling_factor):
    return fused_moe_fp8(routing_logits, routing_bias, hidden_states, hidden_states_scale,
                         gemm1_weights, gemm1_weights_scale, gemm2_weights, gemm2_weights_scale,
                         local_expert_offset, routed_scaling_factor, CONFIGS["m64_n64"])


def moe_fp8_m64_n128_s4(routing_logits, routing_bias, hidden_states, hidden_states_scale,
                        gemm1_weights, gemm1_weights_scale, gemm2_weights, gemm2_weights_scale,
                        local_expert_offset, routed_scaling_factor):
    return fused_moe_fp8(routing_logits, routing_bias, hidden_states, hidden_states_scale,
                         gemm1_weights, gemm1_weights_scale, gemm2_weights, gemm2_weights_scale,
                         local_expert_offset, routed_scaling_factor, CONFIGS["m64_n128_s4"])


def moe_fp8_m64_n128_w8(routing_logits, routing_bias, hidden_states, hidden_states_scale,
                        gemm1_weights, gemm1_weights_scale, gemm2_weights, gemm2_weights_scale,
                        local_expert_offset, routed_scaling_factor):
    return fused_moe_fp8(routing_logits, routing_bias, hidden_states, hidden_states_scale,
                         gemm1_weights, gemm1_weights_scale, gemm2_weights, gemm2_weights_scale,
                         local_expert_offset, routed_scaling_factor, CONFIGS["m64_n128_w8"])


def moe_fp8_m128_n128(routing_logits, routing_bias, hidden_states, hidden_states_scale,
                      gemm1_weights, gemm1_weights_scale, gemm2_weights, gemm2_weights_scale,
                      local_expert_offset, routed_scaling_factor):
    return fused_moe_fp8(routing_logits, routing_bias, hidden_states, hidden_states_scale,
                         gemm1_weights, gemm1_weights_scale, gemm2_weights, gemm2_weights_scale,
                         local_expert_offset, routed_scaling_factor, CONFIGS["m128_n128"])
