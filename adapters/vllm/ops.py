"""vLLM's RMSNorm and SiluAndMul with the calls a definition covers routed to fib-runtime.

The replacements subclass vLLM's own classes and are registered under their in-tree names
with `CustomOp.register_oot`, so every `RMSNorm(...)` / `SiluAndMul()` a model builds is one
of these. They override both `forward_native` (what runs under vLLM's default Inductor
config, custom ops disabled) and `forward_cuda`. Routing is decided once per module from its
constants (hidden size, eps, weight dtype, `has_weight`, `variance_size_override`, batch
invariance); per call only the activation's dtype and rank are checked. A routed call goes to
the definition's `fib.apply` wrapper, whose fallback is vLLM's own implementation as vLLM runs
it, a module-level function of `originals.py` that retune times as a candidate and dispatch
calls directly where it is the fastest: `vllm.ir.ops.rms_norm` /
`fused_add_rms_norm.maybe_inplace` (what RMSNorm runs), SiluAndMul.forward_native compiled as
vLLM compiles a disabled custom op (forward_native's path, vLLM's default) and
`torch.ops._C.silu_and_mul` (forward_cuda's path, custom ops on).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from fib_runtime.adapters import bridge
from fib_runtime.adapters.vllm import moe, originals
from vllm import envs
from vllm.model_executor.custom_op import CustomOp, op_registry_oot
from vllm.model_executor.layers.activation import SiluAndMul
from vllm.model_executor.layers.layernorm import RMSNorm

from fib_runtime import engine_ops

log = logging.getLogger("fib_runtime.adapters.vllm")
ENGINE = "vllm"
_DTYPE = torch.bfloat16  # the catalogue's definitions are bfloat16
_lock = threading.Lock()


# -- routing ------------------------------------------------------------------------------

def _norm_wrappers(norm: RMSNorm) -> tuple[Callable[..., Any] | None, Callable[..., Any] | None]:
    """(plain, fused) wrappers for this module's constants, None where nothing routes."""
    if (not norm.has_weight or norm.variance_size_override is not None
            or norm.weight.dtype != _DTYPE or envs.VLLM_BATCH_INVARIANT):
        return None, None
    eps, hidden = float(norm.variance_epsilon), int(norm.hidden_size)
    plain = engine_ops.definition_for("rmsnorm", hidden, eps, "bfloat16")
    fused = engine_ops.definition_for("fused_add_rmsnorm_residual", hidden, eps, "bfloat16")
    made = (bridge.wrapper(ENGINE, plain, getattr(originals, plain)) if plain else None,
            bridge.wrapper(ENGINE, fused, getattr(originals, fused)) if fused else None)
    bridge.start()
    return (made[0] if plain and bridge.served(plain) else None,
            made[1] if fused and bridge.served(fused) else None)


class FibRMSNorm(RMSNorm):
    """vLLM's RMSNorm; calls a definition covers go through fib-runtime."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fib_plain, self._fib_fused = _norm_wrappers(self)

    def _fib_route(self, x: torch.Tensor, residual: torch.Tensor | None) -> Any:
        """The routed result, or None when this call is not covered."""
        if x.dtype != _DTYPE or x.dim() != 2:
            return None
        if residual is None:
            fn = self._fib_plain
            return None if fn is None else fn(x, self.weight.data)
        fn = self._fib_fused
        if fn is None or residual.dtype != _DTYPE or residual.dim() != 2:
            return None
        return fn(x, residual, self.weight.data)

    def forward_native(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> Any:
        routed = self._fib_route(x, residual)
        return super().forward_native(x, residual) if routed is None else routed

    def forward_cuda(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> Any:
        routed = self._fib_route(x, residual)
        return super().forward_cuda(x, residual) if routed is None else routed


class FibSiluAndMul(SiluAndMul):
    """vLLM's SiluAndMul; calls a definition covers go through fib-runtime."""

    # gate_up width -> (traced native wrapper, eager cuda wrapper) of a served definition;
    # filled by
    # install(), read-only afterwards (one dict lookup per call, also under torch.compile)
    _fib_by_width: ClassVar[dict[int, tuple[Callable[..., Any], Callable[..., Any]]]] = {}

    def forward_native(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        pair = self._fib_by_width.get(x.shape[-1]) if x.dtype == _DTYPE and x.dim() == 2 \
            else None
        return SiluAndMul.forward_native(x) if pair is None else pair[0](x)

    def forward_cuda(self, x: torch.Tensor) -> torch.Tensor:
        pair = self._fib_by_width.get(x.shape[-1]) if x.dtype == _DTYPE and x.dim() == 2 \
            else None
        if pair is None:
            return super().forward_cuda(x)
        return pair[0](x) if torch.compiler.is_compiling() else pair[1](x)


def _prepare_wrappers() -> None:
    """Make the wrappers of every catalogue norm/activation definition before fib-runtime
    is switched on, so that their torch.ops.fib custom ops exist before vLLM compiles."""
    for name in engine_ops.shipped(["rmsnorm", "fused_add_rmsnorm_residual"]):
        if engine_ops.shipped_eps(name) is not None:
            bridge.wrapper(ENGINE, name, getattr(originals, name))
    for name in engine_ops.shipped(["silu_and_mul"]):
        bridge.wrapper(ENGINE, name, getattr(originals, name))


def _served_activations() -> None:
    for name in engine_ops.shipped(["silu_and_mul"]):
        if bridge.served(name):
            width = 2 * engine_ops.shipped_size(name)
            FibSiluAndMul._fib_by_width[width] = (
                bridge.wrapper(ENGINE, name, getattr(originals, name)),
                bridge.eager_site(name, getattr(originals, name + "__cuda")).call)


def install() -> None:
    """Register the replacements (once per process; a second call changes nothing)."""
    with _lock:
        for base, replacement in ((RMSNorm, FibRMSNorm), (SiluAndMul, FibSiluAndMul)):
            current = op_registry_oot.get(base.__name__)
            if current is replacement:
                continue
            if current is not None:
                log.warning("vLLM's %s is already replaced by %s; fib-runtime leaves it",
                            base.__name__, current.__qualname__)
                continue
            CustomOp.register_oot(replacement, name=base.__name__)
        _prepare_wrappers()
        moe.install()
        bridge.start()
        _served_activations()
