"""Causal GQA prefill attention in plain PyTorch (ragged keys or a paged KV cache): the
baseline that runs anywhere. Serves the gqa_ragged prefill definitions too."""

import math

import torch

# Arguments of any stride and storage offset are handled here (see dispatch.contract).
FIB_ANY_LAYOUT = True

FIB_SOLUTIONS = [
    {
        "variant": "torch_prefill",
        "entry_points": {
            "gqa_ragged_prefill_causal_h32_kv*_d128": "run_ragged",
            "gqa_paged_prefill_causal_h32_kv*_d128_ps1": "run_paged_ps1",
            "gqa_paged_prefill_causal_h32_kv*_d128_ps16": "run_paged",
        },
        "language": "python",
        "destination_passing_style": False,
        "target_hardware": ["any"],
        "dependencies": ["torch"],
        "description": (
            "One host sync to read the offsets, then per sequence: keys gathered (paged), "
            "grouped-query logits as float32 matmuls (the lse needs float32 logits), causal "
            "mask, float32 softmax and base-2 lse, weights times values as a bfloat16 matmul, "
            "in query chunks of 1024 to bound the logits' memory. Baseline; launches grow "
            "with the batch."
        ),
    },
]

_CHUNK = 1024


def _attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, sm_scale: float,
            out: torch.Tensor, lse: torch.Tensor) -> None:
    """One sequence: the last len(q) of len(keys) tokens attend causally; writes out, lse."""
    n, num_qo_heads, head_dim = q.shape
    kv_len, num_kv_heads = keys.shape[0], keys.shape[1]
    group = num_qo_heads // num_kv_heads
    keys_t = keys.permute(1, 2, 0).float()  # [kv_heads, dim, kv_len]
    values_t = values.transpose(0, 1)  # [kv_heads, kv_len, dim]
    positions = torch.arange(kv_len, device=q.device)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        rows = stop - start
        queries = q[start:stop].reshape(rows, num_kv_heads, group, head_dim)
        queries = queries.permute(1, 0, 2, 3).reshape(num_kv_heads, rows * group, head_dim)
        logits = torch.matmul(queries.float(), keys_t).mul_(sm_scale)
        logits = logits.view(num_kv_heads, rows, group, kv_len)
        limit = torch.arange(start, stop, device=q.device) + (kv_len - n)
        logits.masked_fill_((positions[None, :] > limit[:, None])[None, :, None, :], -math.inf)
        row_lse = torch.logsumexp(logits, dim=-1)  # [kv_heads, rows, group]
        shift = torch.where(torch.isfinite(row_lse), row_lse, 0.0)
        weights = torch.exp_(logits.sub_(shift[..., None])).to(values.dtype)
        attended = torch.matmul(weights.view(num_kv_heads, rows * group, kv_len), values_t)
        out[start:stop] = attended.view(num_kv_heads, rows, group, head_dim).permute(
            1, 0, 2, 3).reshape(rows, num_qo_heads, head_dim)
        lse[start:stop] = (row_lse / math.log(2.0)).permute(1, 0, 2).reshape(rows, num_qo_heads)


def _prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qo_indptr: torch.Tensor,
             kv_indptr: torch.Tensor, kv_indices: torch.Tensor | None,
             kv_last_page_len: torch.Tensor | None,
             sm_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    total_q, num_qo_heads, _ = q.shape
    output = torch.zeros_like(q, memory_format=torch.contiguous_format)
    lse = torch.full((total_q, num_qo_heads), -math.inf, dtype=torch.float32, device=q.device)
    qo = qo_indptr.tolist()
    kv = kv_indptr.tolist()
    last = kv_last_page_len.tolist() if kv_last_page_len is not None else None
    for b in range(len(qo) - 1):
        q0, q1, k0, k1 = qo[b], qo[b + 1], kv[b], kv[b + 1]
        if q0 >= q1 or k0 >= k1:
            continue
        if kv_indices is None:
            keys, values = k[k0:k1], v[k0:k1]
        else:
            pages = kv_indices[k0:k1].long()
            keys = k[pages].flatten(0, 1)  # [pages * page_size, kv_heads, dim]
            values = v[pages].flatten(0, 1)
            if last is not None:
                length = (k1 - k0 - 1) * k.shape[1] + last[b]
                keys, values = keys[:length], values[:length]
        _attend(q[q0:q1], keys, values, float(sm_scale), output[q0:q1], lse[q0:q1])
    return output, lse


@torch.no_grad()
def run_ragged(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qo_indptr: torch.Tensor,
               kv_indptr: torch.Tensor, sm_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """gqa_ragged_prefill_causal_*: (output, base-2 lse)."""
    return _prefill(q, k, v, qo_indptr, kv_indptr, None, None, sm_scale)


@torch.no_grad()
def run_paged_ps1(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                  qo_indptr: torch.Tensor, kv_indptr: torch.Tensor, kv_indices: torch.Tensor,
                  sm_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """gqa_paged_prefill_causal_*_ps1: (output, base-2 lse)."""
    return _prefill(q, k_cache, v_cache, qo_indptr, kv_indptr, kv_indices, None, sm_scale)


@torch.no_grad()
def run_paged(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
              qo_indptr: torch.Tensor, kv_indptr: torch.Tensor, kv_indices: torch.Tensor,
              kv_last_page_len: torch.Tensor,
              sm_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """gqa_paged_prefill_causal_*_ps16: (output, base-2 lse)."""
    return _prefill(q, k_cache, v_cache, qo_indptr, kv_indptr, kv_indices, kv_last_page_len,
                    sm_scale)
