"""Multi-head latent attention (decode and causal prefill, one token a page) in plain PyTorch:
the baseline that runs anywhere."""

import math

import torch

# Arguments of any stride and storage offset are handled here (see dispatch.contract).
FIB_ANY_LAYOUT = True

FIB_SOLUTIONS = [
    {
        "variant": "torch_mla",
        "entry_points": {
            "mla_paged_decode_h16_ckv512_kpe64_ps1": "run_decode",
            "mla_paged_prefill_causal_h16_ckv512_kpe64_ps1": "run_prefill",
        },
        "language": "python",
        "destination_passing_style": False,
        "target_hardware": ["any"],
        "dependencies": ["torch"],
        "description": (
            "Decode: every sequence's tokens gathered into a batch padded to the longest, "
            "masked float32 matmuls for all sequences at once (one host sync for the longest "
            "length). Prefill: one host sync for the offsets, then per sequence float32 "
            "matmuls with the causal mask, in query chunks of 256. Baseline."
        ),
    },
]


def _softmax_out(logits: torch.Tensor, values: torch.Tensor,
                 dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax(logits) @ values in dtype, base-2 lse); fully masked rows: zero, -inf."""
    lse = torch.logsumexp(logits, dim=-1)
    shift = torch.where(torch.isfinite(lse), lse, 0.0)
    weights = torch.exp(logits - shift[..., None])
    return torch.matmul(weights, values).to(dtype), lse / math.log(2.0)


@torch.no_grad()
def run_decode(q_nope: torch.Tensor, q_pe: torch.Tensor, ckv_cache: torch.Tensor,
               kpe_cache: torch.Tensor, kv_indptr: torch.Tensor, kv_indices: torch.Tensor,
               sm_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """mla_paged_decode_h16_ckv512_kpe64_ps1: (output, base-2 lse)."""
    batch, heads, _ = q_nope.shape
    lengths = (kv_indptr[1:] - kv_indptr[:-1]).long()
    longest = int(lengths.max().item()) if batch else 0
    if longest == 0:
        lse = torch.full((batch, heads), -math.inf, dtype=torch.float32, device=q_nope.device)
        return torch.zeros_like(q_nope), lse
    positions = torch.arange(longest, device=q_nope.device)
    valid = positions[None, :] < lengths[:, None]
    slots = (kv_indptr[:-1, None].long() + positions[None, :]).clamp_(
        max=max(kv_indices.shape[0] - 1, 0))
    pages = torch.where(valid, kv_indices[slots].long(), 0)
    ckv = ckv_cache[:, 0][pages].float()  # [batch, longest, 512]
    kpe = kpe_cache[:, 0][pages].float()
    logits = (torch.matmul(q_nope.float(), ckv.transpose(1, 2))
              + torch.matmul(q_pe.float(), kpe.transpose(1, 2))) * float(sm_scale)
    logits.masked_fill_(~valid[:, None, :], -math.inf)
    return _softmax_out(logits, ckv, q_nope.dtype)


@torch.no_grad()
def run_prefill(q_nope: torch.Tensor, q_pe: torch.Tensor, ckv_cache: torch.Tensor,
                kpe_cache: torch.Tensor, qo_indptr: torch.Tensor, kv_indptr: torch.Tensor,
                kv_indices: torch.Tensor, sm_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """mla_paged_prefill_causal_h16_ckv512_kpe64_ps1: (output, base-2 lse)."""
    total_q, heads, _ = q_nope.shape
    output = torch.zeros_like(q_nope, memory_format=torch.contiguous_format)
    lse = torch.full((total_q, heads), -math.inf, dtype=torch.float32, device=q_nope.device)
    qo, kv = qo_indptr.tolist(), kv_indptr.tolist()
    for b in range(len(qo) - 1):
        q0, q1, k0, k1 = qo[b], qo[b + 1], kv[b], kv[b + 1]
        if q0 >= q1 or k0 >= k1:
            continue
        pages = kv_indices[k0:k1].long()
        ckv, kpe = ckv_cache[pages, 0].float(), kpe_cache[pages, 0].float()
        kv_len, n = k1 - k0, q1 - q0
        positions = torch.arange(kv_len, device=q_nope.device)
        for start in range(0, n, 256):
            stop = min(start + 256, n)
            logits = (torch.matmul(q_nope[q0 + start:q0 + stop].float(), ckv.t())
                      + torch.matmul(q_pe[q0 + start:q0 + stop].float(), kpe.t())) * \
                float(sm_scale)  # [rows, heads, kv_len]
            limit = torch.arange(start, stop, device=q_nope.device) + (kv_len - n)
            logits.masked_fill_((positions[None, :] > limit[:, None])[:, None, :], -math.inf)
            out, chunk_lse = _softmax_out(logits, ckv, q_nope.dtype)
            output[q0 + start:q0 + stop] = out
            lse[q0 + start:q0 + stop] = chunk_lse
    return output, lse
