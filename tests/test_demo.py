"""The whole loop on CPU: capture -> retune -> dispatch serves the measured winner."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

import pytest

from fib_runtime.demo import format_rows, run_demo
from fib_runtime.schema import Status
from fib_runtime.store import TraceDB


def measured_winner(db: TraceDB, definition: str, batch: int) -> str:
    latencies: dict[str, list[float]] = defaultdict(list)
    for trace in db.traces_for(definition, "CPU"):
        evaluation = trace.evaluation
        if trace.workload.axes["batch_size"] == batch and evaluation.status is Status.PASSED:
            latencies[trace.solution].append(evaluation.performance.latency_ms)
    return min(latencies, key=lambda name: statistics.median(latencies[name]))


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
    assert report.counts().get("PASSED", 0) >= 4  # two CPU solutions x two workloads
    assert [(r.definition, r.batch) for r in rows] == [("rmsnorm_h4096", 1),
                                                      ("rmsnorm_h4096", 96)]
    for row in rows:
        assert row.reason == "measured"
        assert row.served_by == measured_winner(db, row.definition, row.batch)
        assert row.fib_ms > 0 and row.original_ms > 0
    assert "rmsnorm_h4096" in format_rows(rows)
