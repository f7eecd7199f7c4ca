"""The `fib.apply` sites the routed modules call, one per definition.

Each site's fallback computes what the transformers module computes (so a routed model
with dispatch off gives the module's own result); with dispatch on the definition's fastest
measured solution runs, and under torch.compile the site is `torch.ops.fib.<definition>`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

import fib_runtime as fib

_sites: dict[str, Callable[..., Any]] = {}


def rmsnorm_site(definition: str, eps: float) -> Callable[..., Any]:
    """`site(hidden_states [rows, hidden], weight) -> [rows, hidden]` for `definition`."""
    site = _sites.get(definition)
    if site is None:
        def rmsnorm(hidden_states: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
            x = hidden_states.float()
            x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
            return weight * x.to(hidden_states.dtype)

        rmsnorm.__name__ = rmsnorm.__qualname__ = f"fib_{definition}"
        site = _sites.setdefault(definition, fib.apply(definition)(rmsnorm))
    return site


def silu_and_mul_site(definition: str) -> Callable[..., Any]:
    """`site(gate_up [rows, 2 * inter]) -> [rows, inter]` for `definition`."""
    site = _sites.get(definition)
    if site is None:
        def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
            gate, up = gate_up.chunk(2, dim=-1)
            return F.silu(gate) * up

        silu_and_mul.__name__ = silu_and_mul.__qualname__ = f"fib_{definition}"
        site = _sites.setdefault(definition, fib.apply(definition)(silu_and_mul))
    return site
