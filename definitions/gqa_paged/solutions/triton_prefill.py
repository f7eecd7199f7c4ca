"""Causal GQA prefill attention in Triton, over ragged keys or a paged KV cache (any page size).

Flash-attention style: one program per (block of a sequence's query tokens, KV head) holds
the block's queries of every query head of that KV head's group as the rows of one tile, so
each K/V tile it reads (straight, or gathered through kv_indices) serves the whole group. The
key tiles every row of the block sees are read without masks; only the tiles on the causal
diagonal are masked. Softmax runs in base 2 (logits scaled by log2(e)), so m + log2(l) is
the definition's base-2 lse directly.

The grid needs no host sync: sequence b owns the program ids from qo_indptr[b] // BLOCK_T + b
on (at least cdiv(its queries, BLOCK_T) of them), so total_q // BLOCK_T + batch programs
cover every sequence, and each finds its own by a binary search over qo_indptr.
"""

import os

import torch
import triton
import triton.language as tl

from fib_runtime.triton_launch import FastLauncher

FIB_SOLUTIONS = [
    {
        "variant": "triton_prefill",
        "entry_points": {
            "gqa_ragged_prefill_causal_h32_kv*_d128": "run_ragged",
            "gqa_paged_prefill_causal_h32_kv*_d128_ps1": "run_paged_ps1",
            "gqa_paged_prefill_causal_h32_kv*_d128_ps16": "run_paged",
        },
        "language": "triton",
        "destination_passing_style": False,
        "target_hardware": ["nvidia"],
        "dependencies": ["triton", "torch", "fib-runtime"],
        "description": (
            "One kernel (flash-attention 2 style, online base-2 softmax, bfloat16 tensor-core "
            "dots with float32 accumulation): a program per (block of one sequence's query "
            "tokens, KV head) computes all query heads of the group at once, so a K/V tile is "
            "read once per group; keys are read straight (ragged) or gathered page by page "
            "through kv_indices (paged); only diagonal tiles are masked. No host sync, no "
            "plan: the grid is total_q / BLOCK_T + batch programs, each finding its sequence "
            "by binary search over qo_indptr."
        ),
    },
]

_LOG2E = 1.4426950408889634
_DOT_F32 = os.environ.get("TRITON_INTERPRET") == "1"  # the interpreter's dot wants float32


@triton.jit
def _dot(a, b, AS_F32: tl.constexpr):
    """a @ b with float32 accumulation; AS_F32 widens bfloat16 operands first (the
    interpreter multiplies bfloat16 operands as raw integers). On the GPU: tensor cores."""
    return tl.dot(a.to(tl.float32), b.to(tl.float32)) if AS_F32 else tl.dot(a, b)


