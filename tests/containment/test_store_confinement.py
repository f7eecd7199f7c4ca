"""Record fields that would name a path outside the database: refused, nothing written there.

Each attack puts the database at `<tmp>/parent/db` and lists `<tmp>` before and after: the
only entries that may appear are under `<tmp>/parent/db` (and the build cache).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from fib_runtime.capture import capture_stats, disable_capture, enable_capture
from fib_runtime.errors import FibError, SchemaError
from fib_runtime.schema import Definition, Solution, Trace
from fib_runtime.store import TraceDB, layout
from tests import factories

HOSTILE = ["../../escape", "..", ".", "/tmp/abs", "a/../../b", "nul\0byte", "new\nline",
           "x" * 300, ""]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "parent" / "db"


def outside(root: Path) -> set[str]:
    """Everything under the test's folder that is not inside the database or the cache."""
    top = root.parent.parent
    return {str(p.relative_to(top)) for p in top.rglob("*")
            if p != root and root not in p.parents and "cache" not in p.parts}


def good_db(root: Path) -> TraceDB:
    db = TraceDB.open(root, create=True)
    db.add_definition(Definition.from_dict(factories.definition()))
    return db


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(data))


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("field", ["op_type", "name"])
def test_add_definition_refuses_a_name_that_leaves_the_root(root: Path, field: str,
                                                            value: str) -> None:
    db = good_db(root)
    before = outside(root)
    victim = Definition.from_dict(factories.definition(name="victim"))
    hostile = replace(victim, **{field: value})
    with pytest.raises(SchemaError) as info:
        db.add_definition(hostile)
    assert info.value.field == field
    assert outside(root) == before
    assert "victim" not in db.definitions and value not in db.definitions


@pytest.mark.parametrize("field,value", [("name", "../../../escape"), ("name", "/abs/x"),
                                         ("author", ".."), ("name", "a\0b")])
def test_add_solution_refuses_a_name_that_leaves_the_root(root: Path, field: str,
                                                          value: str) -> None:
    db = good_db(root)
    before = outside(root)
    good = Solution.from_dict(factories.solution("victim"))
    with pytest.raises(SchemaError) as info:
        db.add_solution(replace(good, **{field: value}))
    assert info.value.field == field
    assert outside(root) == before
    assert not db.solutions and not db.solutions_for("toy_norm_h8")


def test_hostile_records_on_disk_are_load_problems_and_the_rest_loads(root: Path) -> None:
    good_db(root)
    db_dir = root / layout.DEFINITIONS
    write_json(db_dir / "x" / "evil_op.json", factories.definition("evil_op",
                                                                   op_type="../../../escape"))
    write_json(db_dir / "x" / "evil_name.json", factories.definition("../evil"))
    write_json(root / layout.SOLUTIONS / "t" / "evil_sol.json",
               factories.solution("../../../../escape_sol"))
    write_json(root / layout.SOLUTIONS / "t" / "good_sol.json", factories.solution("good"))
    db = TraceDB.open(root)
    assert sorted(db.definitions) == ["toy_norm_h8"]
    assert sorted(db.solutions) == ["good"]
    fields = sorted((p.file.split(os.sep)[-1], p.field) for p in db.load_errors)
    assert fields == [("evil_name.json", "name"), ("evil_op.json", "op_type"),
                      ("evil_sol.json", "name")]


def injected(root: Path) -> TraceDB:
    """A database whose in-memory index holds a definition that bypassed every check (as a
    program could build one): the writers must still refuse its path."""
    db = good_db(root)
    evil = Definition.from_dict(factories.definition("evil", op_type="../../../escape"))
    db.definitions["evil"] = evil
    return db


