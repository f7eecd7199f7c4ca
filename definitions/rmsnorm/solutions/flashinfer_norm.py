"""RMSNorm through FlashInfer's CUDA kernels (flashinfer is imported on first call)."""

import torch

FIB_SOLUTIONS = [
    {
        "variant": "flashinfer",
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
        "dtypes": ["bfloat16", "float16"],
        "language": "python",
        "destination_passing_style": False,
        "target_hardware": ["nvidia"],
        "dependencies": ["flashinfer", "torch"],
        "description": (
            "flashinfer.norm.rmsnorm / flashinfer.norm.fused_add_rmsnorm. The fused kernel "
            "works in place (residual += hidden_states, hidden_states = norm), so this wrapper "
            "first copies both inputs: two extra copy launches that cost at small batches and "
            "extra traffic at large ones. The plain norm needs no copy."
        ),
    },
]


@torch.no_grad()
def _rmsnorm(hidden_states: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if hidden_states.numel() == 0:  # FlashInfer's kernels reject an empty batch
        return torch.empty_like(hidden_states)
    import flashinfer.norm

    return flashinfer.norm.rmsnorm(hidden_states, weight, eps)


@torch.no_grad()
def _fused_add_rmsnorm(
    hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> torch.Tensor:
    if hidden_states.numel() == 0:
        return torch.empty_like(hidden_states)
    import flashinfer.norm

    out = hidden_states.clone()
    flashinfer.norm.fused_add_rmsnorm(out, residual.clone(), weight, eps)
    return out


def rmsnorm_eps1e5(hidden_states: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return _rmsnorm(hidden_states, weight, 1e-5)


def rmsnorm_eps1e6(hidden_states: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return _rmsnorm(hidden_states, weight, 1e-6)


def fused_add_rmsnorm_eps1e5(
    hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    return _fused_add_rmsnorm(hidden_states, residual, weight, 1e-5)


def fused_add_rmsnorm_eps1e6(
    hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    return _fused_add_rmsnorm(hidden_states, residual, weight, 1e-6)
