"""Multi-head latent attention (DeepSeek-V3/R1, weights absorbed) over a paged cache of one
token a page, in Triton: decode and causal prefill.

A program holds BLOCK_T query tokens x all 16 heads as the rows of one tile (the heads share
each token's single compressed KV row, so a ckv / kpe tile is read once for all of them) and
walks tokens in BLOCK_N tiles gathered through kv_indices: logits = q_nope.ckv + q_pe.kpe (two
tensor-core dots), online base-2 softmax, output += p.ckv (the compressed row is also the
value). Tiles every row of the block sees fully skip the causal mask.

- Prefill: sequence b owns program ids from qo_indptr[b] // BLOCK_T + b on (binary search),
  the last query blocks (the longest) launched first. When the query blocks are few for the
  GPU, each block's visible tokens are split over `splits` programs too.
- Decode: the batch's tokens (num_kv_indices, known without a sync) are cut into equal chunks,
  one a program, whatever the sequences' lengths; a program walks every sequence its chunk
  touches (sequence b's partial of program p is slot p + b).
Split partials (float32 output, max, sum) are merged by a second kernel.
"""

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
            "cuts the batch's tokens into equal chunks (balanced whatever the sequence "
            "lengths), prefill splits each query block's tokens when the blocks are few; "
            "float32 partials merged by a second kernel; no host sync."
        ),
    },
]

_LOG2E = 1.4426950408889634
_DOT_F32 = os.environ.get("TRITON_INTERPRET") == "1"  # the interpreter's dot wants float32


class Config:
    """A launch configuration. Decode: `split` programs a streaming multiprocessor wanted,
    chunks of at least `min_chunk` tokens. Prefill: BLOCK_T query tokens a program, and when
    the query blocks are fewer than `split` a multiprocessor, that many programs a
    multiprocessor wanted, chunks of at least `min_chunk` of the mean sequence's tokens."""

    __slots__ = ("block_n", "block_t", "min_chunk", "num_stages", "num_warps", "split")

    def __init__(self, block_t: int, block_n: int, num_warps: int, num_stages: int | None = None,
                 split: int = 2, min_chunk: int = 64) -> None:
        self.block_t, self.block_n, self.num_warps = block_t, block_n, num_warps
        self.num_stages, self.split, self.min_chunk = num_stages, split, min_chunk


@triton.jit
def _dot(a, b, AS_F32: tl.constexpr):
    """a @ b, float32 accumulation; AS_F32 widens bfloat16 first (the interpreter's dot)."""
    return tl.dot(a.to(tl.float32), b.to(tl.float32)) if AS_F32 else tl.dot(a, b)


