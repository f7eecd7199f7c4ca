from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest
import torch

from fib_runtime.errors import StoreError
from fib_runtime.schema import Definition, SafetensorsInput, Solution, Trace
from fib_runtime.store import TraceDB
from tests.factories import definition, solution, trace, workload


def make_db(root: Path) -> TraceDB:
    db = TraceDB.open(root, create=True)
    db.add_definition(Definition.from_dict(definition()))
    db.add_solution(Solution.from_dict(solution()))
    return db


def test_writes_reload_with_indexes(tmp_path: Path) -> None:
    db = make_db(tmp_path)
    db.append_workloads([Trace.from_dict(workload(batch=b)) for b in (1, 2, 2)])
    db.append_traces([Trace.from_dict(trace(hardware=h))
                      for h in ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H200")])
    again = TraceDB.open(tmp_path)
    assert again.load_errors == []
    assert list(again.definitions) == ["toy_norm_h8"]
    assert [s.name for s in again.solutions_for("toy_norm_h8")] == ["toy_sol"]
    assert len(again.workloads_for("toy_norm_h8")) == 3
    assert len(again.traces_for("toy_norm_h8", "H100")) == 2
    assert len(again.traces_for("toy_norm_h8", "H200")) == 1
    assert again.hardware_keys("toy_norm_h8") == {"H100": 2, "H200": 1}
    # The layout is the FlashInfer Trace one.
    assert (tmp_path / "definitions/rmsnorm/toy_norm_h8.json").is_file()
    assert (tmp_path / "solutions/tests/rmsnorm/toy_norm_h8/toy_sol.json").is_file()
    assert (tmp_path / "workloads/rmsnorm/toy_norm_h8.jsonl").is_file()
    assert (tmp_path / "traces/rmsnorm/toy_norm_h8.jsonl").is_file()


def test_distinct_workloads_ignore_uuid(tmp_path: Path) -> None:
    db = make_db(tmp_path)
    db.append_workloads([Trace.from_dict(workload(batch=b)) for b in (1, 2, 2, 2, 3)])
    distinct = db.distinct_workloads("toy_norm_h8")
    assert [t.workload.axes["batch_size"] for t in distinct] == [1, 2, 3]


def test_tolerant_load_skips_and_counts(tmp_path: Path) -> None:
    db = make_db(tmp_path)
    db.append_traces([Trace.from_dict(trace(batch=b)) for b in (1, 2, 3)])
    path = tmp_path / "traces/rmsnorm/toy_norm_h8.jsonl"
    lines = path.read_bytes().splitlines()
    lines[1] = lines[1][:40]  # truncated line
    path.write_bytes(b"\n".join(lines) + b"\n")
    bad = definition(name="bad_def")
    bad["inputs"]["x"]["shape"] = ["batch_size", "nope"]
    (tmp_path / "definitions/rmsnorm/bad_def.json").write_bytes(orjson.dumps(bad))
    loaded = TraceDB.open(tmp_path)
    assert len(loaded.traces_for("toy_norm_h8")) == 2
    problems = {(p.file, p.line, p.field) for p in loaded.load_errors}
    assert problems == {("traces/rmsnorm/toy_norm_h8.jsonl", 2, None),
                        ("definitions/rmsnorm/bad_def.json", None, "inputs.x.shape[1]")}
    with pytest.raises(StoreError, match="2 problems"):
        TraceDB.open(tmp_path, strict=True)


def test_duplicate_names_are_errors(tmp_path: Path) -> None:
    make_db(tmp_path)
    copy = tmp_path / "solutions/other/rmsnorm/toy_norm_h8/toy_sol.json"
    copy.parent.mkdir(parents=True)
    shutil.copy(tmp_path / "solutions/tests/rmsnorm/toy_norm_h8/toy_sol.json", copy)
    loaded = TraceDB.open(tmp_path)
    assert loaded.solutions == {}  # which file owns the name cannot be told: neither is used
    assert sum("duplicate solution name" in p.reason for p in loaded.load_errors) == 2


def test_writer_after_a_partial_line_keeps_whole_lines(tmp_path: Path) -> None:
    db = make_db(tmp_path)
    db.append_traces([Trace.from_dict(trace(batch=1))])
    path = tmp_path / "traces/rmsnorm/toy_norm_h8.jsonl"
    with path.open("ab") as handle:
        handle.write(b'{"definition": "toy_norm_h8", "solu')  # a writer killed mid-line
    db.append_traces([Trace.from_dict(trace(batch=2))])
    loaded = TraceDB.open(tmp_path)
    assert sorted(t.workload.axes["batch_size"] for t in loaded.traces_for("toy_norm_h8")) == [1, 2]
    assert [p.line for p in loaded.load_errors] == [2]


def test_blobs_round_trip_and_missing_blob_is_a_warning(tmp_path: Path) -> None:
    db = make_db(tmp_path)
    x = torch.arange(12, dtype=torch.int32).reshape(3, 4)
    size = db.save_tensors("blob/workloads/rmsnorm/toy/a.safetensors", {"x": x})
    assert size > 0
    desc = SafetensorsInput("blob/workloads/rmsnorm/toy/a.safetensors", "x")
    assert torch.equal(db.load_tensor(desc), x)
    db.append_workloads([Trace.from_dict(workload(
        x={"type": "safetensors", "path": "./blob/missing.safetensors", "tensor_key": "x"},
        weight={"type": "random"}))])
    loaded = TraceDB.open(tmp_path)
    assert loaded.load_errors == []
    assert loaded.missing_blobs == {"./blob/missing.safetensors"}
    with pytest.raises(StoreError, match=r"blob file \./blob/missing\.safetensors is missing"):
        loaded.load_tensor(SafetensorsInput("./blob/missing.safetensors", "x"))


def test_blob_paths_must_stay_inside_the_root(tmp_path: Path) -> None:
    db = make_db(tmp_path / "db")
    with pytest.raises(StoreError, match="outside the database root"):
        db.load_tensor(SafetensorsInput("../../etc/passwd", "x"))


def test_appending_to_an_unknown_definition_fails_cleanly(tmp_path: Path) -> None:
    db = make_db(tmp_path)
    with pytest.raises(StoreError, match="unknown definition 'nope'"):
        db.append_traces([Trace.from_dict(trace(definition="nope"))])
    with pytest.raises(StoreError, match="not a workload"):
        db.append_workloads([Trace.from_dict(trace())])


def test_definitions_are_written_atomically(tmp_path: Path) -> None:
    db = make_db(tmp_path)
    with pytest.raises(StoreError, match="already exists"):
        db.add_definition(Definition.from_dict(definition()))
    db.add_definition(Definition.from_dict(definition(description="new")), replace=True)
    folder = tmp_path / "definitions/rmsnorm"
    assert [p.name for p in folder.iterdir()] == ["toy_norm_h8.json"]  # no temp files left
    assert TraceDB.open(tmp_path).definitions["toy_norm_h8"].description == "new"


def test_fingerprint_changes_with_traces(tmp_path: Path) -> None:
    db = make_db(tmp_path)
    before = db.fingerprint()
    db.append_workloads([Trace.from_dict(workload())])
    assert db.fingerprint() == before  # workloads do not change decisions
    db.append_traces([Trace.from_dict(trace())])
    assert db.fingerprint() != before


def test_a_process_can_skip_records_it_does_not_need(tmp_path: Path) -> None:
    db = make_db(tmp_path)
    db.append_workloads([Trace.from_dict(workload(batch=1))])
    db.append_traces([Trace.from_dict(trace(batch=1))])
    serving = TraceDB.open(tmp_path, workloads=False)
    assert serving.workloads_for("toy_norm_h8") == [] and serving.traces_for("toy_norm_h8")
    capturing = TraceDB.open(tmp_path, traces=False)
    assert capturing.traces_for("toy_norm_h8") == [] and capturing.workloads_for("toy_norm_h8")
    capturing.append_workloads([Trace.from_dict(workload(batch=2))])
    assert len(TraceDB.open(tmp_path).workloads_for("toy_norm_h8")) == 2
