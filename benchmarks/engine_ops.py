"""What an engine writes for the ops of bench_choice, decorated with `fib.apply`.

Each function is the engine's own code (HF-style RMSNorm in torch, `F.silu(x[..., :d]) *
x[..., d:]`, `F.linear`), defined at module level in an importable module, so retune can
time it as the original candidate and dispatch can serve it where it is fastest.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import fib_runtime as fib

EPS = 1e-5


@fib.apply("rmsnorm_h4096")
def rmsnorm_h4096(hidden_states: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    x = hidden_states.float()
    variance = x.pow(2).mean(-1, keepdim=True)
    return (x * torch.rsqrt(variance + EPS) * weight.float()).to(hidden_states.dtype)


@fib.apply("fused_add_rmsnorm_h4096")
def fused_add_rmsnorm_h4096(hidden_states: torch.Tensor, residual: torch.Tensor,
                            weight: torch.Tensor) -> torch.Tensor:
    x = hidden_states.float() + residual.float()
    variance = x.pow(2).mean(-1, keepdim=True)
    return (x * torch.rsqrt(variance + EPS) * weight.float()).to(hidden_states.dtype)


@fib.apply("silu_and_mul_i14336")
def silu_and_mul_i14336(gate_up: torch.Tensor) -> torch.Tensor:
    d = gate_up.shape[-1] // 2
    return F.silu(gate_up[..., :d]) * gate_up[..., d:]


# The GEMMs: C = A @ B^T is nn.Linear's own function.
gemm_n4096_k4096 = fib.apply("gemm_n4096_k4096")(F.linear)
gemm_n6144_k4096 = fib.apply("gemm_n6144_k4096")(F.linear)
gemm_n28672_k4096 = fib.apply("gemm_n28672_k4096")(F.linear)
gemm_n4096_k14336 = fib.apply("gemm_n4096_k14336")(F.linear)

OPS = {"rmsnorm_h4096": rmsnorm_h4096, "fused_add_rmsnorm_h4096": fused_add_rmsnorm_h4096,
       "silu_and_mul_i14336": silu_and_mul_i14336, "gemm_n4096_k4096": gemm_n4096_k4096,
       "gemm_n6144_k4096": gemm_n6144_k4096, "gemm_n28672_k4096": gemm_n28672_k4096,
       "gemm_n4096_k14336": gemm_n4096_k14336}
