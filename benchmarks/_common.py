"""Helpers shared by the benchmark scripts: result tables and JSON output."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fib_runtime.render import render_table

RESULTS = Path(__file__).resolve().parent / "results"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows as an aligned text table."""
    print(render_table(headers, rows, align="right"))


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write a result file under benchmarks/results/ and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path


def paired_ns(pairs: dict[str, tuple[Callable[[], Any], Callable[[], Any]]], *, calls: int,
              rounds: int) -> dict[str, tuple[float, float, float]]:
    """Per pair (a, b): the medians over `rounds` of the mean time of one call of a and of b
    (ns), and the median of the per-round differences a - b. Every round times each pair
    once, pairs in a fresh random order and a, b back to back in random order, so that a
    host's drift and noise fall on both sides alike."""
    import gc
    import random

    def mean_ns(fn: Callable[[], Any]) -> float:
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        return (time.perf_counter_ns() - start) / calls

    for a, b in pairs.values():
        for _ in range(min(calls, 2000)):
            a()
            b()
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in pairs}
    order = list(pairs)
    gc.disable()
    try:
        for _ in range(rounds):
            random.shuffle(order)
            for name in order:
                a, b = pairs[name]
                if random.random() < 0.5:
                    ta = mean_ns(a)
                    tb = mean_ns(b)
                else:
                    tb = mean_ns(b)
                    ta = mean_ns(a)
                samples[name].append((ta, tb))
    finally:
        gc.enable()
    return {name: (statistics.median(a for a, _ in s), statistics.median(b for _, b in s),
                   statistics.median(a - b for a, b in s)) for name, s in samples.items()}


def median_ns_per_call(fn: Callable[[], Any], *, calls: int, repeats: int) -> float:
    """Median over `repeats` rounds of the mean wall time of one call, in nanoseconds."""
    for _ in range(calls):
        fn()
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        rounds.append((time.perf_counter_ns() - start) / calls)
    return statistics.median(rounds)


def per_call_us(fn: Callable[..., Any], args: Sequence[Any], calls: int) -> float:
    """GPU time of `calls` back-to-back calls of `fn(*args)` (CUDA events, no sync between
    calls) divided by `calls`, in microseconds: what an eager loop pays per call."""
    from fib_runtime.measure.timing import back_to_back_ms

    return back_to_back_ms(fn, args, calls, cuda=True) * 1e3