@triton.jit
def _kv_slots(kv_start, cols, col_ok, indices_ptr, PAGED: tl.constexpr,
              PAGE_SIZE: tl.constexpr):
    """(page, slot in the page) of a sequence's key positions `cols`; a ragged key is a
    page of one token."""
    if PAGED:
        page = tl.load(indices_ptr + kv_start + cols // PAGE_SIZE, mask=col_ok, other=0)
        return page.to(tl.int64), cols % PAGE_SIZE
    return (kv_start + cols).to(tl.int64), cols * 0


@triton.jit
def _prefill_kernel(
    q_ptr, k_ptr, v_ptr, qo_indptr_ptr, kv_indptr_ptr, indices_ptr, last_len_ptr,
    o_ptr, lse_ptr, qk_scale, batch,
    stride_qt, stride_qh, stride_kp, stride_ks, stride_kh, stride_vp, stride_vs, stride_vh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_T: tl.constexpr,
    BLOCK_N: tl.constexpr, PAGED: tl.constexpr, PAGE_SIZE: tl.constexpr,
    DOT_F32: tl.constexpr,
):
    pid = tl.program_id(0)
    kv_head = tl.program_id(1)
    # The sequence: the last b with qo_indptr[b] // BLOCK_T + b <= pid.
    lo = tl.zeros([], dtype=tl.int32)
    hi = lo + batch
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        first = tl.load(qo_indptr_ptr + mid) // BLOCK_T + mid
        lo = tl.where(first <= pid, mid, lo)
        hi = tl.where(first <= pid, hi, mid)
    seq = lo
    q_start = tl.load(qo_indptr_ptr + seq)
    q_len = tl.load(qo_indptr_ptr + seq + 1) - q_start
    block = pid - (q_start // BLOCK_T + seq)
    if block * BLOCK_T >= q_len:
        return
    kv_start = tl.load(kv_indptr_ptr + seq)
    kv_len = tl.load(kv_indptr_ptr + seq + 1) - kv_start
    if PAGED and PAGE_SIZE > 1:
        kv_len = tl.where(kv_len > 0,
                          (kv_len - 1) * PAGE_SIZE + tl.load(last_len_ptr + seq), 0)
    delta = kv_len - q_len  # query i sees keys 0 .. i + delta

    BLOCK_M: tl.constexpr = BLOCK_T * GROUP
    rows = tl.arange(0, BLOCK_M)
    q_pos = block * BLOCK_T + rows // GROUP
    heads = kv_head * GROUP + rows % GROUP
    row_ok = q_pos < q_len
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    q_rows = (q_start + q_pos).to(tl.int64) * stride_qt + heads * stride_qh
    q = tl.load(q_ptr + q_rows[:, None] + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    k_base = k_ptr + kv_head * stride_kh + offs_d[None, :]
    v_base = v_ptr + kv_head * stride_vh + offs_d[None, :]

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    first_pos = block * BLOCK_T
    last_pos = tl.minimum(first_pos + BLOCK_T, q_len) - 1
    # Keys every row sees: [0, unmasked); the diagonal tiles: [unmasked, seen).
    unmasked = tl.maximum(tl.minimum(kv_len, first_pos + delta + 1), 0) // BLOCK_N * BLOCK_N
    seen = tl.minimum(kv_len, last_pos + delta + 1)
    for n0 in range(0, unmasked, BLOCK_N):
        cols = n0 + offs_n
        page, slot = _kv_slots(kv_start, cols, cols < kv_len, indices_ptr, PAGED, PAGE_SIZE)
        k = tl.load(k_base + (page * stride_kp + slot * stride_ks)[:, None])
        s = _dot(q, tl.trans(k), DOT_F32) * qk_scale
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_base + (page * stride_vp + slot * stride_vs)[:, None])
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, DOT_F32)
        m_i = m_new
    for n0 in range(unmasked, seen, BLOCK_N):
        cols = n0 + offs_n
        col_ok = cols < seen
        page, slot = _kv_slots(kv_start, cols, col_ok, indices_ptr, PAGED, PAGE_SIZE)
        k = tl.load(k_base + (page * stride_kp + slot * stride_ks)[:, None],
                    mask=col_ok[:, None], other=0.0)
        s = _dot(q, tl.trans(k), DOT_F32) * qk_scale
        visible = col_ok[None, :] & (cols[None, :] <= q_pos[:, None] + delta)
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row that sees nothing yet
        alpha = tl.exp2(m_i - shift)
        p = tl.exp2(s - shift[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_base + (page * stride_vp + slot * stride_vs)[:, None],
                    mask=col_ok[:, None], other=0.0)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, DOT_F32)
        m_i = m_new

    has_kv = l_i > 0.0
    safe_l = tl.where(has_kv, l_i, 1.0)
    out = tl.where(has_kv[:, None], acc / safe_l[:, None], 0.0)
    out_rows = (q_start + q_pos).to(tl.int64) * (GROUP * tl.num_programs(1)) + heads
    tl.store(o_ptr + out_rows[:, None] * HEAD_DIM + offs_d[None, :],
             out.to(o_ptr.dtype.element_ty), mask=row_ok[:, None])
    tl.store(lse_ptr + out_rows, tl.where(has_kv, m_i + tl.log2(safe_l), float("-inf")),
             mask=row_ok)


_launch = FastLauncher(_prefill_kernel)


def block_sizes(total_q: int, group: int, interpreted: bool = _DOT_F32) -> tuple[int, int, int]:
    """(query tokens per program, keys per tile, warps): 128-row tiles (tokens x group)
    where there are enough queries to fill the GPU with them, 64-row ones otherwise."""
    if interpreted:
        return max(16 // group, 1), 16, 4
    rows = 128 if total_q * group >= 128 * 132 else 64
    return rows // group, 64, 8 if rows == 128 else 4


def prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qo_indptr: torch.Tensor,
            kv_indptr: torch.Tensor, kv_indices: torch.Tensor | None,
            kv_last_page_len: torch.Tensor | None, sm_scale: float,
            blocks: tuple[int, int, int] | None = None,
            num_stages: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal prefill: k / v are [tokens, kv_heads, dim] (ragged, kv_indices None) or
    [pages, page_size, kv_heads, dim] (paged). Returns (output, base-2 lse)."""
    total_q, num_qo_heads, head_dim = q.shape
    paged = kv_indices is not None
    if not paged:  # a ragged key is a page of one token
        k, v = k.unsqueeze(1), v.unsqueeze(1)
    num_kv_heads, page_size = k.shape[2], k.shape[1]
    group = num_qo_heads // num_kv_heads
    assert k.stride(-1) == 1 and v.stride(-1) == 1 and q.stride(-1) == 1, "head_dim strided"
    output = torch.empty((total_q, num_qo_heads, head_dim), dtype=q.dtype, device=q.device)
    lse = torch.empty((total_q, num_qo_heads), dtype=torch.float32, device=q.device)
    batch = qo_indptr.shape[0] - 1
    if total_q == 0 or batch <= 0:
        return output, lse
    block_t, block_n, num_warps = blocks or block_sizes(total_q, group)
    indices = kv_indices if paged else qo_indptr  # unread when not paged
    last = kv_last_page_len if kv_last_page_len is not None else qo_indptr  # unread at ps 1
    _launch(
        (total_q // block_t + batch, num_kv_heads, 1), q, k, v, qo_indptr, kv_indptr, indices,
        last, output, lse, float(sm_scale) * _LOG2E, batch,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        group, head_dim, block_t, block_n, paged, page_size, _DOT_F32,
        num_warps=num_warps, num_stages=num_stages,
    )
    return output, lse


def run_ragged(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qo_indptr: torch.Tensor,
               kv_indptr: torch.Tensor, sm_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """gqa_ragged_prefill_causal_*: keys and values packed sequence after sequence."""
    return prefill(q, k, v, qo_indptr, kv_indptr, None, None, sm_scale)


def run_paged_ps1(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                  qo_indptr: torch.Tensor, kv_indptr: torch.Tensor, kv_indices: torch.Tensor,
                  sm_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """gqa_paged_prefill_causal_*_ps1: one token a page."""
    return prefill(q, k_cache, v_cache, qo_indptr, kv_indptr, kv_indices, None, sm_scale)


def run_paged(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
              qo_indptr: torch.Tensor, kv_indptr: torch.Tensor, kv_indices: torch.Tensor,
              kv_last_page_len: torch.Tensor,
              sm_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """gqa_paged_prefill_causal_*_ps16: full pages but the last of each sequence."""
    return prefill(q, k_cache, v_cache, qo_indptr, kv_indptr, kv_indices, kv_last_page_len,
                   sm_scale)
