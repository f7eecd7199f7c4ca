"""RMSNorm and fused add + RMSNorm in plain PyTorch (runs on CPU and GPU)."""

import torch
import torch.nn.functional as F

# Arguments of any stride and storage offset are handled here (see dispatch.contract).
FIB_ANY_LAYOUT = True

FIB_SOLUTIONS = [
    {
        "variant": "torch",
        "families": ["rmsnorm", "fused_add_rmsnorm"],
        "entry_points": {
            "rmsnorm_h*_eps1e-5": "rmsnorm_eps1e5",
            "rmsnorm_h*_eps1e-6": "rmsnorm_eps1e6",
            "rmsnorm_h*_eps*": None,  # no function for other eps values
            "fused_add_rmsnorm_h*_eps1e-5": "fused_add_rmsnorm_eps1e5",
            "fused_add_rmsnorm_h*_eps1e-6": "fused_add_rmsnorm_eps1e6",
            "fused_add_rmsnorm_h*_eps*": None,
            "rmsnorm_h4096": "rmsnorm_eps1e5",
            "fused_add_rmsnorm_h4096": "fused_add_rmsnorm_eps1e5",
            "rmsnorm_h*": "rmsnorm_eps1e6",
            "fused_add_rmsnorm_h*": "fused_add_rmsnorm_eps1e6",
        },
        "dtypes": ["bfloat16", "float16", "float32"],
        "language": "python",
        "destination_passing_style": False,
        "target_hardware": ["any"],
        "dependencies": ["torch"],
        "description": (
            "Plain PyTorch via torch.nn.functional.rms_norm (one fused kernel on CUDA for the "
            "plain norm; the residual add runs in float32 first). Runs anywhere; on CPU it is "
            "the fastest formulation for small batches, on GPU it pays several launches for the "
            "fused add."
        ),
    },
]


def _rmsnorm(hidden_states: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Any float dtype in and out; rms_norm accumulates in float32 and rounds once."""
    return F.rms_norm(hidden_states, (hidden_states.shape[-1],), weight, eps)


def _fused_add_rmsnorm(
    hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> torch.Tensor:
    """The sum stays in float32, as the definition asks."""
    x = hidden_states.to(torch.float32, copy=True).add_(residual)  # never the input
    return F.rms_norm(x, (x.shape[-1],), weight.float(), eps).to(hidden_states.dtype)


@torch.no_grad()
def rmsnorm_eps1e5(hidden_states: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return _rmsnorm(hidden_states, weight, 1e-5)


@torch.no_grad()
def rmsnorm_eps1e6(hidden_states: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return _rmsnorm(hidden_states, weight, 1e-6)


@torch.no_grad()
def fused_add_rmsnorm_eps1e5(
    hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    return _fused_add_rmsnorm(hidden_states, residual, weight, 1e-5)


@torch.no_grad()
def fused_add_rmsnorm_eps1e6(
    hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    return _fused_add_rmsnorm(hidden_states, residual, weight, 1e-6)
