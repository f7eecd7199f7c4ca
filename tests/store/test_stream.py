"""Offline tools that stream: `fib ls` counts file by file and indexes nothing."""

from __future__ import annotations

from pathlib import Path

from fib_runtime.cli.db import summary_rows
from fib_runtime.schema import Trace
from fib_runtime.store import TraceDB
from tests.dispatch.helpers import H100, SCALE_CODE, make_db
from tests.factories import trace, workload


def test_ls_counts_file_by_file_what_a_full_load_counts(tmp_path: Path) -> None:
    make_db(tmp_path, {"one": SCALE_CODE.format(tag=1)},
            [("one", b, 0.01, hw) for b in (8, 32) for hw in ("cpu", H100, H100)])
    db = TraceDB.open(tmp_path)
    same = Trace.from_dict(workload(batch=8))
    db.append_workloads([same, same, Trace.from_dict(workload(batch=16))])
    db.append_workloads([same], shard="host-1")  # a second file of the same definition
    with (tmp_path / "traces" / "rmsnorm" / "toy_norm_h8.jsonl").open("ab") as f:
        f.write(b"not json\n")
    streaming = TraceDB.open(tmp_path, workloads=False, traces=False)
    rows = summary_rows(streaming, everything=False)
    assert rows == [["toy_norm_h8", "1", "4/2", "CPU:2, H100:4"]]
    full = TraceDB.open(tmp_path)
    assert (len(full.workloads_for("toy_norm_h8")), len(full.distinct_workloads("toy_norm_h8")),
            full.hardware_keys("toy_norm_h8")) == (4, 2, {"CPU": 2, "H100": 4})
    assert streaming.traces_for("toy_norm_h8") == [] == streaming.workloads_for("toy_norm_h8")
    assert [p.line for p in streaming.load_errors] == [p.line for p in full.load_errors] == [7]
    assert [len(records) for records in streaming.stream("traces")] == [6]


def test_a_trace_file_of_other_hardware_is_counted_unparsed(tmp_path: Path) -> None:
    make_db(tmp_path, {"one": SCALE_CODE.format(tag=1)}, [])
    TraceDB.open(tmp_path).append_traces([Trace.from_dict(trace(solution="one", hardware=hw))
                                          for hw in ("cpu", H100, H100, "cpu", H100)])
    db = TraceDB.open(tmp_path, workloads=False, hardware="H100")
    assert (db.parsed_traces, db.skipped_traces) == (3, 2)
    assert db.hardware_keys("toy_norm_h8") == {"H100": 3}
