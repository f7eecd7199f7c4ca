"""The main job in one run: capture a workload mix, retune on it, then serve it dispatched.

A small "engine" calls its ops through @fib.apply with capture on (which also records the
engine's own functions as candidates); retune benchmarks every built-in solution and the
original on the captured workloads on this machine, in the eager regime (and device on a
GPU); the same mix then runs with dispatch on (eager calls: the eager ranking), and for
each workload the demo prints which solution served it and its eager per-call time
against the engine's original code. Both are timed in interleaved rounds; a speedup below
1.0 is printed with the noise of those rounds (where the original itself serves, dispatch
calls it directly).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import fib_runtime as fib
from fib_runtime import regimes
from fib_runtime.catalogue import install
from fib_runtime.measure.timing import eager_latency_ms
from fib_runtime.render import render_table
from fib_runtime.retuning import RetuneConfig, RetuneSummary, retune
from fib_runtime.store import TraceDB

HIDDEN, INTERMEDIATE = 4096, 14336


# -- the engine's own code: plain PyTorch, as a model would have it -------------------------

@fib.apply("rmsnorm_h4096")
def rmsnorm(hidden_states: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    x = hidden_states.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
    return (x * weight.float()).to(hidden_states.dtype)


@fib.apply("silu_and_mul_i14336")
def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    gate, up = x.chunk(2, dim=-1)
    return torch.nn.functional.silu(gate) * up


@fib.apply("gemm_n4096_k4096")
def o_proj(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    return A @ B.T


@dataclass(frozen=True)
class DemoOp:
    definition: str
    fn: Callable[..., Any]
    make_inputs: Callable[[int, str], list[Any]]


def _randn(*shape: int, device: str, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    return torch.randn(*shape, device=device, dtype=dtype)


OPS = {
    "rmsnorm": DemoOp("rmsnorm_h4096", rmsnorm, lambda m, d: [_randn(m, HIDDEN, device=d),
                                                          _randn(HIDDEN, device=d)]),
    "silu_and_mul": DemoOp("silu_and_mul_i14336", silu_and_mul,
                       lambda m, d: [_randn(m, 2 * INTERMEDIATE, device=d)]),
    "gemm": DemoOp("gemm_n4096_k4096", o_proj,
               lambda m, d: [_randn(m, HIDDEN, device=d, dtype=torch.float16),
                             _randn(HIDDEN, HIDDEN, device=d, dtype=torch.float16)]),
}
# What each kind of machine runs: CPU sizes stay small enough for a demo of a minute or two.
GPU_MIX = {"rmsnorm": (1, 16, 128, 1024, 8192), "silu_and_mul": (1, 16, 128, 1024, 8192),
           "gemm": (1, 16, 128, 1024, 8192)}
CPU_MIX = {"rmsnorm": (1, 8, 64, 512, 2048), "silu_and_mul": (1, 8, 64, 256)}


@dataclass(frozen=True)
class Row:
    definition: str
    batch: int
    served_by: str
    reason: str
    fib_ms: float
    original_ms: float
    noise: float = 0.0  # relative spread of the rounds (max - min) / median, both sides

    @property
    def speedup(self) -> float:
        return self.original_ms / self.fib_ms if self.fib_ms > 0 else 0.0


def run_demo(db_path: Path, *, device: str | None = None,
             mix: dict[str, Sequence[int]] | None = None, iters: int = 20,
             progress: bool = True) -> tuple[RetuneSummary, list[Row]]:
    """Capture -> retune -> dispatch on `db_path`: the retune summary and one row per workload
    served with dispatch on."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    mix = mix or (GPU_MIX if device.startswith("cuda") else CPU_MIX)
    db = TraceDB.open(db_path, create=True)
    install(db)
    ops = [(OPS[name], sizes) for name, sizes in mix.items()]
    with torch.no_grad():
        with fib.enable_capture(db):
            for op, sizes in ops:
                for m in sizes:
                    op.fn(*op.make_inputs(m, device))
        summary = retune(db_path, definitions=[op.definition for op, _ in ops],
                         warmup=3, iters=iters, progress=progress,
                         config=RetuneConfig(timings=_timings(device)))
        rows = []
        with fib.enable_apply(db_path, {"check_interval_s": 0}):
            for op, sizes in ops:
                for m in sizes:
                    rows.append(_serve(op, m, device, iters))
    return summary, rows


def _timings(device: str) -> tuple[str, ...]:
    """The regimes the demo measures: on a CPU, calls are synchronous and device time is
    eager time, so eager alone; on a GPU both."""
    eager = regimes.EAGER.name
    return (regimes.DEVICE.name, eager) if device.startswith("cuda") else (eager,)


def _serve(op: DemoOp, batch: int, device: str, iters: int, rounds: int = 3) -> Row:
    inputs = op.make_inputs(batch, device)
    op.fn(*inputs)  # resolve this key once
    explanation = fib.explain(op.definition, {_var_axis(op): batch})
    served: list[float] = []
    original: list[float] = []
    for i in range(rounds):  # interleaved, the order alternating, so drift falls on both
        pair = [(op.fn, served), (op.fn.__wrapped__, original)]
        for fn, out in pair if i % 2 == 0 else reversed(pair):
            out.append(eager_latency_ms(fn, inputs, device=device, warmup=1, iters=iters,
                                        rounds=3))
    noise = max((max(v) - min(v)) / statistics.median(v) for v in (served, original))
    return Row(op.definition, batch, explanation.decision, explanation.reason,
               statistics.median(served), statistics.median(original), noise)


def _var_axis(op: DemoOp) -> str:
    definition = fib.dispatch.find_definition(op.definition)
    assert definition is not None
    return definition.var_axes[0]


def served_label(name: str) -> str:
    """A solution's short name; the engine's own function is "original"."""
    return "original" if "__original__" in name else name.split("__")[-1]


def speedup_text(row: Row) -> str:
    """The speedup; below 1.0 only with the measured noise beside it. Where the original
    serves, both columns time the same function: any difference is noise (and dispatch)."""
    same = ", same code" if served_label(row.served_by) == "original" else ""
    if row.speedup >= 1.0:
        return f"{row.speedup:.2f}x{same}"
    return f"{row.speedup:.2f}x{same} (noise ±{row.noise:.0%})"


def format_rows(rows: list[Row]) -> str:
    headers = ["definition", "batch", "served by", "why", "fib ms", "original ms", "speedup"]
    cells = [[r.definition, str(r.batch), served_label(r.served_by), r.reason,
              f"{r.fib_ms:.4f}", f"{r.original_ms:.4f}", speedup_text(r)] for r in rows]
    table = render_table(headers, cells)
    return table + ("\n(times: eager per-call medians of interleaved rounds; noise = the "
                    "rounds' spread; \"original\" = dispatch calls the engine's own function, "
                    "the fastest measured there)")
