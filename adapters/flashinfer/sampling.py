"""flashinfer.sampling.top_k_sampling_from_probs / top_k_top_p_sampling_from_probs /
top_p_sampling_from_probs, with the calls a definition covers routed to fib-runtime and their
contract kept: int32 ids, one per row.

A call is covered when `probs` is a 2-D float32 tensor whose vocabulary has a catalogue
definition (`<function>_v<vocab>`, the official names), `top_k` / `top_p` are per-row
tensors (a Python number is FlashInfer's broadcast form, not the definition's), and none of
the options the definitions do not model is given (`indices`, `generator`, `seed`,
`offset`, `check_nan`, `return_valid`, `deterministic=False`, `top_k_max`,
`filter_apply_order` other than "top_k_first"). Everything else goes to FlashInfer
unchanged and is counted by reason (`fib_runtime.adapters.flashinfer.stats()`).

A covered call goes to its definition's call site (`bridge.eager_site`), whose fallback is
FlashInfer's own function at that vocabulary (`originals.<definition>`). The definitions
return int64 ids; the contract's int32 is one cast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from fib_runtime.adapters import bridge
from fib_runtime.adapters.flashinfer import originals
from fib_runtime.adapters.flashinfer.counters import routed, unchanged

FUNCTIONS = ("top_k_sampling_from_probs", "top_k_top_p_sampling_from_probs",
             "top_p_sampling_from_probs")
_ROUTED_DEFAULTS = {"indices": None, "deterministic": True, "generator": None,
                    "check_nan": False, "seed": None, "offset": None, "return_valid": False,
                    "filter_apply_order": "top_k_first", "top_k_max": None}
# (function, vocab) -> the served call site, or the reason the call is not covered
_routes: dict[tuple[str, int], Callable[..., Any] | str] = {}


def _known() -> frozenset[str]:
    from fib_runtime.catalogue import load_catalogue

    return frozenset(n for n in load_catalogue().definitions if n.startswith(FUNCTIONS))


def _route(function: str, vocab: int) -> Callable[..., Any] | str:
    """The call site of a function at a vocabulary (made once), or why there is none."""
    name = f"{function}_v{vocab}"
    if name not in _known():
        found: Callable[..., Any] | str = "no_definition"
    else:
        bridge.start()
        found = bridge.eager_site(name, getattr(originals, name)).call
    _routes[function, vocab] = found
    return found


def _why_not(probs: Any, params: tuple[Any, ...], options: dict[str, Any]) -> str | None:
    """Why a call is not covered (None: it is)."""
    if not isinstance(probs, torch.Tensor) or probs.dtype != torch.float32 or probs.dim() != 2:
        return "layout_or_dtype"
    if any(not isinstance(p, torch.Tensor) or p.dim() != 1 for p in params):
        return "scalar_parameter"
    if any(key not in _ROUTED_DEFAULTS or value != _ROUTED_DEFAULTS[key]
           for key, value in options.items()):
        return "option"
    return None


def wrap(own: dict[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """The replacements of FlashInfer's three sampling functions (`own`: FlashInfer's)."""

    def make(function: str, params: tuple[str, ...]) -> Callable[..., Any]:
        original = own[function]

        def sample(probs: torch.Tensor, *args: Any, **options: Any) -> Any:
            values = args + tuple(options[p] for p in params[len(args):] if p in options)
            rest = {k: v for k, v in options.items() if k not in params}
            if len(args) > len(params):
                reason: str | None = "option"  # options passed by position
            elif len(values) < len(params):
                reason = "missing_parameter"
            else:
                reason = _why_not(probs, values, rest)
            if reason is None:
                fn = _routes.get((function, probs.shape[1])) or _route(function, probs.shape[1])
                if fn.__class__ is str:
                    reason = fn
                else:
                    next(routed[function])  # reset() puts new counters in it
                    return fn(probs, *values).to(torch.int32)
            unchanged[function, reason] += 1
            return original(probs, *args, **options)

        sample.__name__ = sample.__qualname__ = function
        sample.__doc__ = original.__doc__
        return sample

    return {"top_k_sampling_from_probs": make("top_k_sampling_from_probs", ("top_k",)),
            "top_k_top_p_sampling_from_probs": make("top_k_top_p_sampling_from_probs",
                                                    ("top_k", "top_p")),
            "top_p_sampling_from_probs": make("top_p_sampling_from_probs", ("top_p",))}


def clear_routes() -> None:
    """Forget cached routing decisions."""
    _routes.clear()
