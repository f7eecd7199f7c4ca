"""flashinfer.norm.rmsnorm / fused_add_rmsnorm and flashinfer.activation.silu_and_mul, with
the calls a definition covers routed to fib-runtime and their contracts kept:

- `rmsnorm(input, weight, eps, out=None)` returns the result, written into `out` when given;
- `fused_add_rmsnorm(input, residual, weight, eps)` updates both tensors in place
  (residual += input; input = rmsnorm(residual)) and returns None: the engine-contract
  definition fused_add_rmsnorm_residual_h* is called destination-passing with its outputs
  aliasing its inputs, one kernel with the Triton solution;
- `silu_and_mul(input, out=None)` likewise.

A call is covered when its hidden size, eps and dtype match a catalogue definition that
fib-runtime may serve (the site then asks dispatch; with dispatch off or the definition not in
its database it calls FlashInfer's own function), and its tensors are 2-D with unit column
stride. Everything else goes to FlashInfer unchanged and is counted by reason
(`fib_runtime.adapters.flashinfer.stats()`).

A covered call goes to a call site of its own (`bridge.eager_site`) whose fallback is the
definition's original in `originals.py`: FlashInfer's own function at the definition's
constants, importable, so retune times it and dispatch calls it directly where it is the
fastest. Per call the replacement does one dict lookup for the route, a few attribute reads
for the contract, and the site's call: nothing is allocated, no wrapper frame is added.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from fib_runtime.adapters import bridge
from fib_runtime.adapters.flashinfer import originals
from fib_runtime.adapters.flashinfer.counters import norm_busy, routed, unchanged

from fib_runtime import engine_ops

if TYPE_CHECKING:
    from fib_runtime.dispatch.sites import Site

DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}
# family -> (size, eps, dtype) -> the definition's call site, or why the call is not covered
_routes: dict[str, dict[tuple[int, float | None, torch.dtype], Site | str]] = {
    "rmsnorm": {}, "fused_add_rmsnorm_residual": {}, "silu_and_mul": {}}


def _route(family: str, size: int, eps: float | None, dtype: torch.dtype) -> Site | str:
    """The call site for a call's constants (made once per constants), or why there is none."""
    routes = _routes[family]
    found = routes.get((size, eps, dtype))
    if found is None:
        name = engine_ops.definition_for(family, size, eps, DTYPE_NAMES.get(dtype, str(dtype)))
        if name is None:
            found = "no_definition"
        else:  # whether fib-runtime serves it is the site's business: off, it calls FlashInfer
            bridge.start()
            found = bridge.eager_site(name, getattr(originals, name))
        routes[size, eps, dtype] = found
    return found


def wrap(originals_: dict[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """The replacements of FlashInfer's rmsnorm, fused_add_rmsnorm and silu_and_mul."""
    rmsnorm0 = originals_["rmsnorm"]
    fused0 = originals_["fused_add_rmsnorm"]
    silu0 = originals_["silu_and_mul"]
    busy = norm_busy
    norms, fused_norms, activations = \
        _routes["rmsnorm"], _routes["fused_add_rmsnorm_residual"], _routes["silu_and_mul"]
    counts = routed  # reset() puts new counters in it

    # The per-call path of every routed call (benchmarks/bench_adapter_cost.py): each tensor
    # property costs ~0.1 us on the host, so only what the route and the site cannot tell is
    # read here: the route's constants, 2-D, and unit column stride (FlashInfer's own
    # requirement; a column-major call goes to FlashInfer unchanged, as before). The dtypes
    # of the other tensors are the contract's business at the site (dispatch.contract).
    # Where the site would only call FlashInfer's own function (`direct`), the call goes
    # there at once, unchecked and uncounted.
    def rmsnorm(input: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6,
                out: torch.Tensor | None = None, enable_pdl: bool | None = None) -> torch.Tensor:
        if not busy[0]:
            site = norms.get((input.shape[-1], eps, input.dtype)) or \
                _route("rmsnorm", input.shape[-1], float(eps), input.dtype)
            if site.__class__ is str:
                unchanged["rmsnorm", site] += 1
            elif site.direct:  # the site would only call FlashInfer's own function
                pass
            elif input.ndim != 2 or not (input.is_contiguous() or input.stride(1) == 1) or (
                    out is not None and (out.ndim != 2 or not (
                        out.is_contiguous() or out.stride(1) == 1))):
                unchanged["rmsnorm", "layout"] += 1
            else:
                next(counts["rmsnorm"])
                busy[0] = True
                try:
                    if out is None:
                        return site.call(input, weight)
                    site.call(input, weight, out)  # destination-passing: the result is `out`
                    return out
                finally:
                    busy[0] = False
        return rmsnorm0(input, weight, eps, out=out, enable_pdl=enable_pdl)

    def fused_add_rmsnorm(input: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                          eps: float = 1e-6, enable_pdl: bool | None = None) -> None:
        if not busy[0]:
            site = fused_norms.get((input.shape[-1], eps, input.dtype)) or \
                _route("fused_add_rmsnorm_residual", input.shape[-1], float(eps), input.dtype)
            if site.__class__ is str:
                unchanged["fused_add_rmsnorm", site] += 1
            elif site.direct:  # the site would only call FlashInfer's own function
                pass
            elif input.ndim != 2 or residual.ndim != 2 or \
                    not (input.is_contiguous() or input.stride(1) == 1) or \
                    not (residual.is_contiguous() or residual.stride(1) == 1):
                unchanged["fused_add_rmsnorm", "layout"] += 1
            else:
                next(counts["fused_add_rmsnorm"])
                busy[0] = True
                try:
                    site.call(input, residual, weight, input, residual)  # in place: aliased
                    return None
                finally:
                    busy[0] = False
        fused0(input, residual, weight, eps, enable_pdl=enable_pdl)
        return None

    def silu_and_mul(input: torch.Tensor, out: torch.Tensor | None = None,
                     enable_pdl: bool | None = None) -> torch.Tensor:
        if not busy[0]:
            width = input.shape[-1]
            site = activations.get((width // 2, None, input.dtype)) if width % 2 == 0 \
                else "no_definition"
            if site is None:
                site = _route("silu_and_mul", width // 2, None, input.dtype)
            if site.__class__ is str:
                unchanged["silu_and_mul", site] += 1
            elif site.direct:  # the site would only call FlashInfer's own function
                pass
            elif input.ndim != 2 or not (input.is_contiguous() or input.stride(1) == 1) or (
                    out is not None and (out.ndim != 2 or not (
                        out.is_contiguous() or out.stride(1) == 1))):
                unchanged["silu_and_mul", "layout"] += 1
            else:
                next(counts["silu_and_mul"])
                busy[0] = True
                try:
                    if out is None:
                        return site.call(input)
                    site.call(input, out)
                    return out
                finally:
                    busy[0] = False
        return silu0(input, out=out, enable_pdl=enable_pdl)

    return {"rmsnorm": rmsnorm, "fused_add_rmsnorm": fused_add_rmsnorm,
            "silu_and_mul": silu_and_mul}


def clear_routes() -> None:
    """Forget cached routing decisions (after fib-runtime was switched on or off)."""
    for routes in _routes.values():
        routes.clear()
