"""fib compact: re-measured traces go, and no ranking decision changes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson

from fib_runtime.cli.main import main
from fib_runtime.dispatch.config import DispatchConfig
from fib_runtime.dispatch.table import compile_tables
from fib_runtime.schema import Trace
from fib_runtime.schema.provenance import DIGEST_KEY, TIMING_KEY, content_digest
from fib_runtime.store import TraceDB
from fib_runtime.store.compact import compact
from tests.dispatch.helpers import H100, SCALE_CODE, make_db
from tests.factories import trace, workload

CPU = "cpu"


def again(record: dict[str, Any], latency: float, *, timing: str | None = None,
          digest: str | None = None, hardware: str | None = None) -> dict[str, Any]:
    """The same (solution, workload) measured again, maybe in another regime or content."""
    out = copy.deepcopy(record)
    out["evaluation"]["performance"]["latency_ms"] = latency
    env = out["evaluation"]["environment"]
    if timing is not None:
        env["libs"][TIMING_KEY] = timing
    if digest is not None:
        env["libs"][DIGEST_KEY] = digest
    if hardware is not None:
        env["hardware"] = hardware
    return out


def tables(root: Path) -> dict[str, Any]:
    db = TraceDB.open(root)
    return {hw: compile_tables(db, hw, DispatchConfig()) for hw in ("CPU", "H100")}


def test_compaction_drops_re_measurements_and_changes_no_decision(tmp_path: Path) -> None:
    root = tmp_path / "db"
    db = make_db(root, {"one": SCALE_CODE.format(tag=1), "two": SCALE_CODE.format(tag=2)}, [])
    current = content_digest(db.solutions["one"])
    one8 = trace(solution="one", batch=8, latency=0.05, hardware=CPU)
    two8 = trace(solution="two", batch=8, latency=0.02, hardware=CPU)
    one32 = trace(solution="one", batch=32, latency=0.03, hardware=CPU)
    records = [
        one8, two8, one32,
        again(one8, 0.04), again(one8, 0.01),            # re-measured twice: the last counts
        again(one32, 0.09, digest="sha256:old"),          # other content: kept (makes the
        again(one32, 0.02, digest=current),               # unstamped stale), and current
        again(one32, 0.07, digest=current),
        again(one8, 0.03, timing="eager"), again(one8, 0.08, timing="eager"),
        again(two8, 0.02, hardware=H100), again(two8, 0.01, hardware=H100),
        again(one8, 0.02, hardware=H100),
    ]
    TraceDB.open(root).append_traces([Trace.from_dict(r) for r in records])
    path = next((root / "traces").rglob("*.jsonl"))
    with path.open("ab") as f:  # a line that does not load, and a later re-measurement
        f.write(b'{"definition": "toy_norm_h8", "solution": "one"\n')
        f.write(orjson.dumps(again(two8, 0.015)) + b"\n")
    TraceDB.open(root).append_workloads([Trace.from_dict(workload(batch=8))] * 2)
    workloads = {p: p.read_bytes() for p in (root / "workloads").rglob("*.jsonl")}
    before = tables(root)
    assert before["CPU"]["toy_norm_h8"].for_timing("device")[(8,)].names[0] == "one"

    dry = compact(root, dry_run=True)
    assert sum(dry.dropped.values()) == 6 and path.stat().st_size == dry.bytes_before
    report = compact(root)
    # one8 x2, one32 with the current digest x1, eager x1, two8 on the H100 x1, two8 x1
    assert report.dropped == {"toy_norm_h8": 6}
    assert report.kept == 9 and report.bytes_after < report.bytes_before
    assert tables(root) == before
    lines = path.read_bytes().split(b"\n")
    assert b'{"definition": "toy_norm_h8", "solution": "one"' in lines  # kept as it was
    assert {p: p.read_bytes() for p in workloads} == workloads
    assert sum(compact(root).dropped.values()) == 0  # a second run finds nothing


def test_compaction_on_the_command_line(tmp_path: Path, capsys: Any) -> None:
    root = tmp_path / "db"
    make_db(root, {"one": SCALE_CODE.format(tag=1)}, [])
    record = trace(solution="one", batch=8, latency=0.05, hardware=CPU)
    TraceDB.open(root).append_traces([Trace.from_dict(r)
                                      for r in (record, again(record, 0.04))])
    assert main(["compact", str(root), "--definition", "toy_norm_h8"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 superseded traces dropped, 1 kept") and "toy_norm_h8: 1" in out
    assert main(["compact", str(tmp_path / "nowhere")]) == 1
