"""Hostile nesting and failing disks: a load problem or a clean stop, never a torn file.

- A definition `reference` nested 200k deep, and an unknown field nested 300 deep, are
  load problems; the rest of the database loads, `fib ls` and `fib retune` work.
- A full disk (ENOSPC part way through a write) or a read-only database (EROFS, simulated so
  that it also holds when the tests run as root) stop `fib retune` with a RetuneError that
  says how many results were lost; every trace file stays whole, and a later retune
  measures the rest.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from fib_runtime.cli.main import main
from fib_runtime.retuning import RetuneError, retune
from fib_runtime.schema import Definition, Solution, Trace
from fib_runtime.store import TraceDB, files, layout
from tests import factories

FAST: dict[str, Any] = {"warmup": 1, "iters": 2, "progress": False, "devices": "cpu"}
DEF = "toy_norm_h8"


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def toy_db(root: Path, *, solutions: int = 1, batches: tuple[int, ...] = (2, 3)) -> TraceDB:
    db = TraceDB.open(root, create=True)
    db.add_definition(Definition.from_dict(factories.definition()))
    for i in range(solutions):
        db.add_solution(Solution.from_dict(factories.solution(f"sol{i}")))
    db.append_workloads(Trace.from_dict(factories.workload(batch=b)) for b in batches)
    return db


def whole_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSONL file, asserting the file has no torn line."""
    data = path.read_bytes() if path.exists() else b""
    assert not data or data.endswith(b"\n"), data[-200:]
    return [orjson.loads(line) for line in data.splitlines()]


# -- nesting ---------------------------------------------------------------------------------

@pytest.mark.parametrize("reference", ["-" * 200_000 + "x", "not " * 100_000 + "x",
                                       "(" * 100_000 + "x" + ")" * 100_000])
def test_a_reference_nested_200k_deep_is_a_load_problem(tmp_path: Path, reference: str) -> None:
    toy_db(tmp_path)
    evil = factories.definition("evil", reference=f"def run(x, weight):\n    return {reference}\n")
    path = tmp_path / layout.DEFINITIONS / "rmsnorm" / "evil.json"
    path.write_bytes(orjson.dumps(evil))
    db = TraceDB.open(tmp_path)
    assert sorted(db.definitions) == [DEF]
    [problem] = db.load_errors
    assert problem.file.endswith("evil.json") and problem.field == "reference"


def test_a_record_nested_deeper_than_json_nesting_allows_is_a_load_problem(
        tmp_path: Path) -> None:
    toy_db(tmp_path)
    path = tmp_path / layout.DEFINITIONS / "rmsnorm" / "deep.json"
    data = orjson.dumps(factories.definition("deep"))
    path.write_bytes(data[:-1] + b',"x":' + b"[" * 5000 + b"]" * 5000 + b"}")
    db = TraceDB.open(tmp_path)
    assert sorted(db.definitions) == [DEF]
    assert [p.file.endswith("deep.json") for p in db.load_errors] == [True]


@pytest.mark.parametrize("where", ["workload", "input"])
def test_an_unknown_field_nested_300_deep_is_a_load_problem_and_ls_and_retune_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        where: str) -> None:
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))
    toy_db(tmp_path / "db", batches=(2,))
    line = orjson.loads(orjson.dumps(factories.workload(batch=5)))
    target = line["workload"] if where == "workload" else line["workload"]["inputs"]["x"]
    target["future"] = "@DEEP@"
    raw = orjson.dumps(line).replace(b'"@DEEP@"', nested(300))
    workloads = tmp_path / "db" / layout.WORKLOADS / "rmsnorm" / f"{DEF}.jsonl"
    with workloads.open("ab") as handle:
        handle.write(raw + b"\n")
    db = TraceDB.open(tmp_path / "db")
    assert len(db.workloads_for(DEF)) == 1
    [problem] = db.load_errors
    assert problem.line == 2 and problem.field == "future"
    assert "nested deeper" in problem.reason
    assert main(["ls", str(tmp_path / "db")]) == 0
    assert f"{DEF}" in capsys.readouterr().out
    if where == "input":  # one retune is enough to show it gets past that workload
        summary = retune(tmp_path / "db", **FAST)
        assert [o.status for o in summary.outcomes] == ["PASSED"]


