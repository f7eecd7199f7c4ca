"""The whole loop on CPU: capture -> retune -> dispatch serves the measured winner."""

from __future__ import annotations

from pathlib import Path

import pytest

from fib_runtime.demo import Row, format_rows, run_demo, speedup_text
from fib_runtime.ranking import noise
from fib_runtime.schema import Status
from fib_runtime.schema.provenance import spread_of, timing_of
from fib_runtime.store import TraceDB


def measured_winners(db: TraceDB, definition: str, batch: int) -> set[str]:
    """The candidates the eager traces (the regime the demo's calls are served in) cannot
    tell from the fastest: within the noise of the two measurements (fib_runtime.ranking)."""
    measured: dict[str, tuple[float, float]] = {}
    for trace in db.traces_for(definition, "CPU"):
        evaluation = trace.evaluation
        if trace.workload.axes["batch_size"] == batch and evaluation.status is Status.PASSED \
                and timing_of(evaluation) == "eager":
            measured[trace.solution] = (evaluation.performance.latency_ms,
                                        spread_of(evaluation) or 0.0)
    best, best_spread = min(measured.values())
    return {name for name, (median, spread) in measured.items()
            if median <= best * (1.0 + noise("eager", best_spread, spread))}


def test_capture_retune_dispatch_on_cpu(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))
    db_path = tmp_path / "db"
    report, rows = run_demo(db_path, device="cpu", mix={"rmsnorm": (1, 96)}, iters=3,
                            progress=False)
    db = TraceDB.open(db_path)
    assert db.load_errors == []
    captured = sorted(t.workload.axes["batch_size"] for t in db.workloads_for("rmsnorm_h4096"))
    assert captured == [1, 96]
    # two CPU solutions and the original, two workloads, eager
    assert report.counts().get("PASSED", 0) >= 6
    assert any("__original__" in o.solution for o in report.outcomes)
    assert [(r.definition, r.batch) for r in rows] == [("rmsnorm_h4096", 1),
                                                      ("rmsnorm_h4096", 96)]
    for row in rows:
        assert row.reason == "measured"
        assert row.served_by in measured_winners(db, row.definition, row.batch)
        assert row.fib_ms > 0 and row.original_ms > 0
    assert "rmsnorm_h4096" in format_rows(rows)


def test_a_speedup_below_one_states_the_noise() -> None:
    faster = Row("d", 1, "d__triton", "measured", 1.0, 1.2, 0.03)
    slower = Row("d", 1, "d__triton", "measured", 1.02, 1.0, 0.05)
    original = Row("d", 1, "d__original__engine.norm", "measured", 1.02, 1.0, 0.05)
    assert speedup_text(faster) == "1.20x"
    assert speedup_text(slower) == "0.98x (noise ±5%)"
    assert speedup_text(original) == "0.98x, same code (noise ±5%)"
