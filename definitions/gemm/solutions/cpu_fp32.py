"""GEMM on CPU through float32: upcast, SGEMM, round once to the input dtype."""

import torch

# Arguments of any stride and storage offset are handled here (see dispatch.contract).
FIB_ANY_LAYOUT = True

FIB_SOLUTIONS = [
    {
        "variant": "cpu_fp32",
        "families": ["gemm"],
        "definitions": ["gemm_n*_k*"],
        "entry_point": "gemm",
        "dtypes": ["bfloat16", "float16", "float32"],
        "language": "python",
        "destination_passing_style": False,
        "target_hardware": ["cpu"],
        "dependencies": ["torch"],
        "description": (
            "CPU only: converts A and B to float32, runs the well-vectorised SGEMM and rounds the "
            "result to the input dtype. Converting B costs a fixed ~20 ms for 4096x4096, so it "
            "loses at decode sizes; on CPUs without native float16 GEMM it wins once M is large "
            "(float32 inputs: the plain SGEMM, no conversion). Measured "
            "crossover (2-core AMD EPYC VM, torch 2.13, benchmarks/results/catalogue_i_cpu.json, "
            "gemm_n4096_k4096): wins from M ~64, 1.5-2x faster at M 256-512."
        ),
    },
]


@torch.no_grad()
def gemm(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    return torch.matmul(A.float(), B.float().t()).to(A.dtype)
