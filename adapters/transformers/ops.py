"""The `fib.apply` sites the routed modules call, one per definition, and their originals.

Each site's fallback is a module-level function of this module that computes exactly what
the transformers module computes for the definition's constants: `silu_and_mul`, and
`rmsnorm_eps<eps>` (e.g. `rmsnorm_eps1em05` for 1e-05), which this module makes on first
access for any eps, in this process or in retune's worker. So a routed model with dispatch
off gives the module's own result, retune imports and times each original like any
solution, and dispatch calls it directly where it is the fastest; under torch.compile the
site is `torch.ops.fib.<definition>`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

import fib_runtime as fib

_sites: dict[tuple[str, Callable[..., Any]], Callable[..., Any]] = {}
_lock = threading.Lock()
RMSNORM = "rmsnorm_eps"
# repr(eps) spelled as an identifier: 1e-05 -> 1em05, 1.5e-06 -> 1p5em06
_ENCODE = str.maketrans({".": "p", "-": "m", "+": "P"})
_DECODE = str.maketrans({"p": ".", "m": "-", "P": "+"})


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """`act_fn(gate) * up` of transformers' gated MLPs (SiLU) on `[gate | up]`."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def rmsnorm_original(eps: float) -> Callable[..., Any]:
    """`rmsnorm_eps<eps>(hidden_states, weight)`: transformers' `LlamaRMSNorm.forward`."""
    fn: Callable[..., Any] = __getattr__(RMSNORM + repr(float(eps)).translate(_ENCODE))
    return fn


def __getattr__(name: str) -> Any:
    """Make `rmsnorm_eps<eps>` on first access (PEP 562); every other name is missing."""
    if not name.startswith(RMSNORM):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        eps = float(name[len(RMSNORM):].translate(_DECODE))
    except ValueError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    if RMSNORM + repr(eps).translate(_ENCODE) != name:  # one name per eps
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def rmsnorm(hidden_states: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        x = hidden_states.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return weight * x.to(input_dtype)

    rmsnorm.__name__ = rmsnorm.__qualname__ = name
    rmsnorm.__doc__ = f"transformers' LlamaRMSNorm.forward with eps {eps!r}."
    return globals().setdefault(name, rmsnorm)


def site(definition: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """The `fib.apply(definition)` site whose fallback is `original` (made once)."""
    key = (definition, original)
    found = _sites.get(key)
    if found is None:
        with _lock:
            found = _sites.get(key) or _sites.setdefault(key, fib.apply(definition)(original))
    return found