@triton.jit
def _walk(qn, qp, ckv_ptr, kpe_ptr, indices_ptr, kv_start, lo_n, hi_n, limit, m_i, l_i, acc,
          qk_scale, stride_ckv, stride_kpe, D_CKV: tl.constexpr, D_KPE: tl.constexpr,
          BLOCK_N: tl.constexpr, MASKED: tl.constexpr, DOT_F32: tl.constexpr):
    """Online softmax of the rows over a sequence's tokens lo_n .. hi_n (its pages from
    indices_ptr + kv_start). MASKED: row r sees tokens up to limit[r]; otherwise the range is
    whole tiles that every row sees."""
    offs_c = tl.arange(0, D_CKV)
    offs_p = tl.arange(0, D_KPE)
    offs_n = tl.arange(0, BLOCK_N)
    for n0 in range(lo_n, hi_n, BLOCK_N):
        cols = n0 + offs_n
        col_ok = cols < hi_n
        page = tl.load(indices_ptr + kv_start + cols, mask=col_ok, other=0).to(tl.int64)
        ckv = tl.load(ckv_ptr + (page * stride_ckv)[:, None] + offs_c[None, :],
                      mask=col_ok[:, None], other=0.0)
        kpe = tl.load(kpe_ptr + (page * stride_kpe)[:, None] + offs_p[None, :],
                      mask=col_ok[:, None], other=0.0)
        s = (_dot(qn, tl.trans(ckv), DOT_F32) + _dot(qp, tl.trans(kpe), DOT_F32)) * qk_scale
        if MASKED:
            s = tl.where(col_ok[None, :] & (cols[None, :] <= limit[:, None]), s,
                         float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - shift)
        p = tl.exp2(s - shift[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + _dot(p.to(ckv.dtype), ckv, DOT_F32)
        m_i = m_new
    return m_i, l_i, acc


@triton.jit
def _attend(qn, qp, ckv_ptr, kpe_ptr, indices_ptr, kv_start, lo_n, all_see, hi_n, limit,
            qk_scale, stride_ckv, stride_kpe, BLOCK_M: tl.constexpr, D_CKV: tl.constexpr,
            D_KPE: tl.constexpr, BLOCK_N: tl.constexpr, DOT_F32: tl.constexpr):
    """(max, sum, output) of the rows over tokens lo_n .. hi_n: the whole tiles below all_see
    (every row sees them) without a mask, the rest masked by each row's limit."""
    mid_n = lo_n + (tl.minimum(tl.maximum(all_see, lo_n), hi_n) - lo_n) // BLOCK_N * BLOCK_N
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, D_CKV], dtype=tl.float32)
    m_i, l_i, acc = _walk(qn, qp, ckv_ptr, kpe_ptr, indices_ptr, kv_start, lo_n, mid_n, limit,
                          m_i, l_i, acc, qk_scale, stride_ckv, stride_kpe, D_CKV, D_KPE,
                          BLOCK_N, False, DOT_F32)
    return _walk(qn, qp, ckv_ptr, kpe_ptr, indices_ptr, kv_start, mid_n, hi_n, limit, m_i, l_i,
                 acc, qk_scale, stride_ckv, stride_kpe, D_CKV, D_KPE, BLOCK_N, True, DOT_F32)


@triton.jit
def _store(o_ptr, m_ptr, l_ptr, out_rows, row_ok, m_i, l_i, acc, D_CKV: tl.constexpr,
           FINALIZE: tl.constexpr):
    """FINALIZE: output and lse rows (no visible token: zeros and -inf); otherwise float32
    partials (output, max, sum) at partial rows out_rows."""
    offs_c = tl.arange(0, D_CKV)
    if FINALIZE:
        has_kv = l_i > 0.0
        safe_l = tl.where(has_kv, l_i, 1.0)
        out = tl.where(has_kv[:, None], acc / safe_l[:, None], 0.0)
        tl.store(o_ptr + out_rows[:, None] * D_CKV + offs_c[None, :],
                 out.to(o_ptr.dtype.element_ty), mask=row_ok[:, None])
        tl.store(m_ptr + out_rows, tl.where(has_kv, m_i + tl.log2(safe_l), float("-inf")),
                 mask=row_ok)
    else:
        tl.store(o_ptr + out_rows[:, None] * D_CKV + offs_c[None, :], acc, mask=row_ok[:, None])
        tl.store(m_ptr + out_rows, m_i, mask=row_ok)
        tl.store(l_ptr + out_rows, l_i, mask=row_ok)


