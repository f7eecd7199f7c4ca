"""transformers' own sdpa attention as the original of the GQA ragged-prefill definitions.

`ragged_prefill(q, k, v, qo_indptr, kv_indptr, sm_scale) -> (output, lse)` has the
`gqa_ragged_prefill_causal_h{Q}_kv{K}_d{D}` signature (any heads and head_dim: the constants
come from the tensors) and computes each sequence's output with
`transformers.integrations.sdpa_attention.sdpa_attention_forward`, the function a model with
`attn_implementation="sdpa"` calls: one call for a batch of equal-length sequences, one per
sequence otherwise. Query i of n sees keys 0 .. i + L - n (the definition's contract):
`is_causal` where n == L, no mask where n == 1 (a decode step), a boolean mask otherwise.

transformers never computes the lse the definition also returns: it is made here by a
float32 pass over the scaled logits in query chunks (one more q.k^T than transformers pays),
and the offsets are read on the host (one sync a call). So this candidate is timed slower
than transformers' own call by that pass; the routed model's result is the same.
"""

from __future__ import annotations

import math

import torch

_LOGITS = 1 << 26  # float32 logits a chunk of the lse pass holds at most


class _Module:
    """What `sdpa_attention_forward` reads of the attention module calling it."""

    is_causal = True

    def __init__(self, groups: int) -> None:
        self.num_key_value_groups = groups


@torch.no_grad()
def ragged_prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qo_indptr: torch.Tensor,
                   kv_indptr: torch.Tensor, sm_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """gqa_ragged_prefill_causal_*: (output, base-2 lse) through transformers' sdpa."""
    total_q, heads, _ = q.shape
    output = torch.zeros_like(q, memory_format=torch.contiguous_format)
    lse = torch.full((total_q, heads), -math.inf, dtype=torch.float32, device=q.device)
    qo, kv = qo_indptr.tolist(), kv_indptr.tolist()
    batch = len(qo) - 1
    n, length = (qo[1] - qo[0], kv[1] - kv[0]) if batch else (0, 0)
    if batch and all(qo[b] == qo[0] + b * n and kv[b] == kv[0] + b * length
                     for b in range(batch + 1)):
        spans = [(batch, qo[0], n, kv[0], length)]
    else:
        spans = [(1, qo[b], qo[b + 1] - qo[b], kv[b], kv[b + 1] - kv[b]) for b in range(batch)]
    for rows, q0, n, k0, length in spans:
        if n > 0 and length > 0:
            q1, k1 = q0 + rows * n, k0 + rows * length
            _attend(q[q0:q1], k[k0:k1], v[k0:k1], rows, float(sm_scale), output[q0:q1],
                    lse[q0:q1])
    return output, lse


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: int, sm_scale: float,
            out: torch.Tensor, lse: torch.Tensor) -> None:
    """`batch` sequences of equal lengths, packed: writes their output and lse rows."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    heads, dim, kv_heads = q.shape[1], q.shape[2], k.shape[1]
    n, length = q.shape[0] // batch, k.shape[0] // batch
    query = q.reshape(batch, n, heads, dim).transpose(1, 2)
    key = k.reshape(batch, length, kv_heads, dim).transpose(1, 2)
    value = v.reshape(batch, length, kv_heads, dim).transpose(1, 2)
    visible = None
    if 1 < n != length:  # bottom-right causal: query i sees keys up to i + length - n
        visible = (torch.arange(length, device=q.device)[None, :]
                   <= torch.arange(n, device=q.device)[:, None] + (length - n))
    attended, _ = sdpa_attention_forward(_Module(heads // kv_heads), query, key, value, visible,
                                         dropout=0.0, scaling=sm_scale, is_causal=True)
    out.view(batch, n, heads, dim).copy_(attended)
    if n > length:  # the first n - length queries see no key: output 0 (sdpa gives NaN)
        out.view(batch, n, heads, dim)[:, :n - length].zero_()
    _lse(query, key, batch, sm_scale, lse.view(batch, n, heads))


def _lse(query: torch.Tensor, key: torch.Tensor, batch: int, sm_scale: float,
         lse: torch.Tensor) -> None:
    """Base-2 log-sum-exp of the masked, scaled logits into lse [batch, n, heads]."""
    heads, n, dim = query.shape[1:]
    kv_heads, length = key.shape[1], key.shape[2]
    group = heads // kv_heads
    keys = key.float().transpose(-1, -2).unsqueeze(2)  # [batch, kv_heads, 1, dim, length]
    step = max(1, _LOGITS // (batch * heads * length))
    for start in range(0, n, step):
        stop = min(start + step, n)
        rows = query[:, :, start:stop].float().view(batch, kv_heads, group, stop - start, dim)
        logits = torch.matmul(rows, keys).mul_(sm_scale)  # [batch, kv, group, rows, length]
        limit = torch.arange(start, stop, device=query.device) + (length - n)
        hidden = torch.arange(length, device=query.device)[None, :] > limit[:, None]
        logits.masked_fill_(hidden, -math.inf)
        chunk = torch.logsumexp(logits, dim=-1).div_(math.log(2.0))
        lse[:, start:stop] = chunk.view(batch, heads, stop - start).transpose(1, 2)
