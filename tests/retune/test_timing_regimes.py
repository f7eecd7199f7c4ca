"""Timing regimes: the timer registry, and retune writing and skipping per regime."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fib_runtime.cli.main import main
from fib_runtime.errors import FibError
from fib_runtime.measure.timing import TIMERS, get_timer, parse_timings
from fib_runtime.retuning import RetuneConfig, retune
from fib_runtime.schema.provenance import TIMING_KEY, timing_of
from fib_runtime.store import TraceDB
from tests.retune.helpers import DEF, SOLUTIONS, make_db

FAST = {"warmup": 1, "iters": 3, "progress": False, "devices": "cpu"}


def test_the_registry_names_the_three_regimes() -> None:
    assert set(TIMERS) >= {"device", "eager", "graph"}
    assert parse_timings("device, eager,device") == ("device", "eager")
    assert parse_timings(None) == ("device",)
    with pytest.raises(FibError, match="unknown timing regime"):
        parse_timings("device,wall")
    with pytest.raises(FibError):
        RetuneConfig(timings=("fast",))
    assert get_timer("graph").unavailable("cpu") is not None  # never faked on a CPU
    assert get_timer("eager").unavailable("cpu") is None


def test_eager_timer_times_calls_back_to_back() -> None:
    calls: list[int] = []
    refills: list[int] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return x + 1

    ms = get_timer("eager").measure(fn, [torch.ones(4)], device="cpu",
                                    refill=refills.append, warmup=2, iters=21)
    assert ms > 0
    assert len(calls) == 2 + 7 * 3  # warm-up, then 7 rounds of 3 calls in a row
    assert len(refills) == 2 + 7  # re-filled between rounds, never between calls


def traces_by_regime(root: Path) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for t in TraceDB.open(root).traces_for(DEF):
        if t.solution and t.evaluation is not None:
            key = (t.solution, timing_of(t.evaluation))
            counts[key] = counts.get(key, 0) + 1
    return counts


def test_retune_writes_one_trace_per_regime_and_skips_per_regime(tmp_path: Path) -> None:
    db = make_db(tmp_path / "db", {n: SOLUTIONS[n] for n in ("good", "wrong_value")})
    first = retune(db, config=RetuneConfig(timings=("device",)), **FAST)
    assert len(first.outcomes) == 2
    second = retune(TraceDB.open(db.root), config=RetuneConfig(timings=("device", "eager")),
                    **FAST)
    assert {(o.solution, o.timing) for o in second.outcomes} == {
        ("good", "eager"), ("wrong_value", "eager")}  # device was measured already
    assert second.skipped == 0  # each solution still had a regime to measure
    assert traces_by_regime(db.root) == {("good", "device"): 1, ("good", "eager"): 1,
                                         ("wrong_value", "device"): 1,
                                         ("wrong_value", "eager"): 1}
    eager = next(t for t in TraceDB.open(db.root).traces_for(DEF) if t.solution == "good"
             and t.evaluation is not None and timing_of(t.evaluation) == "eager")
    assert eager.evaluation is not None and eager.evaluation.performance is not None
    assert eager.evaluation.environment.libs[TIMING_KEY] == "eager"
    third = retune(TraceDB.open(db.root), config=RetuneConfig(timings=("device", "eager",
                                                                        "graph")), **FAST)
    assert third.outcomes == [] and third.skipped == 2
    assert any("graph timing not measured" in note for note in third.notes)
    assert "note: graph timing" in third.table()
    assert {b.timing for b in third.buckets[DEF]} == {"device", "eager"}  # no graph traces


def test_cli_takes_several_timings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_db(tmp_path / "db", {"good": SOLUTIONS["good"]})
    assert main(["retune", str(tmp_path / "db"), "--devices", "cpu", "--warmup", "1",
                 "--iters", "2", "--no-progress", "--timing", "eager,device"]) == 0
    assert traces_by_regime(tmp_path / "db") == {("good", "eager"): 1, ("good", "device"): 1}
    assert "eager" in capsys.readouterr().out
    assert main(["retune", str(tmp_path / "db"), "--timing", "wall"]) == 1


# Runs 10 times (the check's 2 calls and device time's 1 + 3 + ... are under it), then
# raises: it can be timed in device time but not through eager's rounds.
TIRES = """import torch
CALLS = [0]

def run(x, weight):
    CALLS[0] += 1
    if CALLS[0] > 10:
        raise RuntimeError("cannot be run that way")
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(
        x.dtype)
"""


def test_a_solution_not_timeable_in_one_regime_still_ranks_in_the_others(
        tmp_path: Path) -> None:
    db = make_db(tmp_path / "db", {"tires": (TIRES, False)})
    retune(db, config=RetuneConfig(timings=("device", "eager")), **FAST)
    counts = traces_by_regime(db.root)
    assert counts == {("tires", "device"): 1}  # eager: not measured, no failed trace
    (trace,) = [t for t in TraceDB.open(db.root).traces_for(DEF) if t.solution == "tires"]
    assert trace.evaluation.status.value == "PASSED"
