"""Constructed steps for the gate tests (CPU): two ops marked with their definitions and the
plain code between them, as an engine writes a layer.

`toy_norm_h8`'s measured winner is fast alone but leaves the machine in a state that slows
the op after it (standing in for a kernel that evicts the next op's inputs from L2): per op
it wins, in the step it loses. `toy_norm_h16`'s winner is simply faster.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch

import fib_runtime as fib

POLLUTED = "FIB_TEST_STEP_CACHE_POLLUTED"
# A solution of toy_norm_h8 that is fast alone and pollutes what the next op needs.
POLLUTING_CODE = f"""import os

def run(x, weight):
    os.environ["{POLLUTED}"] = "1"
    return x * weight
"""
QUICK_CODE = """def run(x, weight):
    return x * weight
"""
# A solution of toy_norm_h32 that takes as long as the original: a per-op "win" measured in
# noise, which the step cannot show.
EVEN_CODE = """import time

def run(x, weight):
    end = time.perf_counter() + 0.002
    while time.perf_counter() < end:
        pass
    return x * weight
"""


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@fib.apply("toy_norm_h8")
def norm_a(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The engine's own op: 0.3 ms."""
    spin(0.0003)
    return x * weight


@fib.apply("toy_norm_h16")
def norm_b(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The engine's own op: 2 ms."""
    spin(0.002)
    return x * weight


@fib.apply("toy_norm_h32")
def norm_c(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The engine's own op: 2 ms, as long as EVEN_CODE."""
    spin(0.002)
    return x * weight


def next_op(y: torch.Tensor) -> torch.Tensor:
    """Plain code after norm_a: 10 ms more when what it reads was evicted."""
    if os.environ.pop(POLLUTED, None):
        spin(0.01)
    return y + 1


def polluting_step(batch: int = 4) -> Callable[[], torch.Tensor]:
    """The step factory `fib verify tests.verify.steps:polluting_step` loads."""
    x8, w8 = torch.randn(batch, 8), torch.randn(8)
    x16, w16 = torch.randn(batch, 16), torch.randn(16)

    def step() -> torch.Tensor:
        next_op(norm_a(x8, w8))
        return norm_b(x16, w16)

    return step


def even_step(batch: int = 4) -> Callable[[], torch.Tensor]:
    """A step of one op whose choice (EVEN_CODE) runs as long as the original."""
    x, w = torch.randn(batch, 32), torch.randn(32)
    return lambda: norm_c(x, w)
