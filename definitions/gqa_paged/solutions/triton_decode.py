"""Paged GQA decode attention (page size 1) in Triton: split-KV and single-pass variants.

Each program serves one (KV head, sequence, KV chunk) and all query heads of that KV head's
group at once, so every K/V row it gathers through kv_indices is read once for the group.
Softmax runs in base 2 (logits scaled by log2(e)), so m + log2(l) is the base-2 lse directly.
"""

import math
import os

import torch
import triton
import triton.language as tl

from fib_runtime.triton_launch import FastLauncher

FIB_SOLUTIONS = [
    {
        "variant": "triton_split_kv",
        "definitions": [
            "gqa_paged_decode_h32_kv8_d128_ps1",
            "gqa_paged_decode_h32_kv4_d128_ps1",
        ],
        "entry_point": "run_split_kv",
        "language": "triton",
        "destination_passing_style": False,
        "target_hardware": ["nvidia"],
        "dependencies": ["triton", "torch", "fib-runtime"],
        "description": (
            "Two passes: pass 1 splits each sequence's KV into chunks, one program per "
            "(KV head, chunk, sequence) writes float32 partial max/sum/accumulator for the "
            "group's query heads; pass 2 merges the chunks into output and base-2 lse. The "
            "split count comes from batch size and mean KV length (no host sync) so that enough "
            "programs fill the GPU. Wins where batch x KV heads is too small to fill the SMs: "
            "small batches, long sequences."
        ),
    },
    {
        "variant": "triton_single_pass",
        "definitions": [
            "gqa_paged_decode_h32_kv8_d128_ps1",
            "gqa_paged_decode_h32_kv4_d128_ps1",
        ],
        "entry_point": "run_single_pass",
        "language": "triton",
        "destination_passing_style": False,
        "target_hardware": ["nvidia"],
        "dependencies": ["triton", "torch", "fib-runtime"],
        "description": (
            "One kernel, one program per (KV head, sequence) over the whole sequence, writing "
            "output and base-2 lse directly (no partials, no merge launch). Wins on large "
            "batches of short sequences, where batch x KV heads already fills the GPU."
        ),
    },
]

_LOG2E = 1.4426950408889634
_DOT_F32 = os.environ.get("TRITON_INTERPRET") == "1"  # the interpreter's dot wants float32


@triton.jit
def _dot(a, b, AS_F32: tl.constexpr):
    """a @ b with float32 accumulation; AS_F32 widens bfloat16 operands first (exact).

    Needed under TRITON_INTERPRET=1: the interpreter multiplies bfloat16 operands as their raw
    16-bit integers. On the GPU the operands stay bfloat16 (tensor cores).
    """
    return tl.dot(a.to(tl.float32), b.to(tl.float32)) if AS_F32 else tl.dot(a, b)


