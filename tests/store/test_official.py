"""The official data loads through the store, dumps back exactly, and validates."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson

from fib_runtime.store import TraceDB


def test_store_round_trip_of_official_data(official: Path, tmp_path: Path) -> None:
    db = TraceDB.open(official)
    assert db.load_errors == []
    assert len(db.definitions) == 156
    # Workloads whose blobs are not published are flagged, not rejected.
    assert db.missing_blobs and all("gqa" in p or "mla" in p or "moe" in p
                                    for p in db.missing_blobs)
    copy = TraceDB.open(tmp_path, create=True)
    for definition in db.definitions.values():
        copy.add_definition(definition)
        copy.append_workloads(db.workloads_for(definition.name))
    for path in (official / "definitions").rglob("*.json"):
        rel = path.relative_to(official)
        assert orjson.loads((tmp_path / rel).read_bytes()) == orjson.loads(path.read_bytes())
    for path in (official / "workloads").rglob("*.jsonl"):
        rel = path.relative_to(official)
        ours = [orjson.loads(x) for x in (tmp_path / rel).read_bytes().splitlines()]
        theirs = [orjson.loads(x) for x in path.read_bytes().splitlines()]
        assert ours == theirs, rel


def broken_copy(official: Path, tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(official, root)
    wl = root / "workloads/rmsnorm/rmsnorm_h4096.jsonl"
    lines = wl.read_bytes().splitlines()
    lines[4] = lines[4][: len(lines[4]) // 2]
    wl.write_bytes(b"\n".join(lines) + b"\n")
    gemm = root / "definitions/gemm/gemm_n6144_k4096.json"
    data = orjson.loads(gemm.read_bytes())
    data["inputs"]["A"]["shape"] = ["M", "KK"]
    gemm.write_bytes(orjson.dumps(data))
    return root


def test_broken_copy_still_loads_everything_else(official: Path, tmp_path: Path) -> None:
    db = TraceDB.open(broken_copy(official, tmp_path))
    assert len(db.definitions) == 155
    assert len(db.workloads_for("rmsnorm_h4096")) == 13
    assert {(p.file, p.line, p.field) for p in db.load_errors} == {
        ("workloads/rmsnorm/rmsnorm_h4096.jsonl", 5, None),
        ("definitions/gemm/gemm_n6144_k4096.json", None, "inputs.A.shape[1]"),
    }
