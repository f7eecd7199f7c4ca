"""SiLU-and-multiply through FlashInfer's CUDA kernel (flashinfer is imported on first call)."""

import torch

FIB_SOLUTIONS = [
    {
        "variant": "flashinfer",
        "families": ["silu_and_mul"],
        "definitions": ["silu_and_mul_i*"],
        "entry_point": "silu_and_mul",
        "dtypes": ["bfloat16", "float16"],
        "language": "python",
        "destination_passing_style": False,
        "target_hardware": ["nvidia"],
        "dependencies": ["flashinfer", "torch"],
        "description": (
            "flashinfer.activation.silu_and_mul: one vectorised CUDA kernel that allocates its "
            "output; no copies. Strong at large token counts."
        ),
    },
]


@torch.no_grad()
def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    if gate_up.numel() == 0:  # FlashInfer's kernel rejects an empty batch (an idle engine rank)
        return gate_up.new_empty(*gate_up.shape[:-1], gate_up.shape[-1] // 2)
    import flashinfer.activation

    return flashinfer.activation.silu_and_mul(gate_up)
