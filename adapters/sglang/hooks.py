"""SGLang's RMSNorm and SiluAndMul with the calls a definition covers routed to fib-runtime
(and, through `moe.py`, its unquantized MoE method's expert calls).

Hooks through `HookRegistry.register(target, hook, HookType.AROUND)` on `forward_cuda` and
`forward_native` (`--enable-torch-compile` switches SGLang's ops to forward_native), and
`HookType.AFTER` on `RMSNorm.__init__`, where routing is decided once per module from its
constants (hidden size, eps, weight dtype, has_weight, variance_size_override,
cast_x_before_out_mul, fp32_residual, override_orig_dtype). Per call only the activation's
dtype and rank, `post_residual_addition` and a fused FP8 projection are checked.

Semantics kept: `forward_cuda(x, residual)` updates `x` (normalised) and `residual` (the sum)
in place and returns `(x, residual)`, as SGLang's fused_add_rmsnorm does: the definition is
called destination-passing with its outputs aliasing its inputs (one kernel with the Triton
solution). `forward_native` returns new tensors, as SGLang's does. The fallback of each
definition is SGLang's own method, called on a stand-in holding the module's constants: a
module-level function of `originals.py`, which retune times as a candidate and dispatch calls
directly where it is the fastest.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import torch
from fib_runtime.adapters import bridge
from fib_runtime.adapters.sglang import moe, originals

from fib_runtime import engine_ops

log = logging.getLogger("fib_runtime.adapters.sglang")
ENGINE = "sglang"
_DTYPE = torch.bfloat16
NORM = "sglang.srt.layers.layernorm.RMSNorm"
ACT = "sglang.srt.layers.activation.SiluAndMul"
_lock = threading.Lock()
_installed = False
_originals = originals.saved  # "norm.forward_cuda" ... -> SGLang's own method
_act_by_width: dict[int, tuple[Callable[..., Any], Callable[..., Any]]] = {}


# -- hooks ----------------------------------------------------------------------------------

def _decide(norm: Any) -> None:
    """AFTER RMSNorm.__init__: the module's wrappers, or None where nothing routes."""
    routes: dict[str, Callable[..., Any]] = {}
    weight = getattr(norm, "weight", None)
    if (norm.has_weight and weight is not None and weight.dtype == _DTYPE
            and norm.variance_size_override is None and not norm.cast_x_before_out_mul
            and not norm.fp32_residual and norm.override_orig_dtype is None):
        eps, hidden = float(norm.variance_epsilon), int(norm.hidden_size)  # routed by these
        for family in ("rmsnorm", "fused_add_rmsnorm_residual"):
            name = engine_ops.definition_for(family, hidden, eps, "bfloat16")
            if name is None or not bridge.served(name):
                continue
            routes[f"{family}.forward_native"] = _norm_wrapper(name, "forward_native")
            routes[f"{family}.forward_cuda"] = _norm_wrapper(name, "forward_cuda")
    norm.__dict__["_fib_routes"] = routes


_eager: dict[tuple[str, str], Callable[..., Any]] = {}


def _norm_wrapper(name: str, method: str) -> Callable[..., Any]:
    """forward_native: the traced wrapper (torch.compile sees it); forward_cuda: an eager
    call site whose fallback is SGLang's CUDA path."""
    original = getattr(originals, f"{name}__{method}")
    if method == "forward_native":
        return bridge.wrapper(ENGINE, name, original)
    fn = _eager.get((name, method))
    if fn is None:
        fn = _eager.setdefault((name, method), bridge.eager_site(name, original).call)
    return fn


def _after_init(result: Any, norm: Any, *args: Any, **kwargs: Any) -> None:
    _decide(norm)


def _norm_hook(method: str) -> Callable[..., Any]:
    in_place = method == "forward_cuda"

    def around(original: Callable[..., Any], norm: Any, x: torch.Tensor,
               residual: torch.Tensor | None = None,
               post_residual_addition: torch.Tensor | None = None,
               quant_linear: Any = None) -> Any:
        routes = norm.__dict__.get("_fib_routes")
        variant = method
        if in_place and torch.compiler.is_compiling():
            variant = "forward_native"  # value-returning, the traced wrapper
        if (routes and post_residual_addition is None and quant_linear is None
                and norm.__dict__.get("_quant_linear") is None
                and x.dtype == _DTYPE and x.dim() == 2 and x.numel() > 0):
            if residual is None:
                fn = routes.get(f"rmsnorm.{variant}")
                if fn is not None:
                    return fn(x, norm.weight.data)
            elif residual.dtype == _DTYPE and residual.dim() == 2:
                fn = routes.get(f"fused_add_rmsnorm_residual.{variant}")
                if fn is not None:
                    if variant == "forward_cuda" and x.is_contiguous() \
                            and residual.is_contiguous():
                        fn(x, residual, norm.weight.data, x, residual)
                        return x, residual
                    return fn(x, residual, norm.weight.data)
        return original(norm, x, residual, post_residual_addition, quant_linear)

    return around


def _act_hook(method: str) -> Callable[..., Any]:
    native = method == "forward_native"

    def around(original: Callable[..., Any], act: Any, x: torch.Tensor) -> torch.Tensor:
        pair = _act_by_width.get(x.shape[-1]) if x.dtype == _DTYPE and x.dim() == 2 else None
        if pair is None:
            return original(act, x)
        return pair[0](x) if native or torch.compiler.is_compiling() else pair[1](x)

    return around


def install() -> None:
    """Register the hooks (once per process). SGLang's load_plugins applies them."""
    global _installed
    with _lock:
        from sglang.srt.layers.activation import SiluAndMul
        from sglang.srt.layers.layernorm import RMSNorm
        from sglang.srt.plugins.hook_registry import HookRegistry, HookType

        if not _installed:
            for method in ("forward_cuda", "forward_native"):
                _originals[f"norm.{method}"] = getattr(RMSNorm, method)
                _originals[f"act.{method}"] = getattr(SiluAndMul, method)
        _prepare_wrappers()
        moe.install()
        bridge.start()
        _served_activations()
        if _installed:
            return
        _installed = True
        HookRegistry.register(f"{NORM}.__init__", _after_init, HookType.AFTER)
        for method in ("forward_cuda", "forward_native"):
            HookRegistry.register(f"{NORM}.{method}", _norm_hook(method), HookType.AROUND)
            HookRegistry.register(f"{ACT}.{method}", _act_hook(method), HookType.AROUND)


def _prepare_wrappers() -> None:
    """Every catalogue norm/activation wrapper, made before fib-runtime is switched on so
    that their torch.ops.fib custom ops exist before SGLang compiles or records its CUDA graphs."""
    for name in engine_ops.shipped(["rmsnorm", "fused_add_rmsnorm_residual"]):
        if engine_ops.shipped_eps(name) is not None:
            bridge.wrapper(ENGINE, name, getattr(originals, f"{name}__forward_native"))
    for name in engine_ops.shipped(["silu_and_mul"]):
        bridge.wrapper(ENGINE, name, getattr(originals, f"{name}__forward_native"))


def _served_activations() -> None:
    for name in engine_ops.shipped(["silu_and_mul"]):
        if bridge.served(name):
            _act_by_width[2 * engine_ops.shipped_size(name)] = (
                bridge.wrapper(ENGINE, name, getattr(originals, f"{name}__forward_native")),
                bridge.eager_site(name, getattr(originals, f"{name}__forward_cuda")).call)
