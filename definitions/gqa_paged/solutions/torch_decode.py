"""Paged GQA decode attention in plain PyTorch: the baseline that runs anywhere."""

import math

import torch

# Arguments of any stride and storage offset are handled here (see dispatch.contract).
FIB_ANY_LAYOUT = True

FIB_SOLUTIONS = [
    {
        "variant": "torch_padded",
        "definitions": [
            "gqa_paged_decode_h32_kv8_d128_ps1",
            "gqa_paged_decode_h32_kv4_d128_ps1",
        ],
        "entry_point": "run",
        "language": "python",
        "destination_passing_style": False,
        "target_hardware": ["any"],
        "dependencies": ["torch"],
        "description": (
            "Gathers every sequence's pages into a batch padded to the longest sequence, then "
            "runs masked grouped attention with float32 matmuls, vectorised over the batch (one "
            "host sync to read the longest length). Baseline; memory grows with "
            "batch x longest length, so it loses wherever lengths are long or uneven."
        ),
    },
]


@torch.no_grad()
def run(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    sm_scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (output [batch, qo_heads, head_dim] in q's dtype, base-2 lse [batch, qo_heads])."""
    batch, num_qo_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    group = num_qo_heads // num_kv_heads
    lengths = (kv_indptr[1:] - kv_indptr[:-1]).long()
    max_len = int(lengths.max().item()) if batch else 0
    if max_len == 0:
        lse = torch.full((batch, num_qo_heads), -math.inf, dtype=torch.float32, device=q.device)
        return torch.zeros_like(q), lse

    positions = torch.arange(max_len, device=q.device)
    valid = positions[None, :] < lengths[:, None]  # [batch, max_len]
    flat = (kv_indptr[:-1, None].long() + positions[None, :]).clamp_(max=kv_indices.shape[0] - 1)
    pages = torch.where(valid, kv_indices[flat].long(), 0)
    keys = k_cache[:, 0][pages].float().permute(0, 2, 3, 1)  # [batch, kv_heads, head_dim, len]
    values = v_cache[:, 0][pages].float().transpose(1, 2)  # [batch, kv_heads, len, head_dim]

    queries = q.float().view(batch, num_kv_heads, group, head_dim)
    logits = torch.matmul(queries, keys) * float(sm_scale)  # [batch, kv_heads, group, len]
    logits.masked_fill_(~valid[:, None, None, :], -math.inf)
    lse = torch.logsumexp(logits, dim=-1)  # -inf for empty sequences
    shift = torch.where(torch.isfinite(lse), lse, 0.0)
    weights = torch.exp(logits - shift[..., None])  # zero where masked
    output = torch.matmul(weights, values).view(batch, num_qo_heads, head_dim)
    return output.to(q.dtype), (lse / math.log(2.0)).view(batch, num_qo_heads)