def test_appends_of_a_hostile_definition_write_nothing_outside(root: Path) -> None:
    db = injected(root)
    before = outside(root)
    with pytest.raises(FibError):
        db.append_workloads([Trace.from_dict(factories.workload("evil"))])
    with pytest.raises(FibError):
        db.append_workloads([Trace.from_dict(factories.workload("evil"))], shard="s1")
    with pytest.raises(FibError):
        db.append_traces([Trace.from_dict(factories.trace("evil"))])
    assert outside(root) == before
    db.append_workloads([Trace.from_dict(factories.workload())])  # the rest still writes
    assert len(TraceDB.open(root).workloads_for("toy_norm_h8")) == 1


@pytest.mark.parametrize("dump", ["none", "all"])  # a workload line; a blob first
def test_capture_of_a_hostile_definition_is_counted_not_written_outside(root: Path,
                                                                        dump: str) -> None:
    import torch

    db = injected(root)
    before = outside(root)
    config = {"default": {"dump": dump}}
    try:
        with enable_capture(db, config) as session:
            record = session.recorder_for("evil")
            assert record is not None
            record((3,), (torch.ones(3, 8), torch.ones(8)))
            session.recorder_for("toy_norm_h8")((4,), (torch.ones(4, 8), torch.ones(8)))
            session.flush()
            stats = capture_stats()["definitions"]
    finally:
        disable_capture()
    assert outside(root) == before
    assert stats["evil"]["recorded"] == 0 and stats["evil"]["dropped"]["write_error"] == 1
    assert stats["toy_norm_h8"]["recorded"] == 1


def test_a_link_inside_the_database_to_outside_is_not_followed_by_writes(root: Path) -> None:
    db = good_db(root)
    elsewhere = root.parent / "elsewhere"
    elsewhere.mkdir()
    (root / layout.TRACES).mkdir()
    (root / layout.TRACES / "rmsnorm").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(FibError, match="outside the database root"):
        db.append_traces([Trace.from_dict(factories.trace())])
    assert list(elsewhere.iterdir()) == []


def test_retune_of_a_database_with_hostile_names_measures_the_rest(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fib_runtime.retuning import retune

    monkeypatch.setenv("FIB_CACHE_PATH", str(root.parent / "cache"))
    db = good_db(root)
    db.add_solution(Solution.from_dict(factories.solution("good")))
    db.append_workloads([Trace.from_dict(factories.workload())])
    evil = factories.definition("evil", op_type="../../../escape")
    write_json(root / layout.DEFINITIONS / "x" / "evil.json", evil)
    write_json(root / layout.SOLUTIONS / "t" / "evil_sol.json",
               factories.solution("evil_sol", "evil"))
    write_json(root / layout.WORKLOADS / "x" / "evil.jsonl", factories.workload("evil"))
    before = outside(root)
    summary = retune(root, warmup=1, iters=2, progress=False, devices="cpu")
    assert [o.solution for o in summary.outcomes] == ["good"]
    assert outside(root) == before


@pytest.mark.parametrize("linked", [".fib", ".fib/locks"])
def test_capture_through_a_lock_folder_linked_outside_creates_nothing_there(
        root: Path, linked: str) -> None:
    import torch

    db = good_db(root)
    elsewhere = root.parent / "elsewhere"
    elsewhere.mkdir()
    link = root / linked
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(elsewhere, target_is_directory=True)
    before = outside(root)
    try:
        with enable_capture(db) as session:
            session.recorder_for("toy_norm_h8")((4,), (torch.ones(4, 8), torch.ones(8)))
            session.flush()
            stats = capture_stats()["definitions"]["toy_norm_h8"]
    finally:
        disable_capture()
    assert list(elsewhere.iterdir()) == [] and outside(root) == before
    assert stats["recorded"] == 0 and stats["dropped"]["write_error"] == 1
    # Control: without the link, the same capture writes its workload (and its lock).
    link.unlink()
    with enable_capture(TraceDB.open(root)) as session:
        session.recorder_for("toy_norm_h8")((4,), (torch.ones(4, 8), torch.ones(8)))
    assert len(TraceDB.open(root).workloads_for("toy_norm_h8")) == 1
