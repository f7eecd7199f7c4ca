"""The forwards of routed modules, shared by per-instance binding and the kernels layers.

Each reads the module's route (set by `apply`) and falls back to the class's own forward
when the module has none or the call's dtype is not the definition's. Activations of any
rank are flattened to the definition's 2-D [rows, features] and reshaped back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

ROUTE = "_fib_route"
GATE_UP = "_fib_gate_up"


@dataclass(frozen=True)
class Route:
    """What a routed module calls: the `fib.apply` site of its definition, and the dtype
    every routed call must have."""

    definition: str
    site: Callable[..., Any]
    dtype: torch.dtype


def norm_forward(module: torch.nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """RMSNorm over the last axis through the definition's site."""
    route = module.__dict__.get(ROUTE)
    if route is None or hidden_states.dtype != route.dtype:
        return type(module).forward(module, hidden_states)
    shape = hidden_states.shape
    return route.site(hidden_states.reshape(-1, shape[-1]), module.weight).view(shape)


def mlp_forward(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """down_proj(silu(gate) * up) with one fused gate/up projection and the site between."""
    route = module.__dict__.get(ROUTE)
    if route is None or x.dtype != route.dtype:
        return type(module).forward(module, x)
    gate_up = F.linear(x, getattr(module, GATE_UP))
    shape = gate_up.shape
    hidden = route.site(gate_up.reshape(-1, shape[-1]))
    return module.down_proj(hidden.view(*shape[:-1], shape[-1] // 2))
