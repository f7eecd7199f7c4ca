"""CPU timing: warm-up, median, re-fill before every run."""

from __future__ import annotations

import time

import pytest

from fib_runtime.measure.timing import median_latency_ms


def test_median_of_runs_after_warmup_with_refill_between() -> None:
    events: list[str] = []
    durations = iter([0.0, 0.0, 0.002, 0.050, 0.002, 0.003, 0.002])

    def fn() -> None:
        events.append("call")
        time.sleep(next(durations))

    ms = median_latency_ms(fn, [], device="cpu", warmup=2, iters=5,
                           refill=lambda i: events.append(f"refill{i}"))
    assert events == ["refill0", "call", "refill1", "call"] + [
        e for i in range(2, 7) for e in (f"refill{i}", "call")]
    assert 2.0 <= ms < 10.0  # the 50 ms outlier does not move the median


def test_iters_must_be_positive() -> None:
    with pytest.raises(ValueError):
        median_latency_ms(lambda: None, [], device="cpu", iters=0)
