"""NeoX-style rotary embedding from a cos/sin cache in Triton: q and k in one launch."""

import torch
import triton
import triton.language as tl

from fib_runtime.triton_launch import FastLauncher

# Arguments of any stride and storage offset are handled here (see dispatch.contract).
FIB_ANY_LAYOUT = True

FIB_SOLUTIONS = [
    {
        "variant": "triton",
        "families": ["rope"],
        "definitions": ["rope_with_cos_sin_cache_neox_style_*"],
        "entry_point": "run",
        "dtypes": ["bfloat16", "float16", "float32"],
        "language": "triton",
        "destination_passing_style": False,
        "target_hardware": ["nvidia"],
        "dependencies": ["triton", "torch", "fib-runtime"],
        "description": (
            "Triton, one program per (token, head) over the q heads then the k heads: loads "
            "the position's cos/sin row once, rotates the first rotary_dim dimensions in "
            "float32, copies the rest, stores once. One launch for q and k (an eager "
            "rotate-half formulation costs about ten); strided q/k rows and heads read in place, "
            "strided positions copied first."
        ),
    },
]


@triton.jit
def _rope_kernel(q_ptr, k_ptr, q_out_ptr, k_out_ptr, cache_ptr, pos_ptr,
                 stride_qt, stride_qh, stride_kt, stride_kh, HQ, HK,
                 HALF: tl.constexpr, ROT: tl.constexpr, D: tl.constexpr,
                 BLOCK_HALF: tl.constexpr, BLOCK_REST: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    pos = tl.load(pos_ptr + t).to(tl.int64)
    offs = tl.arange(0, BLOCK_HALF)
    mask = offs < HALF
    cos = tl.load(cache_ptr + pos * ROT + offs, mask=mask, other=0.0).to(tl.float32)
    sin = tl.load(cache_ptr + pos * ROT + HALF + offs, mask=mask, other=0.0).to(tl.float32)
    if h < HQ:
        src = q_ptr + t * stride_qt + h * stride_qh
        dst = q_out_ptr + (t * HQ + h) * D
    else:
        src = k_ptr + t * stride_kt + (h - HQ) * stride_kh
        dst = k_out_ptr + (t * HK + (h - HQ)) * D
    x1 = tl.load(src + offs, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src + HALF + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(dst + offs, (x1 * cos - x2 * sin).to(dst.dtype.element_ty), mask=mask)
    tl.store(dst + HALF + offs, (x2 * cos + x1 * sin).to(dst.dtype.element_ty), mask=mask)
    if ROT < D:
        rest = ROT + tl.arange(0, BLOCK_REST)
        keep = rest < D
        tl.store(dst + rest, tl.load(src + rest, mask=keep, other=0.0), mask=keep)


_launch = FastLauncher(_rope_kernel)


def _unit_last(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def run(q: torch.Tensor, k: torch.Tensor, cos_sin_cache: torch.Tensor,
        positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    q, k, positions = _unit_last(q), _unit_last(k), _unit_last(positions)
    cache = cos_sin_cache.contiguous()
    tokens, heads_q, head = q.shape
    heads_k = k.shape[1]
    rotary = cache.shape[-1]
    q_out = torch.empty((tokens, heads_q, head), dtype=q.dtype, device=q.device)
    k_out = torch.empty((tokens, heads_k, head), dtype=k.dtype, device=k.device)
    if tokens == 0:
        return q_out, k_out
    half = rotary // 2
    _launch((tokens, heads_q + heads_k, 1), q, k, q_out, k_out, cache, positions,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), heads_q, heads_k,
            half, rotary, head, triton.next_power_of_2(half),
            triton.next_power_of_2(max(head - rotary, 1)), num_warps=1)
    return q_out, k_out
