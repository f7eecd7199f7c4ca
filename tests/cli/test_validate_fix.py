"""`fib validate`: odd entries are reported (not silently skipped); `--fix` removes the
leftovers of killed writers (orphan temporary files, blobs nothing refers to) and nothing a
live writer or a record still uses."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from fib_runtime.cli.main import main
from fib_runtime.schema import Definition, Solution, Trace
from fib_runtime.store import TraceDB, files, layout, tidy
from tests import factories

DEF = "toy_norm_h8"
OLD = time.time() - 3600


def toy_db(root: Path) -> TraceDB:
    db = TraceDB.open(root, create=True)
    db.add_definition(Definition.from_dict(factories.definition()))
    db.add_solution(Solution.from_dict(factories.solution("good")))
    db.append_workloads([Trace.from_dict(factories.workload(batch=2))])
    db.append_traces([Trace.from_dict(factories.trace("toy_norm_h8", "good"))])
    return db


def validate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    code = main(["validate", *args])
    return code, capsys.readouterr().out.splitlines()


def aged(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (OLD, OLD))
    return path


# -- odd entries -----------------------------------------------------------------------------

def test_odd_entries_are_reported_with_their_path_and_the_rest_loads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toy_db(tmp_path)
    defs = tmp_path / layout.DEFINITIONS / "rmsnorm"
    (defs / "folder.json").mkdir()
    os.mkfifo(defs / "pipe.json")  # never opened: validate must not block on it
    (defs / "dangling.json").symlink_to(tmp_path / "nowhere.json")
    (defs / "loop.json").symlink_to(defs / "loop.json")
    (defs / "linked_dir").symlink_to(tmp_path / layout.SOLUTIONS, target_is_directory=True)
    (tmp_path / layout.TRACES / "rmsnorm" / f"{DEF}.jsonl").unlink()
    (tmp_path / layout.TRACES / "rmsnorm").rmdir()
    (tmp_path / layout.TRACES).rmdir()
    (tmp_path / layout.TRACES).write_text("not a folder")
    result: list[tuple[int, list[str]]] = []
    thread = threading.Thread(target=lambda: result.append(validate(capsys, str(tmp_path))),
                              daemon=True)
    thread.start()
    thread.join(60)
    assert result, "fib validate blocked (did it open the FIFO?)"
    code, out = result[0]
    assert code == 1
    errors = {line.split(": ", 2)[1]: line for line in out if line.startswith("error: ")}
    rel = f"{layout.DEFINITIONS}/rmsnorm"
    assert "folder named like a .json file" in errors[f"{rel}/folder.json"]
    assert "FIFO" in errors[f"{rel}/pipe.json"]
    assert "dangling link" in errors[f"{rel}/dangling.json"]
    assert "link loop" in errors[f"{rel}/loop.json"]
    assert "link to a folder" in errors[f"{rel}/linked_dir"]
    assert "not a folder" in errors[layout.TRACES]
    assert len(errors) == 6
    assert out[0].endswith("1 definitions, 1 solutions, 1 workloads, 0 traces")


def test_a_clean_database_validates_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    toy_db(tmp_path)
    code, out = validate(capsys, str(tmp_path))
    assert code == 0 and out[-1] == "ok"


# -- leftovers -------------------------------------------------------------------------------

def blob_workload(db: TraceDB, name: str) -> Path:
    """A workload line whose input lives in a blob; returns the blob."""
    rel = f"{layout.BLOB}/{layout.WORKLOADS}/rmsnorm/{DEF}/{name}.safetensors"
    data = factories.workload(batch=3, x={"type": "safetensors", "path": rel, "tensor_key": "x"},
                              weight={"type": "random"})
    db.append_workloads([Trace.from_dict(data)])
    return aged(db.root / rel)


def test_validate_lists_leftovers_and_fix_removes_only_those(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = toy_db(tmp_path)
    used = blob_workload(db, "used")
    blob_dir = used.parent
    orphan_blob = aged(blob_dir / "orphan.safetensors")
    fresh_blob = blob_dir / "fresh.safetensors"  # a capture that has not written its line yet
    fresh_blob.write_bytes(b"x")
    defs = tmp_path / layout.DEFINITIONS / "rmsnorm"
    orphan_tmp = aged(defs / f".{DEF}.json.k2j3h4.tmp")
    fresh_tmp = defs / ".other.json.a8b7c6.tmp"  # a writer busy right now
    fresh_tmp.write_bytes(b"{")
    torn_ref = f"{layout.BLOB}/{layout.WORKLOADS}/rmsnorm/{DEF}/torn.safetensors"
    torn_blob = aged(tmp_path / torn_ref)  # referenced only by a torn line: kept
    path = layout.workload_file(tmp_path, "rmsnorm", DEF)
    with path.open("ab") as handle:
        handle.write(b'{"definition":"toy_norm_h8","workload":{"inputs":{"x":{"path":"'
                     + torn_ref.encode() + b'"')
    os.utime(path, (OLD, OLD))

    code, out = validate(capsys, str(tmp_path))
    leftovers = sorted(line.split(": ")[1] for line in out if line.startswith("leftover: "))
    assert leftovers == sorted([str(orphan_blob.relative_to(tmp_path)),
                                str(orphan_tmp.relative_to(tmp_path))])
    assert orphan_blob.exists() and orphan_tmp.exists()  # listing removes nothing
    assert code == 1  # the torn line is a load problem

    code, out = validate(capsys, str(tmp_path), "--fix")
    removed = sorted(line.split(": ")[1] for line in out if line.startswith("removed: "))
    assert removed == leftovers
    assert not orphan_blob.exists() and not orphan_tmp.exists()
    for kept in (used, fresh_blob, fresh_tmp, torn_blob):
        assert kept.exists(), kept
    assert len(TraceDB.open(tmp_path).workloads_for(DEF)) == 2

    code, out = validate(capsys, str(tmp_path), "--fix", "--min-age", "0")
    removed = sorted(line.split(": ")[1] for line in out if line.startswith("removed: "))
    assert removed == sorted([str(fresh_blob.relative_to(tmp_path)),
                              str(fresh_tmp.relative_to(tmp_path))])


def test_fix_keeps_a_temporary_file_whose_target_is_locked(tmp_path: Path) -> None:
    toy_db(tmp_path)
    target = layout.trace_file(tmp_path, "rmsnorm", DEF)
    tmp = aged(target.with_name(f".{target.name}.zz9.tmp"))
    found = tidy.leftovers(tmp_path)
    assert found.temporary == [tmp]
    with files.lock_for(tmp_path, target):  # a merge rewriting the file holds this lock
        assert tidy.remove(tmp_path, found) == []
    assert tmp.exists() and "being written now" in found.kept[0]
    assert tidy.remove(tmp_path, tidy.leftovers(tmp_path)) == [tmp]


def test_blobs_are_not_touched_while_a_workload_folder_is_unreadable(tmp_path: Path) -> None:
    db = toy_db(tmp_path)
    orphan = aged(tmp_path / layout.BLOB / "x" / "orphan.safetensors")
    hidden = tmp_path / layout.WORKLOADS / "rmsnorm" / "more"
    hidden.symlink_to(tmp_path / "elsewhere", target_is_directory=True)  # dangling
    found = tidy.leftovers(db.root)
    assert found.blobs == [] and "blobs are not checked" in found.kept[0]
    assert orphan.exists()


KILLED_WRITER = """
import os, sys, time
from pathlib import Path
from fib_runtime import files
os.fsync = lambda fd: time.sleep(600)  # killed while its temporary file is half done
files.write_atomic(Path(sys.argv[1]), b"{}")
"""


def test_the_temporary_file_of_a_sigkilled_writer_is_found_and_removed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import signal
    import subprocess
    import sys

    toy_db(tmp_path)
    target = tmp_path / layout.DEFINITIONS / "rmsnorm" / "late.json"
    repo = Path(__file__).resolve().parents[2]
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], cwd=repo,
                             env={**os.environ, "PYTHONPATH": str(repo)})
    deadline = time.monotonic() + 60
    while not list(target.parent.glob(".late.json.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tidy.leftovers(tmp_path).temporary == []  # too fresh: maybe a live writer
    child.send_signal(signal.SIGKILL)
    child.wait()
    [orphan] = target.parent.glob(".late.json.*.tmp")
    os.utime(orphan, (OLD, OLD))  # ... and then it was left for an hour
    code, out = validate(capsys, str(tmp_path), "--fix")
    assert f"removed: {orphan.relative_to(tmp_path)}" in out
    assert not orphan.exists() and not target.exists()
    assert code == 0
