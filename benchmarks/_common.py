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


def interleaved_ns(cases: dict[str, Callable[[], Any]], *, calls: int,
                   rounds: int) -> dict[str, float]:
    """Per case, the median over `rounds` of the mean wall time of one call (ns). Every
    round times each case once, in a fresh random order, so that a host's drift and noise
    fall on every case alike."""
    import gc
    import random

    for fn in cases.values():
        for _ in range(min(calls, 2000)):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    order = list(cases)
    gc.disable()
    try:
        for _ in range(rounds):
            random.shuffle(order)
            for name in order:
                fn = cases[name]
                start = time.perf_counter_ns()
                for _ in range(calls):
                    fn()
                samples[name].append((time.perf_counter_ns() - start) / calls)
    finally:
        gc.enable()
    return {name: statistics.median(values) for name, values in samples.items()}


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
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn(*args)
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3 / calls
