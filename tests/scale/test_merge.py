"""`fib merge`: dedup by content, conflicts, traces, interruption and rerun."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from fib_runtime.schema import Definition, Solution, Trace
from fib_runtime.store import TraceDB
from fib_runtime.store import db as db_module
from fib_runtime.store import merge as merge_module
from fib_runtime.store.merge import merge
from tests import factories

NORM = "toy_norm_h8"


def _db(root: Path, *, solution_code: str = factories.RMSNORM_REFERENCE) -> TraceDB:
    db = TraceDB.open(root, create=True)
    db.add_definition(Definition.from_dict(factories.definition()))
    db.add_solution(Solution.from_dict(factories.solution(code=solution_code)))
    return db


def _blob_workload(db: TraceDB, uuid: str, value: float, batch: int = 2) -> Trace:
    rel = f"blob/workloads/rmsnorm/{NORM}/{NORM}_{uuid}.safetensors"
    db.save_tensors(rel, {"x": torch.full((batch, 8), value)})
    data = factories.workload(batch=batch, x={"type": "safetensors", "path": rel,
                                              "tensor_key": "x"},
                              weight={"type": "random"})
    data["workload"]["uuid"] = uuid
    return Trace.from_dict(data)


def test_blob_workloads_dedup_by_content_and_copy_their_blobs(tmp_path: Path) -> None:
    a, b = _db(tmp_path / "a"), _db(tmp_path / "b")
    a.append_workloads([_blob_workload(a, "a1", 1.0), _blob_workload(a, "a2", 2.0)])
    # b captured the same key: once with the same bytes as a1, once with other bytes
    b.append_workloads([_blob_workload(b, "b1", 1.0), _blob_workload(b, "b2", 3.0)])
    report = merge([tmp_path / "a", tmp_path / "b"], tmp_path / "d")
    assert (report.workloads, report.blobs, report.duplicates) == (3, 3, 1)
    dest = TraceDB.open(tmp_path / "d", strict=True)
    assert sorted(t.workload.uuid for t in dest.workloads_for(NORM)) == ["a1", "a2", "b2"]
    assert not dest.missing_blobs
    (b1,) = [t for t in dest.workloads_for(NORM) if t.workload.uuid == "b2"]
    assert float(dest.load_tensor(b1.workload.inputs["x"])[0, 0]) == 3.0


def test_traces_dedup_by_solution_workload_hardware(tmp_path: Path) -> None:
    a = _db(tmp_path / "a")
    h100 = Trace.from_dict(factories.trace(hardware="NVIDIA H100 80GB HBM3"))
    h200 = copy.deepcopy(h100.to_dict())
    h200["evaluation"]["environment"]["hardware"] = "NVIDIA H200"
    a.append_traces([h100, Trace.from_dict(h200), h100])  # one written twice
    report = merge([tmp_path / "a"], tmp_path / "d")
    assert (report.traces, report.duplicates, report.solutions) == (2, 1, 1)
    again = merge([tmp_path / "a"], tmp_path / "d")
    assert (again.traces, again.workloads, again.solutions, again.definitions) == (0, 0, 0, 0)
    dest = TraceDB.open(tmp_path / "d", strict=True)
    assert sorted(dest.hardware_keys(NORM)) == sorted(a.hardware_keys(NORM))


def test_conflicting_solution_keeps_its_traces_out(tmp_path: Path) -> None:
    _db(tmp_path / "d")
    other = _db(tmp_path / "a", solution_code=factories.RMSNORM_REFERENCE + "\n# v2\n")
    other.append_traces([Trace.from_dict(factories.trace())])
    report = merge([tmp_path / "a"], tmp_path / "d")
    assert report.traces == 0 and len(report.conflicts) == 1
    assert "toy_sol" in report.conflicts[0]
    assert TraceDB.open(tmp_path / "d").traces_for(NORM) == []


def test_conflicting_definition_is_reported_not_merged(tmp_path: Path) -> None:
    _db(tmp_path / "d")
    src = TraceDB.open(tmp_path / "a", create=True)
    src.add_definition(Definition.from_dict(factories.definition(description="other")))
    src.append_workloads([Trace.from_dict(factories.workload())])
    report = merge([tmp_path / "a"], tmp_path / "d")
    assert report.workloads == 0 and "definition 'toy_norm_h8'" in report.conflicts[0]


def test_source_equal_to_destination_is_refused(tmp_path: Path) -> None:
    _db(tmp_path / "a")
    with pytest.raises(Exception, match="cannot be the destination"):
        merge([tmp_path / "a"], tmp_path / "a")


def test_interrupted_merge_leaves_a_loadable_dest_and_a_rerun_completes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _db(tmp_path / "a")
    src.append_workloads([_blob_workload(src, f"w{i}", float(i)) for i in range(3)])
    src.append_workloads([Trace.from_dict(factories.workload(batch=b)) for b in (5, 6)])
    src.append_traces([Trace.from_dict(factories.trace(batch=b)) for b in (1, 2)])
    merge([tmp_path / "a"], tmp_path / "full")

    real_write, real_copy = db_module.write_atomic, merge_module._copy_atomic
    writers = (db_module, merge_module)  # every atomic write of a merge is one of theirs
    stop_after, finished = 0, False
    while not finished:  # interrupt before each atomic write or blob copy in turn
        calls = {"n": 0}

        def gate(calls: dict[str, int] = calls, stop_after: int = stop_after) -> None:
            calls["n"] += 1
            if calls["n"] > stop_after:
                raise KeyboardInterrupt

        def write(target: Path, data: bytes, gate=gate) -> None:
            gate()
            real_write(target, data)

        def copy(source: Path, target: Path, gate=gate) -> None:
            gate()
            real_copy(source, target)

        dest = tmp_path / f"d{stop_after}"
        for module in writers:
            monkeypatch.setattr(module, "write_atomic", write)
        monkeypatch.setattr(merge_module, "_copy_atomic", copy)
        try:
            merge([tmp_path / "a"], dest)
            finished = True
        except KeyboardInterrupt:
            pass
        for module in writers:
            monkeypatch.setattr(module, "write_atomic", real_write)
        monkeypatch.setattr(merge_module, "_copy_atomic", real_copy)
        TraceDB.open(dest, strict=True)  # loadable: no partial line, no half file
        report = merge([tmp_path / "a"], dest)
        assert report.conflicts == []
        assert _content(dest) == _content(tmp_path / "full")
        stop_after += 1
    assert stop_after == 8  # definition, solution, 3 blobs, workloads, traces: all covered


def _content(root: Path) -> dict[str, list[bytes]]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and ".fib" not in path.parts:
            out[str(path.relative_to(root))] = sorted(path.read_bytes().splitlines())
    return out


def test_traces_without_their_solution_file_merge_once(tmp_path: Path) -> None:
    _db(tmp_path / "d")
    src = TraceDB.open(tmp_path / "a", create=True)  # traces only: no solution file
    src.add_definition(Definition.from_dict(factories.definition()))
    src.append_traces([Trace.from_dict(factories.trace())])
    assert merge([tmp_path / "a"], tmp_path / "d").traces == 1
    assert merge([tmp_path / "a"], tmp_path / "d").traces == 0
