"""GEMM C = A @ B^T with torch.matmul (cuBLAS on GPU, oneDNN/ATen on CPU)."""

import torch

# Arguments of any stride and storage offset are handled here (see dispatch.contract).
FIB_ANY_LAYOUT = True

FIB_SOLUTIONS = [
    {
        "variant": "torch",
        "families": ["gemm"],
        "definitions": ["gemm_n*_k*"],
        "entry_point": "gemm",
        "dtypes": ["bfloat16", "float16", "float32"],
        "language": "python",
        "destination_passing_style": False,
        "target_hardware": ["any"],
        "dependencies": ["torch"],
        "description": (
            "torch.matmul(A, B.t()): cuBLAS with its own heuristics on GPU (the bar for prefill-"
            "sized M), ATen's float16/bfloat16 GEMM on CPU, which is competitive only for very "
            "small M there."
        ),
    },
]


@torch.no_grad()
def gemm(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    return torch.matmul(A, B.t())
