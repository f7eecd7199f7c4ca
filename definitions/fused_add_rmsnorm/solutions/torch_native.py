"""The engines' fused add + RMSNorm (normalised output and new residual) in plain PyTorch."""

import torch
import torch.nn.functional as F

# Arguments of any stride and storage offset are handled here (see dispatch.contract).
FIB_ANY_LAYOUT = True

FIB_SOLUTIONS = [
    {
        "variant": "torch",
        "entry_points": {
            "fused_add_rmsnorm_residual_h4096": "fused_add_rmsnorm_residual_eps1e5",
            "fused_add_rmsnorm_residual_h*": "fused_add_rmsnorm_residual_eps1e6",
        },
        "dtypes": ["bfloat16", "float16", "float32"],
        "language": "python",
        "destination_passing_style": False,
        "target_hardware": ["any"],
        "dependencies": ["torch"],
        "description": (
            "Plain PyTorch: the float32 sum, rounded to the input dtype as the new residual, and "
            "torch.nn.functional.rms_norm on the float32 sum. Runs anywhere (the CPU baseline); "
            "on GPU it pays several launches and a float32 temporary."
        ),
    },
]


def _fused(hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
           eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    x = hidden_states.to(torch.float32, copy=True).add_(residual)  # never the input
    output = F.rms_norm(x, (x.shape[-1],), weight.float(), eps).to(hidden_states.dtype)
    return output, x.to(residual.dtype)


@torch.no_grad()
def fused_add_rmsnorm_residual_eps1e5(
    hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    return _fused(hidden_states, residual, weight, 1e-5)


@torch.no_grad()
def fused_add_rmsnorm_residual_eps1e6(
    hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    return _fused(hidden_states, residual, weight, 1e-6)