@triton.jit
def _mla_kernel(
    qn_ptr, qp_ptr, ckv_ptr, kpe_ptr, qo_indptr_ptr, kv_indptr_ptr, indices_ptr,
    o_ptr, m_ptr, l_ptr, qk_scale, batch, num_splits,
    stride_qn_t, stride_qn_h, stride_qp_t, stride_qp_h, stride_ckv, stride_kpe,
    HEADS: tl.constexpr, D_CKV: tl.constexpr, D_KPE: tl.constexpr, BLOCK_T: tl.constexpr,
    BLOCK_N: tl.constexpr, DECODE: tl.constexpr, FINALIZE: tl.constexpr,
    DOT_F32: tl.constexpr,
):
    """One query block x one of num_splits chunks of the tokens it sees. FINALIZE: o_ptr is
    the output and m_ptr the lse; otherwise float32 partials, row (token * num_splits +
    split) * HEADS + head."""
    pid = tl.num_programs(0) - 1 - tl.program_id(0)  # a sequence's last blocks are longest
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
    token = (q_start + q_pos).to(tl.int64)
    qn = tl.load(qn_ptr + (token * stride_qn_t + heads * stride_qn_h)[:, None] + offs_c[None, :],
                 mask=row_ok[:, None], other=0.0)
    qp = tl.load(qp_ptr + (token * stride_qp_t + heads * stride_qp_h)[:, None] + offs_p[None, :],
                 mask=row_ok[:, None], other=0.0)

    seen = tl.maximum(tl.minimum(kv_len, tl.minimum(block * BLOCK_T + BLOCK_T, q_len) + delta), 0)
    chunk = tl.cdiv(tl.cdiv(seen, num_splits), BLOCK_N) * BLOCK_N
    lo_n = tl.minimum(split * chunk, seen)
    hi_n = tl.minimum(lo_n + chunk, seen)
    m_i, l_i, acc = _attend(qn, qp, ckv_ptr, kpe_ptr, indices_ptr, kv_start, lo_n,
                            block * BLOCK_T + delta + 1, hi_n, q_pos + delta, qk_scale,
                            stride_ckv, stride_kpe, BLOCK_M, D_CKV, D_KPE, BLOCK_N, DOT_F32)
    out_rows = token * HEADS + heads
    if not FINALIZE:
        out_rows = (token * num_splits + split) * HEADS + heads
    _store(o_ptr, m_ptr, l_ptr, out_rows, row_ok, m_i, l_i, acc, D_CKV, FINALIZE)


@triton.jit
def _mla_decode_chunks_kernel(
    qn_ptr, qp_ptr, ckv_ptr, kpe_ptr, kv_indptr_ptr, indices_ptr, o_ptr, m_ptr, l_ptr,
    qk_scale, batch, total, chunk,
    stride_qn_t, stride_qn_h, stride_qp_t, stride_qp_h, stride_ckv, stride_kpe,
    HEADS: tl.constexpr, D_CKV: tl.constexpr, D_KPE: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT_F32: tl.constexpr,
):
    """Program p: tokens p * chunk .. (p + 1) * chunk of the whole batch, a float32 partial
    for each sequence they touch (sequence b: row (p + b) * HEADS + head)."""
    p = tl.program_id(0)
    start = p * chunk
    end = tl.minimum(start + chunk, total)
    lo = tl.zeros([], dtype=tl.int32)
    hi = lo + batch
    while lo + 1 < hi:  # the sequence holding token `start`
        mid = (lo + hi) // 2
        below = tl.load(kv_indptr_ptr + mid) <= start
        lo = tl.where(below, mid, lo)
        hi = tl.where(below, hi, mid)
    seq = lo
    kv_start = tl.load(kv_indptr_ptr + seq)
    heads = tl.arange(0, HEADS)
    offs_c = tl.arange(0, D_CKV)
    offs_p = tl.arange(0, D_KPE)
    all_ok = heads < HEADS
    while (seq < batch) & (kv_start < end):
        kv_end = tl.load(kv_indptr_ptr + seq + 1)
        qn = tl.load(qn_ptr + (seq.to(tl.int64) * stride_qn_t + heads * stride_qn_h)[:, None]
                     + offs_c[None, :])
        qp = tl.load(qp_ptr + (seq.to(tl.int64) * stride_qp_t + heads * stride_qp_h)[:, None]
                     + offs_p[None, :])
        lo_n = tl.maximum(kv_start, start) - kv_start
        hi_n = tl.minimum(kv_end, end) - kv_start
        m_i, l_i, acc = _attend(qn, qp, ckv_ptr, kpe_ptr, indices_ptr, kv_start, lo_n, hi_n,
                                hi_n, heads * 0 + hi_n, qk_scale, stride_ckv, stride_kpe,
                                HEADS, D_CKV, D_KPE, BLOCK_N, DOT_F32)
        _store(o_ptr, m_ptr, l_ptr, (p + seq).to(tl.int64) * HEADS + heads, all_ok, m_i, l_i,
               acc, D_CKV, False)
        seq += 1
        kv_start = kv_end


