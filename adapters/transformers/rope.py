"""Rotary embedding routing for transformers models.

transformers' attention calls its modeling module's `apply_rotary_pos_emb(q, k, cos, sin)`
with the cos/sin that the model's rotary module computed for the step. Routing a model
binds its rotary module's forward per instance: after the original it turns the step's
cos/sin into the `rope_with_cos_sin_cache_neox_style_*` definition's inputs (a cos/sin
cache of the step's tokens and their row numbers, built once per step, not per layer) and
remembers them. The modeling module's `apply_rotary_pos_emb` is replaced by a function that
routes only calls whose cos/sin are those a routed rotary module produced (so an unrouted
model in the same process keeps its own path), and calls the original otherwise: under
torch.compile (the per-step cache lives outside the graph) and where gradients are needed.
The rope site's fallback is `rope_<model>` of this module (made on first access, so retune
imports and times it): transformers' own function in the definition's layout.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from fib_runtime.adapters.transformers.forwards import ROUTE, needs_grad
from torch import nn

GLOBAL = "apply_rotary_pos_emb"
ORIGINAL = "rope_"  # rope_<model>: the rope original of transformers.models.<model>
_MODELING = "transformers.models.{0}.modeling_{0}"
_lock = threading.Lock()
_originals: dict[str, tuple[Callable[..., Any], int]] = {}  # module name -> (original, users)


@dataclass
class Step:
    """One step's rope inputs, built from the cos/sin of a routed rotary module."""

    cos: Any = None
    sin: Any = None
    cache: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    site: Callable[..., Any] | None = None
    dtype: torch.dtype | None = None


_step = threading.local()


def rope_original(modeling: types.ModuleType) -> Callable[..., Any]:
    """The rope original of a modeling module: `rope_<model>` of this module for
    `transformers.models.<model>.modeling_<model>`; for another module (remote code) a
    function retune cannot import, so it notes it as not timeable."""
    model = modeling.__name__.rsplit(".", 1)[-1].removeprefix("modeling_")
    if modeling.__name__ == _MODELING.format(model):
        found: Callable[..., Any] = __getattr__(ORIGINAL + model)
        return found
    return _rope(_unrouted(modeling), ORIGINAL + modeling.__name__.replace(".", "_"),
                 modeling.__name__)


def __getattr__(name: str) -> Any:
    """Make `rope_<model>` on first access (PEP 562), in this process or in retune's worker."""
    if not name.startswith(ORIGINAL):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        modeling = importlib.import_module(_MODELING.format(name[len(ORIGINAL):]))
        original = _unrouted(modeling)
    except (ImportError, AttributeError):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    return globals().setdefault(name, _rope(original, name, modeling.__name__))


def _rope(original: Callable[..., Any], name: str, where: str) -> Callable[..., Any]:
    """transformers' own `apply_rotary_pos_emb` (the one it had before routing) in the rope
    definitions' [tokens, heads, head] layout."""
    def rope(q: torch.Tensor, k: torch.Tensor, cos_sin_cache: torch.Tensor,
             positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = cos_sin_cache[positions].to(q.dtype).chunk(2, dim=-1)
        cos, sin = torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)
        return original(q, k, cos, sin, 1)  # [tokens, 1, head] against [tokens, heads, head]

    rope.__name__ = rope.__qualname__ = name
    rope.__doc__ = f"transformers' apply_rotary_pos_emb of {where}."
    return rope


def rotary_forward(module: nn.Module, x: torch.Tensor, position_ids: torch.Tensor) -> Any:
    """The routed rotary module: its own cos/sin, plus this step's cache for the rope site."""
    cos, sin = type(module).forward(module, x, position_ids)
    route = module.__dict__.get(ROUTE)
    if route is None or torch.compiler.is_compiling() or cos.dim() != 3:
        return cos, sin
    half = cos.shape[-1] // 2
    cache = torch.cat((cos[..., :half], sin[..., :half]), dim=-1).reshape(-1, 2 * half).float()
    # cos/sin rows are [1 or batch, seq]; every token of the batch reads its row
    rows, seq = cos.shape[0], cos.shape[1]
    positions = torch.arange(rows * seq, device=cache.device).view(rows, seq).expand(
        x.shape[0], seq).reshape(-1)
    _step.current = Step(cos, sin, cache, positions, route.site, route.dtype)
    return cos, sin


def _routed_rotary(original: Callable[..., Any]) -> Callable[..., Any]:
    def apply_rotary_pos_emb(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                             sin: torch.Tensor, unsqueeze_dim: int = 1) -> Any:
        if torch.compiler.is_compiling():  # first: dynamo never reads the step state
            return original(q, k, cos, sin, unsqueeze_dim)
        step = getattr(_step, "current", None)
        if (step is None or cos is not step.cos or sin is not step.sin or unsqueeze_dim != 1
                or q.dtype != step.dtype or q.shape[-1] != cos.shape[-1]
                or needs_grad(q, k)):
            return original(q, k, cos, sin, unsqueeze_dim)
        batch, heads_q, seq, head = q.shape
        q_out, k_out = step.site(q.transpose(1, 2).reshape(-1, heads_q, head),
                                 k.transpose(1, 2).reshape(-1, k.shape[1], head),
                                 step.cache, step.positions)
        return (q_out.view(batch, seq, heads_q, head).transpose(1, 2),
                k_out.view(batch, seq, k.shape[1], head).transpose(1, 2))

    apply_rotary_pos_emb.__wrapped__ = original  # type: ignore[attr-defined]
    return apply_rotary_pos_emb


def modeling_module(module: nn.Module) -> types.ModuleType | None:
    """The transformers modeling module whose attention calls `apply_rotary_pos_emb`."""
    modeling = sys.modules.get(type(module).__module__)
    return modeling if modeling is not None and hasattr(modeling, GLOBAL) else None


def bind(module: nn.Module, route: Any) -> None:
    """Route a rotary module (its route's site is a rope definition's)."""
    modeling = modeling_module(module)
    assert modeling is not None
    with _lock:
        original, users = _originals.get(modeling.__name__, (getattr(modeling, GLOBAL), 0))
        if users == 0:
            setattr(modeling, GLOBAL, _routed_rotary(original))
        _originals[modeling.__name__] = (original, users + 1)
    module.__dict__[ROUTE] = route
    module.forward = types.MethodType(rotary_forward, module)


def _unrouted(modeling: types.ModuleType) -> Callable[..., Any]:
    """transformers' own `apply_rotary_pos_emb` of a modeling module (ours unwrapped)."""
    with _lock:
        saved = _originals.get(modeling.__name__)
    return saved[0] if saved else getattr(modeling, GLOBAL)


def unbind(module: nn.Module) -> None:
    """Forget a routed rotary module; the last one restores `apply_rotary_pos_emb`."""
    modeling = modeling_module(module)
    if modeling is None:
        return
    with _lock:
        original, users = _originals.get(modeling.__name__, (None, 0))
        if users <= 1:
            _originals.pop(modeling.__name__, None)
            if original is not None:
                setattr(modeling, GLOBAL, original)
        else:
            _originals[modeling.__name__] = (original, users - 1)
    _step.current = None
