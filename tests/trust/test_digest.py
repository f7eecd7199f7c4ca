"""Traces bound to content, written as the attacks: a solution changed under its name is not
served on the old numbers and is measured again; two files with one name are refused, and no
trace is credited to the wrong content. Unstamped (flashinfer-bench) traces still rank."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fib_runtime as fib
from fib_runtime.cli.main import main
from fib_runtime.ranking import measures, rank
from fib_runtime.retuning import retune
from fib_runtime.schema import Solution, Trace
from fib_runtime.schema.provenance import content_digest, digest_of, stamped
from fib_runtime.store import TraceDB, layout
from tests import factories
from tests.dispatch.helpers import SCALE_CODE, make_db
from tests.retune.helpers import SOLUTIONS
from tests.retune.helpers import make_db as bench_db
from tests.trust.foreign import write_json, write_lines

DEF = "toy_norm_h8"
CPU = "cpu"
NAN_CODE = "import torch\n\ndef run(x, weight):\n    return x * weight * float('nan')\n"
FAST = {"warmup": 1, "iters": 3, "progress": False, "devices": "cpu"}


@fib.apply(DEF)
def toy(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x * weight


def answer(batch: int = 4) -> float:
    return float(toy(torch.ones(batch, 8), torch.ones(8))[0, 0]) - 1.0


def measured(solution: Solution, batch: int = 4, latency: float = 0.01) -> Trace:
    """A PASSED CPU trace stamped with the solution's digest, as retune writes it."""
    trace = Trace.from_dict(factories.trace(DEF, solution.name, batch, latency=latency,
                                            hardware=CPU))
    evaluation = trace.evaluation
    assert evaluation is not None
    env = stamped(evaluation.environment, digest=content_digest(solution))
    return Trace.from_dict({**trace.to_dict(), "evaluation": {
        **evaluation.to_dict(), "environment": env.to_dict()}})


def test_a_changed_solution_is_not_served_on_the_old_trace(tmp_path: Path) -> None:
    db = make_db(tmp_path, {"mine": SCALE_CODE.format(tag=1)}, [])
    db.append_traces([measured(db.solutions["mine"])])
    with fib.enable_apply(tmp_path):
        assert answer() == 1.0
    # Same name, other code (the audit's version answered NaN on the old PASSED trace).
    changed = Solution.from_dict(factories.solution("mine", DEF, code=NAN_CODE))
    TraceDB.open(tmp_path).add_solution(changed, replace=True)
    with fib.enable_apply(tmp_path):
        assert answer() == 0.0  # the original, not NaN
        assert fib.stats()[DEF]["fallbacks"] == {"no_passing_solution": 1}
    results = rank(TraceDB.open(tmp_path).definitions[DEF],
                   TraceDB.open(tmp_path).traces_for(DEF), {"mine": changed}, "CPU")
    [result] = results.values()
    assert result.rejected == {"mine": "stale: its traces measured other content under this "
                                       "name"}


def test_a_running_server_reloads_a_changed_solution(tmp_path: Path) -> None:
    db = make_db(tmp_path, {"mine": SCALE_CODE.format(tag=1)}, [])
    db.append_traces([measured(db.solutions["mine"])])
    with fib.enable_apply(tmp_path, {"check_interval_s": 0}):
        assert answer() == 1.0
        changed = Solution.from_dict(factories.solution("mine", DEF,
                                                        code=SCALE_CODE.format(tag=7)))
        again = TraceDB.open(tmp_path)
        again.add_solution(changed, replace=True)
        again.append_traces([measured(changed)])
        fib.reload()
        assert answer() == 7.0  # the new content, built anew: not the old module


