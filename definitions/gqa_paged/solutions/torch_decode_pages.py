"""Paged GQA decode attention over pages of several tokens, in plain PyTorch (any device)."""

import math

import torch

# Arguments of any stride and storage offset are handled here (see dispatch.contract).
FIB_ANY_LAYOUT = True

FIB_SOLUTIONS = [
    {
        "variant": "torch_pages",
        "definitions": [
            "gqa_paged_decode_h32_kv8_d128_ps16",
            "gqa_paged_decode_h32_kv4_d128_ps16",
        ],
        "entry_point": "run",
        "language": "python",
        "destination_passing_style": False,
        "target_hardware": ["any"],
        "dependencies": ["torch"],
        "description": (
            "Gathers every sequence's tokens (full pages, then the last page's first "
            "kv_last_page_len tokens) into a batch padded to the longest sequence, then runs "
            "masked grouped attention with float32 matmuls, vectorised over the batch (one host "
            "sync to read the longest length). Baseline for page sizes above one."
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
    kv_last_page_len: torch.Tensor,
    sm_scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (output [batch, qo_heads, head_dim] in q's dtype, base-2 lse [batch, qo_heads])."""
    batch, num_qo_heads, head_dim = q.shape
    page_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    group = num_qo_heads // num_kv_heads
    pages_per_seq = (kv_indptr[1:] - kv_indptr[:-1]).long()
    lengths = torch.where(pages_per_seq > 0,
                          (pages_per_seq - 1) * page_size + kv_last_page_len.long(), 0)
    lengths = torch.minimum(lengths.clamp(min=0), pages_per_seq * page_size)
    max_len = int(lengths.max().item()) if batch else 0
    if max_len == 0:
        lse = torch.full((batch, num_qo_heads), -math.inf, dtype=torch.float32, device=q.device)
        return torch.zeros_like(q), lse

    positions = torch.arange(max_len, device=q.device)
    valid = positions[None, :] < lengths[:, None]  # [batch, max_len]
    slot = (kv_indptr[:-1, None].long() + positions[None, :] // page_size)
    slot = slot.clamp_(max=kv_indices.shape[0] - 1)
    pages = torch.where(valid, kv_indices[slot].long(), 0)
    offsets = torch.where(valid, positions[None, :] % page_size, 0)
    keys = k_cache[pages, offsets].float().permute(0, 2, 3, 1)  # [batch, kv, head_dim, len]
    values = v_cache[pages, offsets].float().transpose(1, 2)  # [batch, kv, len, head_dim]

    queries = q.float().view(batch, num_kv_heads, group, head_dim)
    logits = torch.matmul(queries, keys) * float(sm_scale)  # [batch, kv, group, len]
    logits.masked_fill_(~valid[:, None, None, :], -math.inf)
    lse = torch.logsumexp(logits, dim=-1)  # -inf for empty sequences
    shift = torch.where(torch.isfinite(lse), lse, 0.0)
    weights = torch.exp(logits - shift[..., None])  # zero where masked
    attended = torch.matmul(weights, values)  # [batch, kv, group, head_dim]
    output = attended.reshape(batch, num_qo_heads, head_dim).to(q.dtype)
    return output, (lse / math.log(2.0)).reshape(batch, num_qo_heads)
