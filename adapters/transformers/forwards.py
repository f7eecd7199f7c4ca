"""The forwards of routed modules, shared by per-instance binding and the kernels layers.

Each reads the module's route (set by `apply`) and falls back to the class's own forward
when the module has none, the call's dtype is not the definition's, or autograd records the
call (a gradient is needed: the module's own forward computes it, exactly as unrouted).
Activations of any rank are flattened to the definition's 2-D [rows, features] and reshaped
back.

A routed MLP runs gate and up as one GEMM on a fused `[gate; up]` weight that the two
projections' weights are views of (memory does not grow). The projections' parameters stay
the source of truth: every routed call checks that they still are those views (two storage
pointers), and fuses again when one was replaced (`load_state_dict(assign=True)`, `p.data =
...`, a dtype or device move); writes into them (`load_state_dict`, an optimizer step,
`p.data.copy_`) land in the fused weight itself. Under torch.compile the two projections
run as they are (no pointer can be read there) and their outputs are concatenated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from fib_runtime import cuda_graphs

ROUTE = "_fib_route"
GATE_UP = "_fib_gate_up"  # (fused weight, gate's data_ptr, up's data_ptr) when fused


@dataclass(frozen=True)
class Route:
    """What a routed module calls: the `fib.apply` site of its definition, the dtype every
    routed call must have, and (attention) the (heads, kv heads, head_dim) it must have."""

    definition: str
    site: Callable[..., Any]
    dtype: torch.dtype
    shape: tuple[int, ...] = ()


def needs_grad(*tensors: torch.Tensor) -> bool:
    """True when autograd records a call on these tensors."""
    return torch.is_grad_enabled() and any(tensor.requires_grad for tensor in tensors)


def norm_forward(module: torch.nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """RMSNorm over the last axis through the definition's site."""
    route = module.__dict__.get(ROUTE)
    weight = module.weight
    if (route is None or hidden_states.dtype != route.dtype or weight.dtype != route.dtype
            or needs_grad(hidden_states, weight)):
        return type(module).forward(module, hidden_states)
    shape = hidden_states.shape
    return route.site(hidden_states.reshape(-1, shape[-1]), weight).view(shape)


def mlp_forward(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """down_proj(silu(gate) * up) with one fused gate/up projection and the site between."""
    route = module.__dict__.get(ROUTE)
    if route is None or x.dtype != route.dtype:
        drop_stale_fusion(module)
        return type(module).forward(module, x)
    if torch.compiler.is_compiling():
        gate, up = module.gate_proj, module.up_proj
        if needs_grad(x, gate.weight, up.weight):
            return type(module).forward(module, x)
        gate_up = torch.cat((gate(x), up(x)), dim=-1)
    else:
        weights = projection_weights(module)
        fused = None if weights is None or needs_grad(x, *weights) else \
            fused_gate_up(module, *weights)
        if fused is None:
            return type(module).forward(module, x)
        gate_up = F.linear(x, fused)
    shape = gate_up.shape
    hidden = route.site(gate_up.reshape(-1, shape[-1]))
    return module.down_proj(hidden.view(*shape[:-1], shape[-1] // 2))


def projection_weights(module: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The gate and up projections' weight parameters, read from the modules' own dicts
    (an nn.Module attribute costs ~0.5 us); None where one is not a plain parameter now."""
    gate, up = module._modules.get("gate_proj"), module._modules.get("up_proj")
    gate_weight = gate._parameters.get("weight") if gate is not None else None
    up_weight = up._parameters.get("weight") if up is not None else None
    return None if gate_weight is None or up_weight is None else (gate_weight, up_weight)


def fused_gate_up(module: torch.nn.Module, gate: torch.Tensor,
                  up: torch.Tensor) -> torch.Tensor | None:
    """The `[gate; up]` weight the projections' weights `gate` and `up` are views of, fused
    again when either was replaced; None where it cannot be made now (the two differ in
    shape, dtype or device, or a CUDA graph is being recorded)."""
    fused = module.__dict__.get(GATE_UP)
    if fused is not None and fused[1] == gate.data_ptr() and fused[2] == up.data_ptr():
        return fused[0]
    if (gate.shape != up.shape or gate.dtype != up.dtype or gate.device != up.device
            or (gate.is_cuda and cuda_graphs.being_recorded())):
        return None
    # a normal tensor even under inference_mode: the parameters become views of it, and an
    # inference tensor could never be trained or updated in place afterwards
    with torch.inference_mode(False), torch.no_grad():
        weight = torch.cat((gate, up))
        gate.data, up.data = weight[:gate.shape[0]], weight[gate.shape[0]:]  # one copy
    module.__dict__[GATE_UP] = (weight, gate.data_ptr(), up.data_ptr())
    return weight


def drop_stale_fusion(module: torch.nn.Module) -> None:
    """Free a fused weight the projections no longer use (e.g. after a dtype move)."""
    fused = module.__dict__.get(GATE_UP)
    if fused is None or torch.compiler.is_compiling():
        return
    weights = projection_weights(module)
    if weights is None or (fused[1], fused[2]) != (weights[0].data_ptr(),
                                                   weights[1].data_ptr()):
        del module.__dict__[GATE_UP]
