"""Eager times of a workload's candidates taken together, interleaved in rounds: a drift of
the host cannot decide between them (retune's settle pass, measure.timing)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fib_runtime.errors import WorkerLost
from fib_runtime.measure import timing
from fib_runtime.retuning.executor import Settings, evaluate_item


class _DriftingHost:
    """A virtual clock for the timers: each call costs its own time times a host slowdown
    that grows with every call made (a host that gets slower as the run goes on)."""

    def __init__(self) -> None:
        self.now = 0
        self.calls = 0

    def clock(self) -> int:
        return self.now

    def op(self, cost_ns: int) -> Any:
        def call(*args: Any) -> None:
            self.calls += 1
            self.now += int(cost_ns * (1.0 + self.calls / 200))
        return call


def test_interleaved_rounds_rank_by_the_calls_not_by_when_they_were_timed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    host = _DriftingHost()
    monkeypatch.setattr(timing.time, "perf_counter_ns", host.clock)
    slow, fast = host.op(10_000), host.op(9_500)  # `fast` is 5 % faster, call for call
    args = [torch.zeros(1)]
    one_by_one = {"slow": timing.eager_latency_ms(slow, args, device="cpu", warmup=2, iters=70),
                  "fast": timing.eager_latency_ms(fast, args, device="cpu", warmup=2, iters=70)}
    assert one_by_one["fast"] > one_by_one["slow"]  # timed later, on a slower host
    together = timing.eager_interleaved_ms({"slow": slow, "fast": fast}, args, device="cpu",
                                           warmup=2, iters=70)
    assert together["fast"] < together["slow"]
    assert set(together) == {"slow", "fast"} and all(v.spread >= 0 for v in together.values())


class _Handle:
    """A worker handle answering from a script: what retune's executor asks, in order."""

    def __init__(self, interleaved: dict[str, float] | None) -> None:
        self.requests: list[tuple[str, Any]] = []
        self.interleaved = interleaved

    def request(self, kind: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.requests.append((kind, payload))
        if kind == "prepare":
            return {"ok": True, "reference_latency_ms": 1.0}
        if kind == "evaluate":
            name = payload["solution"]["name"]
            if name == "failing":
                return {"status": "INCORRECT_NUMERICAL", "log": "wrong"}
            solo = {"a": 0.010, "b": 0.011, "c": 0.012}[name]
            return {"status": "PASSED", "latencies_ms": {"device": 0.005, "eager": solo},
                    "spreads": {"device": 0.0, "eager": 0.01}, "latency_ms": 0.005}
        if self.interleaved is None:
            raise WorkerLost("TIMEOUT", "the interleaved timing took too long")
        return {"latencies_ms": self.interleaved,
                "spreads": dict.fromkeys(self.interleaved, 0.002)}

    def kill(self) -> None:
        self.requests.append(("kill", None))


SETTINGS = Settings(warmup=1, iters=3, timeout=5.0, reference_timeout=5.0,
                    timings=("device", "eager"))


def _solutions(*names: str) -> list[dict[str, Any]]:
    return [{"name": name} for name in names]


def test_retune_reports_the_eager_times_of_one_interleaved_timing() -> None:
    handle = _Handle({"a": 0.012, "b": 0.009, "c": 0.010})
    reported: dict[str, dict[str, Any]] = {}
    reason = evaluate_item(handle, {}, {}, _solutions("a", "failing", "b", "c"), SETTINGS, None,
                           lambda name, result, ref: reported.setdefault(name, result))
    assert reason is None
    assert [kind for kind, _ in handle.requests] == \
        ["prepare", "evaluate", "evaluate", "evaluate", "evaluate", "interleave"]
    assert handle.requests[-1][1]["solutions"] == ["a", "b", "c"]  # the passing ones
    assert {n: r["latencies_ms"]["eager"] for n, r in reported.items() if n != "failing"} == \
        {"a": 0.012, "b": 0.009, "c": 0.010}
    assert reported["b"]["spreads"]["eager"] == 0.002
    assert reported["b"]["latencies_ms"]["device"] == 0.005  # other regimes untouched
    assert reported["failing"]["status"] == "INCORRECT_NUMERICAL"


def test_when_the_interleaved_timing_fails_the_solo_times_stand() -> None:
    handle = _Handle(None)
    reported: dict[str, dict[str, Any]] = {}
    evaluate_item(handle, {}, {}, _solutions("a", "b"), SETTINGS, None,
                  lambda name, result, ref: reported.setdefault(name, result))
    assert {n: r["latencies_ms"]["eager"] for n, r in reported.items()} == \
        {"a": 0.010, "b": 0.011}
    assert handle.requests[-1] == ("kill", None)  # the next workload gets a fresh worker