@triton.jit
def _merge_kernel(acc_ptr, m_ptr, l_ptr, o_ptr, lse_ptr, kv_indptr_ptr, num_splits, chunk,
                  HEADS: tl.constexpr, D_CKV: tl.constexpr, CHUNKED: tl.constexpr,
                  SLOTS: tl.constexpr):
    """Output and lse of one (row, head) from its partials, SLOTS at a time: rows (row *
    num_splits + s) * HEADS + head, or CHUNKED (decode sequence `row`): rows (p + row) * HEADS
    + head for the programs p whose chunk holds its tokens."""
    row = tl.program_id(0)
    head = tl.program_id(1)
    if CHUNKED:
        kv_start = tl.load(kv_indptr_ptr + row)
        kv_end = tl.load(kv_indptr_ptr + row + 1)
        first = kv_start // chunk + row
        count = tl.where(kv_end > kv_start, (kv_end - 1) // chunk - kv_start // chunk + 1, 0)
    else:
        first = row * num_splits
        count = num_splits
    offs_c = tl.arange(0, D_CKV)
    offs_s = tl.arange(0, SLOTS)
    m_run = tl.zeros([], dtype=tl.float32) - float("inf")
    l_run = tl.zeros([], dtype=tl.float32)
    acc = tl.zeros([D_CKV], dtype=tl.float32)
    for s0 in range(first, first + count, SLOTS):
        slot = s0 + offs_s
        ok = slot < first + count
        part = head.to(tl.int64) + slot * HEADS
        m_part = tl.load(m_ptr + part, mask=ok, other=float("-inf"))
        m_new = tl.maximum(m_run, tl.max(m_part, axis=0))
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_run - shift)
        weight = tl.exp2(m_part - shift)
        parts = tl.load(acc_ptr + part[:, None] * D_CKV + offs_c[None, :], mask=ok[:, None],
                        other=0.0)
        acc = acc * alpha + tl.sum(parts * weight[:, None], axis=0)
        l_run = l_run * alpha + tl.sum(tl.load(l_ptr + part, mask=ok, other=0.0) * weight, axis=0)
        m_run = m_new
    has_kv = l_run > 0.0
    safe_l = tl.where(has_kv, l_run, 1.0)
    out_row = row.to(tl.int64) * HEADS + head
    tl.store(o_ptr + out_row * D_CKV + offs_c,
             tl.where(has_kv, acc / safe_l, 0.0).to(o_ptr.dtype.element_ty))
    tl.store(lse_ptr + out_row, tl.where(has_kv, m_run + tl.log2(safe_l), float("-inf")))


_launch = FastLauncher(_mla_kernel)
_launch_chunks = FastLauncher(_mla_decode_chunks_kernel)
_launch_merge = FastLauncher(_merge_kernel)
_SM_COUNTS: dict[torch.device, int] = {}
_MERGE_SLOTS = 4 if _DOT_F32 else 16  # partials a merge step loads at once (few: tested)
# Not yet timed (benchmarks/bench_prefill_attention.py --only mla --variants sweeps them). By
# ptxas for sm_90 (Triton 3.9): 2-token blocks at 4 warps hit the 255-register cap, at 8 use
# 174 (decode 102-128); 4-token blocks (64 rows) reach wgmma, 255 registers, ~40 bytes
# spilled; 8-token blocks spill kilobytes.
DECODE_CONFIG = Config(block_t=1, block_n=32, num_warps=8)
PREFILL_CONFIG = Config(block_t=2, block_n=32, num_warps=8)
LONG_PREFILL_CONFIG = Config(block_t=4, block_n=32, num_warps=8, num_stages=2)
LONG_PREFILL_QUERIES = 2048
INTERPRETER_CONFIG = Config(block_t=1, block_n=16, num_warps=4)


def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 132
    count = _SM_COUNTS.get(device)
    if count is None:
        count = _SM_COUNTS[device] = torch.cuda.get_device_properties(device).multi_processor_count
    return count


def decode_chunk(num_kv_indices: int, device: torch.device, config: Config) -> int:
    """Tokens a decode program: `config.split` programs a multiprocessor, at least
    config.min_chunk, a multiple of BLOCK_N."""
    wanted = max(triton.cdiv(num_kv_indices, config.split * _num_sms(device)), config.min_chunk)
    return triton.cdiv(wanted, config.block_n) * config.block_n