def test_an_unknown_field_nested_100_deep_still_loads_and_round_trips(tmp_path: Path) -> None:
    toy_db(tmp_path, batches=())
    line = orjson.loads(orjson.dumps(factories.workload(batch=5)))
    line["workload"]["future"] = "@DEEP@"
    raw = orjson.dumps(line).replace(b'"@DEEP@"', nested(100))
    path = tmp_path / layout.WORKLOADS / "rmsnorm" / f"{DEF}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw + b"\n")
    db = TraceDB.open(tmp_path, strict=True)
    assert len(db.distinct_workloads(DEF)) == 1
    assert orjson.dumps(db.workloads_for(DEF)[0].to_dict())  # writable again


# -- failing disks ---------------------------------------------------------------------------

def _trace_file(fd: int) -> bool:
    return f"{os.sep}{layout.TRACES}{os.sep}" in os.readlink(f"/proc/self/fd/{fd}")


def full_disk(monkeypatch: pytest.MonkeyPatch, *, after: int = 0) -> list[int]:
    """Trace writes succeed `after` times, then write half their bytes and fail ENOSPC."""
    real_write = os.write
    calls: list[int] = []

    def write(fd: int, data: Any) -> int:
        if not _trace_file(fd):
            return real_write(fd, data)
        calls.append(len(data))
        if len(calls) <= after:
            return real_write(fd, data)
        if len(calls) == after + 1 and len(data) > 1:
            return real_write(fd, bytes(data[: len(data) // 2]))  # a partial write...
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # ...then the disk is full

    monkeypatch.setattr(files.os, "write", write)
    return calls


def read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening a trace file for writing fails EROFS (chmod would not stop root)."""
    real_open = os.open

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if f"{os.sep}{layout.TRACES}{os.sep}" in str(path) and flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(files.os, "open", open_)


def test_a_failed_append_leaves_the_file_as_it_was(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    db = toy_db(tmp_path)
    db.append_traces([Trace.from_dict(factories.trace())])
    path = layout.trace_file(tmp_path, "rmsnorm", DEF)
    before = path.read_bytes()
    full_disk(monkeypatch)
    with pytest.raises(OSError) as info:
        db.append_traces([Trace.from_dict(factories.trace(batch=b)) for b in range(1, 50)])
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == before


FaultMaker = Callable[[pytest.MonkeyPatch], Any]
FAULTS: dict[str, FaultMaker] = {
    "full_disk_after_two": lambda mp: full_disk(mp, after=2),
    "read_only": read_only,
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_retune_on_a_failing_disk_stops_cleanly_and_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))
    root = tmp_path / "db"
    toy_db(root, solutions=2, batches=(2, 3, 4))  # six results in all
    with monkeypatch.context() as mp:
        FAULTS[fault](mp)
        with pytest.raises(RetuneError) as info:
            retune(root, **FAST)
    error = info.value
    written = 2 if fault == "full_disk_after_two" else 0
    assert error.written == written
    assert error.lost >= 1 and f"{error.lost} measured results were not written" in str(error)
    path = layout.trace_file(root, "rmsnorm", DEF)
    assert len(whole_lines(path)) == written  # the files are whole: no torn line
    assert not TraceDB.open(root).load_errors
    summary = retune(root, **FAST)  # the disk is back: the rest is measured
    assert summary.skipped == written and len(summary.outcomes) == 6 - written
    assert len(whole_lines(path)) == 6


def test_fib_retune_on_a_read_only_database_exits_non_zero_and_says_what_was_lost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))
    toy_db(tmp_path / "db")
    read_only(monkeypatch)
    code = main(["retune", str(tmp_path / "db"), "--devices", "cpu", "--warmup", "1",
                 "--iters", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "Read-only file system" in err and "results were not written" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("where", ["correctness", "libs"])
def test_free_form_trace_fields_nested_300_deep_are_load_problems(tmp_path: Path,
                                                                  where: str) -> None:
    toy_db(tmp_path, batches=())
    line = factories.trace()
    evaluation = line["evaluation"]
    if where == "correctness":
        evaluation["correctness"]["extra"] = {"x": "@DEEP@"}
    else:
        evaluation["environment"]["libs"]["x"] = "@DEEP@"
    raw = orjson.dumps(line).replace(b'"@DEEP@"', nested(300))
    path = tmp_path / layout.TRACES / "rmsnorm" / f"{DEF}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw + b"\n" + orjson.dumps(factories.trace()) + b"\n")
    db = TraceDB.open(tmp_path)
    assert len(db.traces_for(DEF)) == 1
    [problem] = db.load_errors
    assert problem.line == 1 and "nested deeper" in problem.reason
