"""vLLM's own implementations with each definition's signature and constants: the engine's
path as an importable candidate (`fib_runtime.adapters.vllm.originals.<name>`).

One module-level function per name, made on first access (`bridge.module_originals`), so
retune in another process imports and times exactly what the plugin's call sites fall back
to, and dispatch calls it directly where it is the fastest:

- `rmsnorm_h{H}(hidden_states, weight)`: `vllm.ir.ops.rms_norm` at the definition's eps
  (what RMSNorm.forward_native and forward_cuda run);
- `fused_add_rmsnorm_residual_h{H}(hidden_states, residual, weight)`:
  `vllm.ir.ops.fused_add_rms_norm.maybe_inplace`;
- `silu_and_mul_i{I}(gate_up)`: `SiluAndMul.forward_native` compiled the way vLLM compiles a
  disabled custom op (`CustomOp.maybe_compile`: `torch.compile(dynamic=True)` with the
  platform's simple compile backend), which is what vLLM runs by default (custom ops off
  under Inductor): the eager forward_native rounds twice where the compiled one rounds once;
- `silu_and_mul_i{I}__cuda(gate_up)`: vLLM's CUDA kernel `torch.ops._C.silu_and_mul` into
  a `torch.empty` output, as `SiluAndMul.forward_cuda` runs it (custom ops on);
- `moe_bf16_topk{k}_e{E}_h{H}_i{I}(hidden_states, topk_weights, topk_ids, w13, w2)`: vLLM's
  Triton `fused_experts` (with its per-device config tables), what an unquantized MoE layer
  runs where vLLM picks its Triton backend (`moe.py` routes only those layers).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from fib_runtime.adapters import bridge

from fib_runtime import engine_ops


@functools.cache
def compiled_silu_and_mul() -> Callable[[torch.Tensor], torch.Tensor]:
    """SiluAndMul.forward_native compiled as vLLM's CustomOp.maybe_compile does."""
    from vllm.model_executor.layers.activation import SiluAndMul
    from vllm.platforms import current_platform

    return torch.compile(SiluAndMul.forward_native, dynamic=True,
                         backend=current_platform.simple_compile_backend)


def _make(name: str) -> Callable[..., Any] | None:
    base, _, variant = name.partition("__")
    if base.startswith("silu_and_mul_i") and variant in ("", "cuda"):
        return _silu_cuda() if variant == "cuda" else _silu_native()
    if base.startswith(engine_ops.MOE_PREFIX) and not variant:
        return _fused_experts() if base in engine_ops.shipped_moe() else None
    if variant or not base.startswith(("rmsnorm_h", "fused_add_rmsnorm_residual_h")):
        return None
    eps = engine_ops.shipped_eps(base)
    if eps is None:
        return None
    from vllm import ir

    if base.startswith("rmsnorm_h"):
        def rms_norm(hidden_states: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
            return ir.ops.rms_norm(hidden_states, weight, eps, None)
        return rms_norm

    def fused_add_rms_norm(hidden_states: torch.Tensor, residual: torch.Tensor,
                           weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return ir.ops.fused_add_rms_norm.maybe_inplace(hidden_states, residual, weight, eps,
                                                       None)
    return fused_add_rms_norm


def _silu_native() -> Callable[..., Any]:
    def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
        return compiled_silu_and_mul()(gate_up)
    return silu_and_mul


def _silu_cuda() -> Callable[..., Any]:
    def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
        out = torch.empty((*gate_up.shape[:-1], gate_up.shape[-1] // 2), dtype=gate_up.dtype,
                          device=gate_up.device)
        torch.ops._C.silu_and_mul(out, gate_up)
        return out
    return silu_and_mul


def _fused_experts() -> Callable[..., Any]:
    def fused_experts(hidden_states: torch.Tensor, topk_weights: torch.Tensor,
                      topk_ids: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor
                      ) -> torch.Tensor:
        from vllm.model_executor.layers.fused_moe.fused_moe import fused_experts as vllm_moe

        return vllm_moe(hidden_states, w13, w2, topk_weights, topk_ids)
    return fused_experts


__getattr__ = bridge.module_originals(__name__, _make)