def prefill_splits(query_blocks: int, batch: int, num_kv_indices: int, device: torch.device,
                   config: Config, max_splits: int = 64) -> int:
    """Programs a prefill query block: 1 while the blocks fill `config.split` programs a
    multiprocessor; else enough to, with chunks of at least config.min_chunk of the mean
    sequence's tokens (uneven lengths are why the cap is high)."""
    wanted = config.split * _num_sms(device)
    if query_blocks >= wanted:
        return 1
    by_length = triton.cdiv(num_kv_indices, max(batch, 1) * config.min_chunk)
    return max(1, min(triton.cdiv(wanted, max(query_blocks, 1)), by_length, max_splits))


def _empty_outputs(q_nope: torch.Tensor, q_pe: torch.Tensor, ckv_cache: torch.Tensor,
                   kpe_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    assert q_nope.stride(-1) == 1 and q_pe.stride(-1) == 1, "head dims must be contiguous"
    assert ckv_cache.stride(-1) == 1 and kpe_cache.stride(-1) == 1
    total_q, heads, d_ckv = q_nope.shape
    return (torch.empty((total_q, heads, d_ckv), dtype=q_nope.dtype, device=q_nope.device),
            torch.empty((total_q, heads), dtype=torch.float32, device=q_nope.device))


def _partials(slots: int, heads: int, d_ckv: int, device: torch.device) -> tuple:
    acc = torch.empty((slots, heads, d_ckv), dtype=torch.float32, device=device)
    m = torch.empty((slots, heads), dtype=torch.float32, device=device)
    return acc, m, torch.empty_like(m)


def attend(q_nope: torch.Tensor, q_pe: torch.Tensor, ckv_cache: torch.Tensor,
           kpe_cache: torch.Tensor, qo_indptr: torch.Tensor | None, kv_indptr: torch.Tensor,
           kv_indices: torch.Tensor, sm_scale: float, config: Config,
           num_splits: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Query blocks x num_splits chunks of their visible tokens: causal prefill, or decode
    (qo_indptr None: one query a sequence)."""
    output, lse = _empty_outputs(q_nope, q_pe, ckv_cache, kpe_cache)
    total_q, heads, d_ckv = q_nope.shape
    batch = kv_indptr.shape[0] - 1
    if total_q == 0 or batch <= 0:
        return output, lse
    decode = qo_indptr is None
    block_t = 1 if decode else config.block_t
    grid0 = batch if decode else total_q // block_t + batch
    if num_splits == 1:
        o_buf, m_buf, l_buf = output, lse, lse
    else:
        o_buf, m_buf, l_buf = _partials(total_q * num_splits, heads, d_ckv, q_nope.device)
    _launch(
        (grid0, num_splits, 1), q_nope, q_pe, ckv_cache, kpe_cache,
        kv_indptr if decode else qo_indptr, kv_indptr, kv_indices, o_buf, m_buf, l_buf,
        float(sm_scale) * _LOG2E, batch, num_splits,
        q_nope.stride(0), q_nope.stride(1), q_pe.stride(0), q_pe.stride(1),
        ckv_cache.stride(0), kpe_cache.stride(0),
        heads, d_ckv, q_pe.shape[-1], block_t, config.block_n, decode, num_splits == 1,
        _DOT_F32, num_warps=config.num_warps, num_stages=config.num_stages,
    )
    if num_splits > 1:
        _launch_merge((total_q, heads, 1), o_buf, m_buf, l_buf, output, lse, kv_indptr,
                      num_splits, 1, heads, d_ckv, False, _MERGE_SLOTS, num_warps=4)
    return output, lse


def attend_decode_chunks(q_nope: torch.Tensor, q_pe: torch.Tensor, ckv_cache: torch.Tensor,
                         kpe_cache: torch.Tensor, kv_indptr: torch.Tensor,
                         kv_indices: torch.Tensor, sm_scale: float, config: Config,
                         chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode over equal chunks of `chunk` tokens of the batch, one a program, then a merge."""
    output, lse = _empty_outputs(q_nope, q_pe, ckv_cache, kpe_cache)
    batch, heads, d_ckv = q_nope.shape
    total = kv_indices.shape[0]
    if batch == 0:
        return output, lse
    programs = triton.cdiv(total, chunk)
    o_buf, m_buf, l_buf = _partials(programs + batch, heads, d_ckv, q_nope.device)
    if programs:
        _launch_chunks(
            (programs, 1, 1), q_nope, q_pe, ckv_cache, kpe_cache, kv_indptr, kv_indices,
            o_buf, m_buf, l_buf, float(sm_scale) * _LOG2E, batch, total, chunk,
            q_nope.stride(0), q_nope.stride(1), q_pe.stride(0), q_pe.stride(1),
            ckv_cache.stride(0), kpe_cache.stride(0),
            heads, d_ckv, q_pe.shape[-1], config.block_n, _DOT_F32,
            num_warps=config.num_warps, num_stages=config.num_stages,
        )
    _launch_merge((batch, heads, 1), o_buf, m_buf, l_buf, output, lse, kv_indptr, 1, chunk,
                  heads, d_ckv, True, _MERGE_SLOTS, num_warps=4)
    return output, lse


def decode(q_nope: torch.Tensor, q_pe: torch.Tensor, ckv_cache: torch.Tensor,
           kpe_cache: torch.Tensor, kv_indptr: torch.Tensor, kv_indices: torch.Tensor,
           sm_scale: float, config: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode under `config`: one program a sequence when one chunk holds the whole batch."""
    chunk = decode_chunk(kv_indices.shape[0], q_nope.device, config)
    if kv_indices.shape[0] <= chunk:
        return attend(q_nope, q_pe, ckv_cache, kpe_cache, None, kv_indptr, kv_indices,
                      sm_scale, config)
    return attend_decode_chunks(q_nope, q_pe, ckv_cache, kpe_cache, kv_indptr, kv_indices,
                                sm_scale, config, chunk)


def prefill(q_nope: torch.Tensor, q_pe: torch.Tensor, ckv_cache: torch.Tensor,
            kpe_cache: torch.Tensor, qo_indptr: torch.Tensor, kv_indptr: torch.Tensor,
            kv_indices: torch.Tensor, sm_scale: float,
            config: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal prefill under `config`, split over the tokens when the query blocks are few."""
    batch = kv_indptr.shape[0] - 1
    total_q = q_nope.shape[0]
    blocks = min(total_q // config.block_t + batch, total_q)  # at most, each has a query
    splits = prefill_splits(blocks, batch, kv_indices.shape[0], q_nope.device, config)
    return attend(q_nope, q_pe, ckv_cache, kpe_cache, qo_indptr, kv_indptr, kv_indices,
                  sm_scale, config, splits)


def prefill_config(total_q: int) -> Config:
    """The shipped prefill configuration: bigger query blocks for long (compute-bound) work."""
    if _DOT_F32:
        return INTERPRETER_CONFIG
    return LONG_PREFILL_CONFIG if total_q >= LONG_PREFILL_QUERIES else PREFILL_CONFIG


def run_decode(q_nope: torch.Tensor, q_pe: torch.Tensor, ckv_cache: torch.Tensor,
               kpe_cache: torch.Tensor, kv_indptr: torch.Tensor, kv_indices: torch.Tensor,
               sm_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """mla_paged_decode_h16_ckv512_kpe64_ps1: (output, base-2 lse)."""
    config = INTERPRETER_CONFIG if _DOT_F32 else DECODE_CONFIG
    return decode(q_nope, q_pe, ckv_cache, kpe_cache, kv_indptr, kv_indices, sm_scale, config)


def run_prefill(q_nope: torch.Tensor, q_pe: torch.Tensor, ckv_cache: torch.Tensor,
                kpe_cache: torch.Tensor, qo_indptr: torch.Tensor, kv_indptr: torch.Tensor,
                kv_indices: torch.Tensor, sm_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """mla_paged_prefill_causal_h16_ckv512_kpe64_ps1: (output, base-2 lse)."""
    return prefill(q_nope, q_pe, ckv_cache, kpe_cache, qo_indptr, kv_indptr, kv_indices,
                   sm_scale, prefill_config(q_nope.shape[0]))