def test_retune_measures_a_changed_solution_again(tmp_path: Path) -> None:
    db = bench_db(tmp_path, {"good": SOLUTIONS["good"]})
    first = retune(db, **FAST)
    assert len(first.outcomes) == 1
    [trace] = TraceDB.open(tmp_path).traces_for(DEF)
    assert digest_of(trace.evaluation) == content_digest(db.solutions["good"])  # type: ignore[arg-type]
    assert retune(TraceDB.open(tmp_path), **FAST).skipped == 1  # unchanged: already measured
    code, dps = SOLUTIONS["wrong_value"]
    changed = Solution.from_dict(factories.solution("good", DEF, code=code, dps=dps))
    TraceDB.open(tmp_path).add_solution(changed, replace=True)
    again = retune(TraceDB.open(tmp_path), **FAST)
    assert again.skipped == 0 and [o.status for o in again.outcomes] == ["INCORRECT_NUMERICAL"]
    latest = TraceDB.open(tmp_path).traces_for(DEF)[-1]
    assert digest_of(latest.evaluation) == content_digest(changed)  # type: ignore[arg-type]
    assert retune(TraceDB.open(tmp_path), **FAST).skipped == 1


def test_measured_content_rule() -> None:
    assert measures({None}, "sha256:a")  # flashinfer-bench's own trace: bound by name
    assert measures({"sha256:a"}, "sha256:a")
    assert measures({"sha256:b", "sha256:a"}, "sha256:a")
    assert not measures({"sha256:b"}, "sha256:a")
    assert not measures({None, "sha256:b"}, "sha256:a")  # the unstamped one is stale too


def test_unstamped_traces_still_rank_and_explain_marks_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_db(tmp_path, {"mine": SCALE_CODE.format(tag=1)}, [("mine", 4, 0.01, CPU)])
    with fib.enable_apply(tmp_path):
        assert answer() == 1.0
    assert main(["explain", DEF, "--axes", "batch_size=4", "--db", str(tmp_path)]) == 0
    assert "unbound:     mine" in capsys.readouterr().out


def _two_files(root: Path) -> tuple[Solution, Solution, Path, Path]:
    """Two files naming one solution `twin`: the original, and a copy with other code whose
    file sorts first."""
    db = make_db(root, {"twin": SCALE_CODE.format(tag=1)}, [])
    original = db.solutions["twin"]
    db.append_traces([measured(original)])
    impostor = Solution.from_dict({**factories.solution("twin", DEF, code=NAN_CODE),
                                   "author": "a_first"})
    first = write_json(layout.solution_file(root, "a_first", "rmsnorm", DEF, "twin"),
                       impostor.to_dict())
    return original, impostor, first, db.solution_files["twin"]


def test_two_files_with_one_name_are_refused_naming_both(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, _, first, second = _two_files(tmp_path)
    db = TraceDB.open(tmp_path)
    assert "twin" not in db.solutions
    names = {str(first.relative_to(tmp_path)), str(second.relative_to(tmp_path))}
    for problem in db.load_errors:
        assert problem.field == "name" and "duplicate solution name 'twin'" in problem.reason
        assert names == {problem.file} | {n for n in names if n in problem.reason}
    assert {p.file for p in db.load_errors} == names
    with fib.enable_apply(tmp_path):
        assert answer() == 0.0  # neither wins
    assert main(["validate", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert all(n in out for n in names)


def test_no_trace_is_credited_to_the_wrong_content(tmp_path: Path) -> None:
    original, _, first, second = _two_files(tmp_path)
    second.unlink()  # only the impostor remains under the name
    with fib.enable_apply(tmp_path):
        assert answer() == 0.0  # the original's trace does not serve the impostor
    first.unlink()
    write_json(second, original.to_dict())  # the original back: its trace serves again
    with fib.enable_apply(tmp_path):
        assert answer() == 1.0


def test_zero_latency_does_not_win(tmp_path: Path) -> None:
    make_db(tmp_path, {"honest": SCALE_CODE.format(tag=1), "zero": SCALE_CODE.format(tag=2)},
            [("honest", 4, 0.01, CPU)])
    line = factories.trace(DEF, "zero", 4, hardware=CPU)
    line["evaluation"]["performance"] = {}  # the format's default: latency 0.0
    write_lines(layout.trace_file(tmp_path, "rmsnorm", DEF), [line])
    with fib.enable_apply(tmp_path):
        assert answer() == 1.0
