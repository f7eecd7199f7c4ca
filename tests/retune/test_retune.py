"""The whole retune loop on the CPU: statuses, isolation, resume, force, unusable workloads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fib_runtime.hardware import CPU_KEY, current_hardware
from fib_runtime.ranking import noise
from fib_runtime.retuning import RetuneConfig, RetuneError, RetuneSummary, retune
from fib_runtime.schema import Status, Trace
from fib_runtime.schema.provenance import spread_of
from fib_runtime.store import TraceDB
from tests import factories
from tests.retune.helpers import DEF, SOLUTIONS, latest_status, make_db

FAST = {"warmup": 1, "iters": 3, "progress": False, "devices": "cpu"}


@pytest.fixture(scope="module")
def retuned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TraceDB, RetuneSummary]]:
    """One retune of every toy solution (the worker crashes and hangs along the way)."""
    tmp = tmp_path_factory.mktemp("retune")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FIB_CACHE_PATH", str(tmp / "cache"))
        db = make_db(tmp / "db", SOLUTIONS)
        summary = retune(db, timeout=5.0, **FAST)
        yield db, summary


EXPECTED = {
    "good": Status.PASSED, "good_dps": Status.PASSED,
    "wrong_shape": Status.INCORRECT_SHAPE, "wrong_dtype": Status.INCORRECT_DTYPE,
    "wrong_value": Status.INCORRECT_NUMERICAL, "nan": Status.INCORRECT_NUMERICAL,
    "raises": Status.RUNTIME_ERROR, "no_import": Status.COMPILE_ERROR,
    "aborts": Status.RUNTIME_ERROR, "hangs": Status.TIMEOUT,
    "oom": Status.RUNTIME_ERROR, "caches": Status.INCORRECT_NUMERICAL,
}


def test_every_solution_gets_its_status(retuned: tuple[TraceDB, RetuneSummary]) -> None:
    db, summary = retuned
    traces = latest_status(db)
    assert {name: t.evaluation.status for name, t in traces.items()} == EXPECTED
    assert len(summary.outcomes) == len(SOLUTIONS) and summary.skipped == 0


def test_passed_traces_carry_latency_and_environment(
        retuned: tuple[TraceDB, RetuneSummary]) -> None:
    db, _ = retuned
    for name in ("good", "good_dps"):
        evaluation = latest_status(db)[name].evaluation
        perf = evaluation.performance
        assert perf.latency_ms > 0 and perf.reference_latency_ms > 0
        assert perf.speedup_factor == pytest.approx(perf.reference_latency_ms / perf.latency_ms)
        assert evaluation.correctness.max_absolute_error < 1e-4
        env = evaluation.environment
        assert env.hardware == current_hardware().name
        assert env.extra["hardware_key"] == CPU_KEY and "torch" in env.libs
        assert evaluation.timestamp.endswith("+00:00")
    assert {t.solution for t in db.traces_for(DEF, CPU_KEY)} == set(SOLUTIONS)


def test_failures_carry_their_logs(retuned: tuple[TraceDB, RetuneSummary]) -> None:
    traces = latest_status(retuned[0])

    def log(name: str) -> str:
        return traces[name].evaluation.log or ""

    assert "boom from the solution" in log("raises") and "Traceback" in log("raises")
    assert "not_a_module_fib_test" in log("no_import")
    assert "SIGABRT" in log("aborts")
    assert "5 s" in log("hangs")
    assert "memory" in log("oom").lower()
    assert "shape [4, 4], expected [4, 8]" in log("wrong_shape")
    assert "torch.float64" in log("wrong_dtype")
    nan = traces["nan"].evaluation
    assert "NaN/Inf" in nan.log and nan.correctness.extra_info == {"non_finite_mismatches": 1}
    wrong = traces["wrong_value"].evaluation.correctness
    assert 0.009 < wrong.max_relative_error < 0.011
    for name in ("wrong_shape", "raises", "hangs"):
        assert traces[name].evaluation.correctness is None
        assert traces[name].evaluation.performance is None


def test_summary_table_names_winner_and_failures(retuned: tuple[TraceDB, RetuneSummary]) -> None:
    db, summary = retuned
    (bucket,) = summary.buckets[DEF]
    assert bucket.axes == (("batch_size", 4),)
    assert bucket.winner in ("good", "good_dps")
    # The noise rule may keep a winner slower than its runner-up, by no more than the noise
    # of the two measurements (fib_runtime.ranking).
    spreads = {t.solution: spread_of(t.evaluation) or 0.0 for t in db.traces_for(DEF, CPU_KEY)
               if t.evaluation.status is Status.PASSED}
    runner_up = ({"good", "good_dps"} - {bucket.winner}).pop()
    bound = noise(bucket.timing, spreads[bucket.winner], spreads[runner_up])
    assert bucket.speedup_vs_runner_up is not None
    assert bucket.speedup_vs_runner_up * (1.0 + bound) >= 1.0
    assert dict(bucket.failures)["hangs"] == "TIMEOUT"
    text = summary.table()
    assert "batch_size=4" in text and "aborts: RUNTIME_ERROR" in text
    assert summary.counts()["PASSED"] == 2


def test_resume_skips_measured_and_force_measures_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))
    db = make_db(tmp_path / "db", {n: SOLUTIONS[n] for n in ("good", "wrong_value")},
                 batches=(2, 3))
    first = retune(db, **FAST)
    assert len(first.outcomes) == 4 and first.skipped == 0
    # A later process resumes: the same database reopened from disk.
    again = retune(TraceDB.open(db.root), **FAST)
    assert again.outcomes == [] and again.skipped == 4
    assert len(again.buckets[DEF]) == 2  # the table still shows what was measured before
    forced = retune(TraceDB.open(db.root), solutions=["good"], force=True, **FAST)
    assert [o.solution for o in forced.outcomes] == ["good", "good"]
    assert len(TraceDB.open(db.root).traces_for(DEF)) == 6


def test_interrupted_run_resumes_only_the_rest(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))
    db = make_db(tmp_path / "db", {"good": SOLUTIONS["good"]}, batches=(2, 3))
    done = db.distinct_workloads(DEF)[0]
    data = factories.trace(DEF, "good", hardware=current_hardware().name)
    data["workload"] = done.workload.to_dict()
    db.append_traces([Trace.from_dict(data)])
    summary = retune(db, **FAST)
    assert summary.skipped == 1
    assert [o.workload for o in summary.outcomes] == [db.distinct_workloads(DEF)[1].workload.uuid]


def test_missing_blob_workload_is_reported_and_skipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))
    db = make_db(tmp_path / "db", {"good": SOLUTIONS["good"]}, batches=(2,))
    blob = {"type": "safetensors", "path": "blob/workloads/rmsnorm/x.safetensors",
            "tensor_key": "x"}
    lost = factories.workload(DEF, 3, x=blob, weight={"type": "random"})
    db.append_workloads([Trace.from_dict(lost)])
    summary = retune(db, **FAST)
    assert [u.workload for u in summary.unusable] == [lost["workload"]["uuid"]]
    assert "x.safetensors is missing" in summary.unusable[0].reason
    assert [o.status for o in summary.outcomes] == ["PASSED"]
    assert {t.workload.uuid for t in db.traces_for(DEF)} != {lost["workload"]["uuid"]}
    assert sum("x.safetensors" in r.getMessage() for r in caplog.records) == 1


def test_blob_inputs_are_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))
    db = make_db(tmp_path / "db", {"good": SOLUTIONS["good"]}, batches=())
    rel = "blob/workloads/rmsnorm/toy.safetensors"
    db.save_tensors(rel, {"x": torch.randn(5, 8)})
    desc = {"type": "safetensors", "path": rel, "tensor_key": "x"}
    db.append_workloads([Trace.from_dict(factories.workload(DEF, 5, x=desc,
                                                            weight={"type": "random"}))])
    summary = retune(db, **FAST)
    assert [o.status for o in summary.outcomes] == ["PASSED"] and not summary.unusable


def test_only_solutions_for_this_hardware_run(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))
    db = make_db(tmp_path / "db", {"good": SOLUTIONS["good"]}, hardware=("H100",))
    summary = retune(db, **FAST)
    assert summary.outcomes == [] and db.traces_for(DEF) == []


def test_tolerance_override_per_definition(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))
    db = make_db(tmp_path / "db", {"wrong_value": SOLUTIONS["wrong_value"]})
    summary = retune(db, config=RetuneConfig(tolerances={DEF: (1e-3, 2e-2)}), **FAST)
    assert [o.status for o in summary.outcomes] == ["PASSED"]


def test_unknown_names_are_refused(tmp_path: Path) -> None:
    db = make_db(tmp_path / "db", {"good": SOLUTIONS["good"]})
    with pytest.raises(RetuneError, match="unknown definitions: nope"):
        retune(db, definitions=["nope"], **FAST)
    with pytest.raises(RetuneError, match="unknown solutions: nope"):
        retune(db, solutions=["nope"], **FAST)
    with pytest.raises(RetuneError, match="no CUDA device"):
        retune(db, **{**FAST, "devices": "7"})


def test_a_retune_leaves_the_served_table_that_serving_starts_from(
        retuned: tuple[TraceDB, RetuneSummary]) -> None:
    from fib_runtime.dispatch.config import DispatchConfig
    from fib_runtime.dispatch.runtime import Runtime
    from fib_runtime.dispatch.table import compile_tables

    db, _ = retuned
    assert list((db.root / ".fib" / "tables").glob(f"{CPU_KEY}-*.json"))
    runtime = Runtime(db.root, watch=False)
    assert runtime.table_loads == {"served": 1} and runtime.db.parsed_traces == 0
    assert runtime.tables == compile_tables(TraceDB.open(db.root), CPU_KEY, DispatchConfig())
