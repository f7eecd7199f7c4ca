"""An engine's call site, importable by child processes (its original can be recorded)."""

from __future__ import annotations

import torch

import fib_runtime as fib

DEF = "toy_norm_h8"


@fib.apply(DEF)
def engine_norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The engine's own function: x * weight."""
    return x * weight