@triton.jit
def _attend_chunk_kernel(
    q_ptr, k_ptr, v_ptr, indptr_ptr, indices_ptr,
    o_ptr, m_ptr, l_ptr,
    qk_scale, num_splits,
    stride_qb, stride_qh, stride_kp, stride_kh, stride_vp, stride_vh,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr, NUM_STAGES: tl.constexpr, FINALIZE: tl.constexpr,
    DOT_F32: tl.constexpr,
):
    """Online softmax of one KV chunk for GROUP query heads.

    FINALIZE: o_ptr is the output [batch, heads, dim] and m_ptr the lse [batch, heads].
    Otherwise o/m/l are float32 partials [batch, heads, num_splits(, dim)].
    """
    kv_head = tl.program_id(0)
    split = tl.program_id(1)
    seq = tl.program_id(2)
    start = tl.load(indptr_ptr + seq)
    end = tl.load(indptr_ptr + seq + 1)
    chunk = tl.cdiv(tl.cdiv(end - start, num_splits), BLOCK_N) * BLOCK_N
    lo = start + split * chunk
    hi = tl.minimum(lo + chunk, end)

    offs_g = tl.arange(0, GROUP_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    heads = kv_head * GROUP + offs_g
    head_ok = offs_g < GROUP
    q = tl.load(
        q_ptr + seq * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
        mask=head_ok[:, None], other=0.0,
    )
    k_base = k_ptr + kv_head * stride_kh + offs_d[None, :]
    v_base = v_ptr + kv_head * stride_vh + offs_d[None, :]

    m_i = tl.full([GROUP_PAD], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([GROUP_PAD], dtype=tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], dtype=tl.float32)
    # Every tile holds at least one valid token, so m_i is finite after the first one.
    for n0 in tl.range(lo, hi, BLOCK_N, num_stages=NUM_STAGES):
        pos = n0 + offs_n
        valid = pos < hi
        page = tl.load(indices_ptr + pos, mask=valid, other=0).to(tl.int64)
        k = tl.load(k_base + page[:, None] * stride_kp, mask=valid[:, None], other=0.0)
        s = _dot(q, tl.trans(k), DOT_F32) * qk_scale
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_base + page[:, None] * stride_vp, mask=valid[:, None], other=0.0)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, DOT_F32)
        m_i = m_new

    row = seq * GROUP * tl.num_programs(0) + heads  # (sequence, query head) index
    if FINALIZE:
        has_kv = l_i > 0.0
        out = tl.where(has_kv[:, None], acc / tl.where(has_kv, l_i, 1.0)[:, None], 0.0)
        tl.store(
            o_ptr + row[:, None] * HEAD_DIM + offs_d[None, :],
            out.to(o_ptr.dtype.element_ty), mask=head_ok[:, None],
        )
        lse = tl.where(has_kv, m_i + tl.log2(tl.where(has_kv, l_i, 1.0)), float("-inf"))
        tl.store(m_ptr + row, lse, mask=head_ok)
    else:
        part = row * num_splits + split
        tl.store(o_ptr + part[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=head_ok[:, None])
        tl.store(m_ptr + part, m_i, mask=head_ok)
        tl.store(l_ptr + part, l_i, mask=head_ok)


@triton.jit
def _merge_splits_kernel(
    acc_ptr, m_ptr, l_ptr, o_ptr, lse_ptr, num_splits,
    HEAD_DIM: tl.constexpr, SPLITS_PAD: tl.constexpr,
):
    """Merge the float32 partials of one (sequence, query head) row into output and lse."""
    row = tl.program_id(0)
    offs_s = tl.arange(0, SPLITS_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    split_ok = offs_s < num_splits
    part = row * num_splits + offs_s
    m = tl.load(m_ptr + part, mask=split_ok, other=float("-inf"))
    l_part = tl.load(l_ptr + part, mask=split_ok, other=0.0)
    m_max = tl.max(m, axis=0)
    shift = tl.where(m_max == float("-inf"), 0.0, m_max)  # all chunks empty: weights are 0
    w = tl.exp2(m - shift)
    l_sum = tl.sum(l_part * w, axis=0)
    acc = tl.load(
        acc_ptr + part[:, None] * HEAD_DIM + offs_d[None, :], mask=split_ok[:, None], other=0.0
    )
    acc = tl.sum(acc * w[:, None], axis=0)
    has_kv = l_sum > 0.0
    safe_l = tl.where(has_kv, l_sum, 1.0)
    out = tl.where(has_kv, acc / safe_l, 0.0)
    tl.store(o_ptr + row * HEAD_DIM + offs_d, out.to(o_ptr.dtype.element_ty))
    tl.store(lse_ptr + row, tl.where(has_kv, shift + tl.log2(safe_l), float("-inf")))


_SM_COUNTS: dict[torch.device, int] = {}


def _num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of the device (an H100's count off CUDA, e.g. the interpreter)."""
    if device.type != "cuda":
        return 132
    count = _SM_COUNTS.get(device)
    if count is None:  # the property query costs tens of microseconds: once per device
        count = _SM_COUNTS[device] = torch.cuda.get_device_properties(device).multi_processor_count
    return count


_launch_attend = FastLauncher(_attend_chunk_kernel)
_launch_merge = FastLauncher(_merge_splits_kernel)


def choose_num_splits(batch: int, num_kv_heads: int, num_kv_indices: int, device: torch.device,
                      min_chunk: int = 128, max_splits: int = 64) -> int:
    """Splits per sequence: ~8 waves of programs over the SMs, chunks of >= min_chunk tokens.

    Uses the mean length (num_kv_indices / batch), known on the host without a sync.
    max_splits bounds the merge pass's tile (splits x head_dim float32 in registers).
    """
    programs = batch * num_kv_heads
    wanted = min(triton.cdiv(8 * _num_sms(device), max(programs, 1)), max_splits)
    mean_len = num_kv_indices / max(batch, 1)
    return max(1, min(wanted, math.ceil(mean_len / min_chunk)))


def decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    sm_scale: float,
    num_splits: int,
    block_n: int | None = None,
    num_warps: int = 4,
    num_stages: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode attention with num_splits KV chunks per sequence; 0 means one pass, no merge.

    block_n (tokens per tile) defaults to 128, or 64 when the mean chunk is shorter than 128.
    Two stages of 128-token K/V tiles take 128 KiB of shared memory.
    """
    batch, num_qo_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    group = num_qo_heads // num_kv_heads
    assert k_cache.stride(-1) == 1 and v_cache.stride(-1) == 1, "head_dim must be contiguous"
    q = q.contiguous()
    output = torch.empty_like(q)
    lse = torch.empty((batch, num_qo_heads), dtype=torch.float32, device=q.device)
    if batch == 0:
        return output, lse
    single = num_splits == 0
    splits = max(num_splits, 1)
    if block_n is None:
        block_n = 128 if kv_indices.shape[0] >= 128 * batch * splits else 64
    if single:
        o_buf, m_buf, l_buf = output, lse, lse
    else:
        o_buf = torch.empty((batch, num_qo_heads, splits, head_dim), dtype=torch.float32,
                            device=q.device)
        m_buf = torch.empty((batch, num_qo_heads, splits), dtype=torch.float32, device=q.device)
        l_buf = torch.empty_like(m_buf)
    _launch_attend(
        (num_kv_heads, splits, batch), q, k_cache, v_cache, kv_indptr, kv_indices,
        o_buf, m_buf, l_buf, float(sm_scale) * _LOG2E, splits,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(2),
        group, max(16, triton.next_power_of_2(group)), head_dim, block_n, num_stages, single,
        _DOT_F32, num_warps=num_warps,
    )
    if not single:
        _launch_merge(
            (batch * num_qo_heads, 1, 1), o_buf, m_buf, l_buf, output, lse, splits,
            head_dim, triton.next_power_of_2(splits), num_warps=4,
        )
    return output, lse


def run_split_kv(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    sm_scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split-KV decode; the split count is chosen from the shapes alone."""
    splits = choose_num_splits(q.shape[0], k_cache.shape[2], kv_indices.shape[0], q.device)
    return decode(q, k_cache, v_cache, kv_indptr, kv_indices, sm_scale, splits)


def run_single_pass(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    sm_scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One program per (KV head, sequence) over the whole sequence; no merge pass."""
    return decode(q, k_cache, v_cache, kv_indptr, kv_indices, sm_scale, 0)
