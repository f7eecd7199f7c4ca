"""The DeepSeek-V3 FP8 block-scale MoE in PyTorch: routing in float32, then per used local
expert its weights dequantised into bfloat16 and two bfloat16 GEMMs (tensor cores on a GPU)."""

import torch
import torch.nn.functional as F

FIB_SOLUTIONS = [
    {
        "variant": "torch",
        "definitions": ["moe_fp8_block_scale_ds_routing_topk8_ng8_kg4_e32_h7168_i2048"],
        "entry_point": "moe_fp8_ds",
        "language": "python",
        "destination_passing_style": False,
        "target_hardware": ["any"],
        "dependencies": ["torch"],
        "description": (
            "PyTorch: DeepSeek-V3 no-aux routing in float32; per local expert that has tokens, "
            "its FP8 weights times their 128x128 block scales in bfloat16, GEMM1, silu(second "
            "half) * first half in float32, GEMM2, weighted index_add in float32. One host sync "
            "per expert; the weights are dequantised on every call."
        ),
    },
]

BLOCK, GROUPS, KEEP_GROUPS, TOP_K = 128, 8, 4, 8


def _bf16_weights(weights, scales):
    blocks = scales.float().repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)
    return (weights.float() * blocks).to(torch.bfloat16)


@torch.no_grad()
def moe_fp8_ds(routing_logits, routing_bias, hidden_states, hidden_states_scale, gemm1_weights,
               gemm1_weights_scale, gemm2_weights, gemm2_weights_scale, local_expert_offset,
               routed_scaling_factor):
    tokens, experts = routing_logits.shape
    inter = gemm2_weights.shape[2]
    scores = torch.sigmoid(routing_logits.float())
    biased = scores + routing_bias.float()
    best_two = biased.view(tokens, GROUPS, -1).topk(2, dim=-1).values.sum(-1)
    groups = best_two.topk(KEEP_GROUPS, dim=-1).indices
    keep = torch.zeros_like(best_two, dtype=torch.bool).scatter_(1, groups, True)
    keep = keep.repeat_interleave(experts // GROUPS, 1)
    chosen = biased.masked_fill(~keep, float("-inf")).topk(TOP_K, dim=-1).indices
    weights = scores.gather(1, chosen)
    weights = weights / (weights.sum(-1, keepdim=True) + 1e-20) * float(routed_scaling_factor)
    x = (hidden_states.float() * hidden_states_scale.float().t().repeat_interleave(BLOCK, 1)
         ).to(torch.bfloat16)
    out = torch.zeros(tokens, x.shape[1], dtype=torch.float32, device=x.device)
    for local in range(gemm1_weights.shape[0]):
        rows, slots = (chosen == int(local_expert_offset) + local).nonzero(as_tuple=True)
        if rows.numel() == 0:
            continue
        up_gate = (x[rows] @ _bf16_weights(gemm1_weights[local], gemm1_weights_scale[local]).t()
                   ).float()
        act = (F.silu(up_gate[:, inter:]) * up_gate[:, :inter]).to(torch.bfloat16)
        y = act @ _bf16_weights(gemm2_weights[local], gemm2_weights_scale[local]).t()
        out.index_add_(0, rows, y.float() * weights[rows, slots].unsqueeze(1))
    return out.to(torch.bfloat16)
