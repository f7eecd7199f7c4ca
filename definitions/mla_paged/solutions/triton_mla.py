"""Multi-head latent attention (DeepSeek-V3/R1, weights absorbed) over a paged cache of one
token a page, in Triton: decode and causal prefill.

A program holds BLOCK_T query tokens x all 16 heads as the rows of one tile (the heads share
each token's single compressed KV row, so a ckv / kpe tile is read once for all of them),
walks its sequence's tokens in BLOCK_N tiles gathered through kv_indices: logits =
q_nope.ckv + q_pe.kpe (two tensor-core dots), online base-2 softmax, output += p.ckv (the
compressed row is also the value). Prefill programs find their sequence as the GQA prefill
kernel does (sequence b owns program ids from qo_indptr[b] // BLOCK_T + b on, binary search);
decode has one program per sequence and KV split, partials merged by a second kernel.
"""

import math
import os

import torch
import triton
import triton.language as tl

from fib_runtime.triton_launch import FastLauncher

FIB_SOLUTIONS = [
    {
        "variant": "triton_mla",
        "entry_points": {
            "mla_paged_decode_h16_ckv512_kpe64_ps1": "run_decode",
            "mla_paged_prefill_causal_h16_ckv512_kpe64_ps1": "run_prefill",
        },
        "language": "triton",
        "destination_passing_style": False,
        "target_hardware": ["nvidia"],
        "dependencies": ["triton", "torch", "fib-runtime"],
        "description": (
            "One flash-attention kernel for MLA decode and causal prefill: the 16 heads (x "
            "BLOCK_T query tokens in prefill) are the rows of one tile sharing each gathered "
            "ckv/kpe tile; float32 online base-2 softmax, bfloat16 tensor-core dots. Decode "
            "splits each sequence's tokens over programs by batch size and mean length (no "
            "host sync) and merges the float32 partials in a second kernel; prefill needs no "
            "host sync either (program-to-sequence binary search over qo_indptr)."
        ),
    },
]

_LOG2E = 1.4426950408889634
_DOT_F32 = os.environ.get("TRITON_INTERPRET") == "1"  # the interpreter's dot wants float32


@triton.jit
def _dot(a, b, AS_F32: tl.constexpr):
    """a @ b, float32 accumulation; AS_F32 widens bfloat16 first (the interpreter's dot)."""
    return tl.dot(a.to(tl.float32), b.to(tl.float32)) if AS_F32 else tl.dot(a, b)


