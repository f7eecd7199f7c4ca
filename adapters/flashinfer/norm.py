"""flashinfer.norm.rmsnorm / fused_add_rmsnorm and flashinfer.activation.silu_and_mul, with
the calls a definition covers routed to fib-runtime and their contracts kept:

- `rmsnorm(input, weight, eps, out=None)` returns the result, written into `out` when given;
- `fused_add_rmsnorm(input, residual, weight, eps)` updates both tensors in place
  (residual += input; input = rmsnorm(residual)) and returns None: the engine-contract
  definition fused_add_rmsnorm_residual_h* is called destination-passing with its outputs
  aliasing its inputs, one kernel with the Triton solution;
- `silu_and_mul(input, out=None)` likewise.

A call is covered when its hidden size, eps and dtype match a catalogue definition that
fib-runtime serves, and its tensors are 2-D with unit column stride. Everything else goes to
FlashInfer unchanged and is counted by reason (`fib_runtime.adapters.flashinfer.stats()`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from fib_runtime.adapters import routing
from fib_runtime.adapters.flashinfer.counters import guard, routed, unchanged

DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}
# (family, size, eps, dtype) -> the served wrapper, or the reason the call is not covered
_routes: dict[tuple[str, int, float | None, torch.dtype], Callable[..., Any] | str] = {}


def _row_major(*tensors: torch.Tensor) -> bool:
    return all(t.dim() == 2 and t.stride(1) == 1 for t in tensors)


def _route(family: str, size: int, eps: float | None, dtype: torch.dtype,
           fallback: Callable[[float | None], Callable[..., Any]]) -> Callable[..., Any] | str:
    key = (family, size, eps, dtype)
    found = _routes.get(key)
    if found is None:
        name = routing.definition_for(family, size, eps, DTYPE_NAMES.get(dtype, str(dtype)))
        if name is None:
            found = "no_definition"
        else:
            fn = routing.eager_wrapper(name, fallback(eps))
            routing.start()
            found = fn if routing.served(name) else "not_served"
        _routes[key] = found
    return found


def wrap(originals: dict[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """The replacements of FlashInfer's rmsnorm, fused_add_rmsnorm and silu_and_mul."""
    rmsnorm0 = originals["rmsnorm"]
    fused0 = originals["fused_add_rmsnorm"]
    silu0 = originals["silu_and_mul"]

    def rms_fallback(eps: float | None) -> Callable[..., Any]:
        def flashinfer_rmsnorm(hidden_states: torch.Tensor, weight: torch.Tensor,
                               output: torch.Tensor | None = None) -> torch.Tensor:
            return rmsnorm0(hidden_states, weight, eps, out=output)
        return flashinfer_rmsnorm

    def fused_fallback(eps: float | None) -> Callable[..., Any]:
        def flashinfer_fused_add_rmsnorm(hidden_states: torch.Tensor, residual: torch.Tensor,
                                         weight: torch.Tensor,
                                         output: torch.Tensor | None = None,
                                         residual_out: torch.Tensor | None = None) -> Any:
            x = hidden_states if output is hidden_states else hidden_states.clone()
            r = residual if residual_out is residual else residual.clone()
            fused0(x, r, weight, eps)
            if output is None:
                return x, r
            if output is not x:
                output.copy_(x)
            if residual_out is not r:
                residual_out.copy_(r)
            return output, residual_out
        return flashinfer_fused_add_rmsnorm

    def silu_fallback(eps: float | None) -> Callable[..., Any]:
        def flashinfer_silu_and_mul(gate_up: torch.Tensor,
                                    output: torch.Tensor | None = None) -> torch.Tensor:
            return silu0(gate_up, out=output)
        return flashinfer_silu_and_mul

    def rmsnorm(input: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6,
                out: torch.Tensor | None = None, enable_pdl: bool | None = None) -> torch.Tensor:
        if not guard.active:
            fn = _route("rmsnorm", input.shape[-1], float(eps), input.dtype, rms_fallback)
            if isinstance(fn, str):
                unchanged["rmsnorm", fn] += 1
            elif weight.dtype != input.dtype or not _row_major(input) or (
                    out is not None and (out.dtype != input.dtype or not _row_major(out))):
                unchanged["rmsnorm", "layout_or_dtype"] += 1
            else:
                routed["rmsnorm"] += 1
                guard.active = True
                try:
                    if out is None:
                        return fn(input, weight)
                    fn(input, weight, out)
                    return out
                finally:
                    guard.active = False
        return rmsnorm0(input, weight, eps, out=out, enable_pdl=enable_pdl)

    def fused_add_rmsnorm(input: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                          eps: float = 1e-6, enable_pdl: bool | None = None) -> None:
        if not guard.active:
            fn = _route("fused_add_rmsnorm_residual", input.shape[-1], float(eps), input.dtype,
                        fused_fallback)
            if isinstance(fn, str):
                unchanged["fused_add_rmsnorm", fn] += 1
            elif residual.dtype != input.dtype or weight.dtype != input.dtype or \
                    not _row_major(input, residual):
                unchanged["fused_add_rmsnorm", "layout_or_dtype"] += 1
            else:
                routed["fused_add_rmsnorm"] += 1
                guard.active = True
                try:
                    fn(input, residual, weight, input, residual)  # in place: outputs alias
                    return None
                finally:
                    guard.active = False
        fused0(input, residual, weight, eps, enable_pdl=enable_pdl)
        return None

    def silu_and_mul(input: torch.Tensor, out: torch.Tensor | None = None,
                     enable_pdl: bool | None = None) -> torch.Tensor:
        if not guard.active:
            width = input.shape[-1]
            fn: Callable[..., Any] | str = "no_definition"
            if width % 2 == 0:
                fn = _route("silu_and_mul", width // 2, None, input.dtype, silu_fallback)
            if isinstance(fn, str):
                unchanged["silu_and_mul", fn] += 1
            elif not _row_major(input) or (out is not None and (
                    out.dtype != input.dtype or not _row_major(out))):
                unchanged["silu_and_mul", "layout_or_dtype"] += 1
            else:
                routed["silu_and_mul"] += 1
                guard.active = True
                try:
                    if out is None:
                        return fn(input)
                    fn(input, out)
                    return out
                finally:
                    guard.active = False
        return silu0(input, out=out, enable_pdl=enable_pdl)

    return {"rmsnorm": rmsnorm, "fused_add_rmsnorm": fused_add_rmsnorm,
            "silu_and_mul": silu_and_mul}


def clear_routes() -> None:
    """Forget cached routing decisions (after fib-runtime was switched on or off)."""
    _routes.clear()
