"""The step gate: a per-op winner that slows the step it runs in is rejected and pinned to the
original in the database (FlashInfer Trace format), `fib explain` says why; a choice that
makes the step faster is kept. CPU: the gate runs eager only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import fib_runtime as fib
from fib_runtime.cli.main import main
from fib_runtime.schema import Definition, Solution, Trace
from fib_runtime.schema.provenance import GATE_KEY, GATE_REJECTED
from fib_runtime.store import TraceDB
from tests import factories
from tests.verify.steps import EVEN_CODE, POLLUTING_CODE, QUICK_CODE

STEP = "tests.verify.steps:polluting_step"


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TraceDB:
    """Per op, both definitions' solutions were measured far faster than the originals."""
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))
    db = TraceDB.open(tmp_path / "db", create=True)
    hardware = fib.current_hardware().name
    for name, hidden, solution, code in (("toy_norm_h8", 8, "pollutes", POLLUTING_CODE),
                                         ("toy_norm_h16", 16, "quick", QUICK_CODE)):
        db.add_definition(Definition.from_dict(factories.definition(name, hidden)))
        db.add_solution(Solution.from_dict(factories.solution(solution, name, code=code)))
        db.append_traces([Trace.from_dict(factories.trace(name, solution, 4, latency=0.001,
                                                          hardware=hardware))])
    return db


def test_a_per_op_winner_that_slows_the_step_is_rejected_and_pinned(
        db: TraceDB, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "verify.json"
    assert main(["verify", STEP, "--db", str(db.root), "--rounds", "3",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    (eager,) = report["verdicts"]
    assert eager["regime"] == "eager" and eager["slower"]
    assert eager["rejected"] == ["toy_norm_h8"]  # only the op that slowed the step
    assert eager["choices_ms"] > eager["original_ms"]
    assert eager["final_ms"] < eager["original_ms"]  # toy_norm_h16's choice is kept
    assert "graph" in report["not_measured"]  # a CPU runs eager only
    assert "pinned to the original (eager): toy_norm_h8 at {'batch_size': 4}" in printed
    # The pin is a trace in the format: the rejected solution's own measurement, stamped.
    fresh = TraceDB.open(db.root)
    pins = [t for t in fresh.traces_for("toy_norm_h8")
            if t.evaluation and t.evaluation.environment.libs.get(GATE_KEY) == GATE_REJECTED]
    assert [t.solution for t in pins] == ["pollutes"]
    assert pins[0].evaluation.log.startswith(f"fib verify {STEP} (eager)")
    # Dispatch now serves the engine's own function there, and explain says why.
    with fib.enable_apply(db.root, {"check_interval_s": 0}):
        served = fib.explain("toy_norm_h8", {"batch_size": 4})
        kept = fib.explain("toy_norm_h16", {"batch_size": 4})
    assert served.decision == "fallback"
    assert any("rejected by the step gate" in note for note in served.notes), served.notes
    assert kept.decision == "quick"
    # The gate, run again, finds nothing slower.
    assert main(["verify", STEP, "--db", str(db.root), "--rounds", "3", "--json",
                 str(out)]) == 0
    (again,) = json.loads(out.read_text())["verdicts"]
    assert not again["slower"] and again["rejected"] == []


def test_a_choice_the_step_cannot_tell_from_the_original_is_not_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Measured per op far faster, in the step as long as the original: the engine's own path
    stays (retune's displacement rule: only an advantage beyond the noise displaces it)."""
    from fib_runtime.verify import verify

    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))
    db = TraceDB.open(tmp_path / "db", create=True)
    db.add_definition(Definition.from_dict(factories.definition("toy_norm_h32", 32)))
    db.add_solution(Solution.from_dict(factories.solution("even", "toy_norm_h32",
                                                          code=EVEN_CODE)))
    db.append_traces([Trace.from_dict(factories.trace(
        "toy_norm_h32", "even", 4, latency=0.001, hardware=fib.current_hardware().name))])
    report = verify("tests.verify.steps:even_step", db.root, rounds=3)
    (eager,) = report.verdicts
    assert eager.rejected == ("toy_norm_h32",)
    assert eager.pinned == (("toy_norm_h32", {"batch_size": 4}),)
    assert "rejected toy_norm_h32" in report.table()
    with fib.enable_apply(db.root, {"check_interval_s": 0}):
        assert fib.explain("toy_norm_h32", {"batch_size": 4}).decision == "fallback"


def test_report_only_writes_nothing(db: TraceDB):
    from fib_runtime.verify import verify

    before = len(TraceDB.open(db.root).traces_for("toy_norm_h8"))
    report = verify(STEP, db.root, rounds=3, pin=False)
    assert report.verdicts[0].rejected == ("toy_norm_h8",)
    assert len(TraceDB.open(db.root).traces_for("toy_norm_h8")) == before


@pytest.mark.parametrize(("argv", "message"), [
    (["verify", "no_colon_here"], "module:factory"),
    (["verify", "tests.verify.steps:missing"], "AttributeError"),
    (["verify", STEP, "--arg", "batch"], "NAME=VALUE"),
    (["verify", STEP, "--regimes", "warp"], "--regimes"),
])
def test_bad_steps_and_options_are_one_line_errors(
        db: TraceDB, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]):
    assert main([*argv, "--db", str(db.root)]) == 1
    assert message in capsys.readouterr().err


def test_the_shipped_llama_layer_is_a_gate_step(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch):
    """integration.llama_decode_layer:gate_step runs under the gate (no choices measured
    here: nothing served, nothing slower, nothing pinned)."""
    from fib_runtime.catalogue import install
    from fib_runtime.verify import verify

    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))
    db = TraceDB.open(tmp_path / "db", create=True)
    install(db)
    report = verify("integration.llama_decode_layer:gate_step", db.root, rounds=2,
                    kwargs={"batch": 1, "kv_len": 4}, pin=False)
    (eager,) = report.verdicts
    assert eager.original_ms > 0 and eager.rejected == ()