@triton.jit
def _mla_kernel(
    qn_ptr, qp_ptr, ckv_ptr, kpe_ptr, qo_indptr_ptr, kv_indptr_ptr, indices_ptr,
    o_ptr, m_ptr, l_ptr, qk_scale, batch, num_splits,
    stride_qn_t, stride_qn_h, stride_qp_t, stride_qp_h, stride_ckv, stride_kpe,
    HEADS: tl.constexpr, D_CKV: tl.constexpr, D_KPE: tl.constexpr, BLOCK_T: tl.constexpr,
    BLOCK_N: tl.constexpr, DECODE: tl.constexpr, FINALIZE: tl.constexpr,
    DOT_F32: tl.constexpr,
):
    """FINALIZE: o_ptr is the output and m_ptr the lse. Otherwise (decode split over KV)
    o / m / l are float32 partials [batch, heads, num_splits(, D_CKV)]."""
    pid = tl.program_id(0)
    split = tl.program_id(1)
    if DECODE:
        seq = pid
        q_start = pid
        q_len = 1
        block = 0
    else:
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
    delta = kv_len - q_len  # query i sees tokens 0 .. i + delta

    BLOCK_M: tl.constexpr = BLOCK_T * HEADS
    rows = tl.arange(0, BLOCK_M)
    q_pos = block * BLOCK_T + rows // HEADS
    heads = rows % HEADS
    row_ok = q_pos < q_len
    offs_c = tl.arange(0, D_CKV)
    offs_p = tl.arange(0, D_KPE)
    offs_n = tl.arange(0, BLOCK_N)
    token = (q_start + q_pos).to(tl.int64)
    qn = tl.load(qn_ptr + (token * stride_qn_t + heads * stride_qn_h)[:, None] + offs_c[None, :],
                 mask=row_ok[:, None], other=0.0)
    qp = tl.load(qp_ptr + (token * stride_qp_t + heads * stride_qp_h)[:, None] + offs_p[None, :],
                 mask=row_ok[:, None], other=0.0)

    seen = tl.minimum(kv_len, tl.minimum(block * BLOCK_T + BLOCK_T, q_len) + delta)
    chunk = tl.cdiv(tl.cdiv(tl.maximum(seen, 0), num_splits), BLOCK_N) * BLOCK_N
    lo_n = split * chunk
    hi_n = tl.minimum(lo_n + chunk, seen)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, D_CKV], dtype=tl.float32)
    for n0 in range(lo_n, hi_n, BLOCK_N):
        cols = n0 + offs_n
        col_ok = cols < hi_n
        page = tl.load(indices_ptr + kv_start + cols, mask=col_ok, other=0).to(tl.int64)
        ckv = tl.load(ckv_ptr + (page * stride_ckv)[:, None] + offs_c[None, :],
                      mask=col_ok[:, None], other=0.0)
        kpe = tl.load(kpe_ptr + (page * stride_kpe)[:, None] + offs_p[None, :],
                      mask=col_ok[:, None], other=0.0)
        s = (_dot(qn, tl.trans(ckv), DOT_F32) + _dot(qp, tl.trans(kpe), DOT_F32)) * qk_scale
        visible = col_ok[None, :] & (cols[None, :] <= q_pos[:, None] + delta)
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - shift)
        p = tl.exp2(s - shift[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + _dot(p.to(ckv.dtype), ckv, DOT_F32)
        m_i = m_new

    out_rows = token * HEADS + heads
    if FINALIZE:
        has_kv = l_i > 0.0
        safe_l = tl.where(has_kv, l_i, 1.0)
        out = tl.where(has_kv[:, None], acc / safe_l[:, None], 0.0)
        tl.store(o_ptr + out_rows[:, None] * D_CKV + offs_c[None, :],
                 out.to(o_ptr.dtype.element_ty), mask=row_ok[:, None])
        tl.store(m_ptr + out_rows, tl.where(has_kv, m_i + tl.log2(safe_l), float("-inf")),
                 mask=row_ok)
    else:
        part = out_rows * num_splits + split
        tl.store(o_ptr + part[:, None] * D_CKV + offs_c[None, :], acc, mask=row_ok[:, None])
        tl.store(m_ptr + part, m_i, mask=row_ok)
        tl.store(l_ptr + part, l_i, mask=row_ok)


@triton.jit
def _merge_kernel(acc_ptr, m_ptr, l_ptr, o_ptr, lse_ptr, num_splits,
                  D_CKV: tl.constexpr, SPLITS_PAD: tl.constexpr):
    """Merge the float32 partials of one (sequence, head) row into output and lse."""
    row = tl.program_id(0)
    offs_s = tl.arange(0, SPLITS_PAD)
    offs_c = tl.arange(0, D_CKV)
    split_ok = offs_s < num_splits
    part = row.to(tl.int64) * num_splits + offs_s
    m = tl.load(m_ptr + part, mask=split_ok, other=float("-inf"))
    l_part = tl.load(l_ptr + part, mask=split_ok, other=0.0)
    m_max = tl.max(m, axis=0)
    shift = tl.where(m_max == float("-inf"), 0.0, m_max)
    w = tl.exp2(m - shift)
    l_sum = tl.sum(l_part * w, axis=0)
    acc = tl.load(acc_ptr + part[:, None] * D_CKV + offs_c[None, :], mask=split_ok[:, None],
                  other=0.0)
    acc = tl.sum(acc * w[:, None], axis=0)
    has_kv = l_sum > 0.0
    safe_l = tl.where(has_kv, l_sum, 1.0)
    tl.store(o_ptr + row.to(tl.int64) * D_CKV + offs_c,
             tl.where(has_kv, acc / safe_l, 0.0).to(o_ptr.dtype.element_ty))
    tl.store(lse_ptr + row, tl.where(has_kv, shift + tl.log2(safe_l), float("-inf")))


_launch = FastLauncher(_mla_kernel)
_launch_merge = FastLauncher(_merge_kernel)
_SM_COUNTS: dict[torch.device, int] = {}


def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 132
    count = _SM_COUNTS.get(device)
    if count is None:
        count = _SM_COUNTS[device] = torch.cuda.get_device_properties(device).multi_processor_count
    return count


def choose_num_splits(batch: int, num_kv_indices: int, device: torch.device,
                      min_chunk: int = 64, max_splits: int = 32) -> int:
    """Splits per decode sequence: ~2 programs a streaming multiprocessor, chunks of at
    least min_chunk tokens (mean length, known without a sync)."""
    wanted = min(triton.cdiv(2 * _num_sms(device), max(batch, 1)), max_splits)
    return max(1, min(wanted, math.ceil(num_kv_indices / max(batch, 1) / min_chunk)))


def attend(q_nope: torch.Tensor, q_pe: torch.Tensor, ckv_cache: torch.Tensor,
           kpe_cache: torch.Tensor, qo_indptr: torch.Tensor | None, kv_indptr: torch.Tensor,
           kv_indices: torch.Tensor, sm_scale: float, num_splits: int = 1,
           block_t: int | None = None, block_n: int | None = None,
           num_warps: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode (qo_indptr None: one query a sequence, num_splits KV chunks) or causal prefill."""
    total_q, heads, d_ckv = q_nope.shape
    d_kpe = q_pe.shape[-1]
    assert q_nope.stride(-1) == 1 and q_pe.stride(-1) == 1, "head dims must be contiguous"
    assert ckv_cache.stride(-1) == 1 and kpe_cache.stride(-1) == 1
    decode = qo_indptr is None
    output = torch.empty((total_q, heads, d_ckv), dtype=q_nope.dtype, device=q_nope.device)
    lse = torch.empty((total_q, heads), dtype=torch.float32, device=q_nope.device)
    batch = kv_indptr.shape[0] - 1
    if total_q == 0 or batch <= 0:
        return output, lse
    block_n = block_n or (16 if _DOT_F32 else 32)
    block_t = 1 if decode else (block_t or (1 if _DOT_F32 else 2))
    splits = num_splits if decode else 1
    grid0 = batch if decode else total_q // block_t + batch
    if splits == 1:
        o_buf, m_buf, l_buf = output, lse, lse
    else:
        o_buf = torch.empty((total_q, heads, splits, d_ckv), dtype=torch.float32,
                            device=q_nope.device)
        m_buf = torch.empty((total_q, heads, splits), dtype=torch.float32, device=q_nope.device)
        l_buf = torch.empty_like(m_buf)
    _launch(
        (grid0, splits, 1), q_nope, q_pe, ckv_cache, kpe_cache,
        kv_indptr if decode else qo_indptr, kv_indptr, kv_indices, o_buf, m_buf, l_buf,
        float(sm_scale) * _LOG2E, batch, splits,
        q_nope.stride(0), q_nope.stride(1), q_pe.stride(0), q_pe.stride(1),
        ckv_cache.stride(0), kpe_cache.stride(0),
        heads, d_ckv, d_kpe, block_t, block_n, decode, splits == 1, _DOT_F32,
        num_warps=num_warps,
    )
    if splits > 1:
        _launch_merge((total_q * heads, 1, 1), o_buf, m_buf, l_buf, output, lse, splits,
                      d_ckv, triton.next_power_of_2(splits), num_warps=4)
    return output, lse


def run_decode(q_nope: torch.Tensor, q_pe: torch.Tensor, ckv_cache: torch.Tensor,
               kpe_cache: torch.Tensor, kv_indptr: torch.Tensor, kv_indices: torch.Tensor,
               sm_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """mla_paged_decode_h16_ckv512_kpe64_ps1: (output, base-2 lse)."""
    splits = choose_num_splits(q_nope.shape[0], kv_indices.shape[0], q_nope.device)
    return attend(q_nope, q_pe, ckv_cache, kpe_cache, None, kv_indptr, kv_indices, sm_scale,
                  splits)


def run_prefill(q_nope: torch.Tensor, q_pe: torch.Tensor, ckv_cache: torch.Tensor,
                kpe_cache: torch.Tensor, qo_indptr: torch.Tensor, kv_indptr: torch.Tensor,
                kv_indices: torch.Tensor, sm_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """mla_paged_prefill_causal_h16_ckv512_kpe64_ps1: (output, base-2 lse)."""
    return attend(q_nope, q_pe, ckv_cache, kpe_cache, qo_indptr, kv_indptr, kv_indices,
                  sm_scale)
