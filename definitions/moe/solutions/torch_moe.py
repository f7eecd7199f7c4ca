"""The bfloat16 MoE experts in PyTorch: tokens grouped by expert, two GEMMs per expert."""

import torch
import torch.nn.functional as F

FIB_SOLUTIONS = [
    {
        "variant": "torch",
        "definitions": ["moe_bf16_topk*"],
        "entry_point": "moe_experts",
        "language": "python",
        "destination_passing_style": False,
        "target_hardware": ["any"],
        "dependencies": ["torch"],
        "description": (
            "PyTorch: (token, slot) pairs sorted by expert, then per expert with tokens one "
            "gate-up GEMM, SiLU-and-mul in float32, one down GEMM scaled by the routing weight, "
            "index_add into a float32 output. GEMMs in the weights' dtype (cuBLAS on a GPU); "
            "one host sync for the per-expert counts, a Python loop over the used experts."
        ),
    },
]


@torch.no_grad()
def moe_experts(hidden_states, topk_weights, topk_ids, w13, w2):
    tokens, top_k = topk_ids.shape
    inter = w2.shape[2]
    out = torch.zeros(tokens, hidden_states.shape[1], dtype=torch.float32,
                      device=hidden_states.device)
    flat = topk_ids.reshape(-1).to(torch.int64)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=w13.shape[0]).tolist()
    rows = order // top_k
    weights = topk_weights.reshape(-1)[order].to(torch.float32).unsqueeze(1)
    start = 0
    for expert, count in enumerate(counts):
        if not count:
            continue
        chosen = rows[start:start + count]
        gate_up = (hidden_states[chosen] @ w13[expert].t()).float()
        act = (F.silu(gate_up[:, :inter]) * gate_up[:, inter:]).to(hidden_states.dtype)
        out.index_add_(0, chosen, (act @ w2[expert].t()).float() * weights[start:start + count])
        start += count
    return out.to(hidden_states.dtype)
