"""Eight capturing processes, one database: every workload line whole, none lost."""

from __future__ import annotations

from pathlib import Path

import orjson

from fib_runtime.schema import Trace
from tests.capture.conftest import NORM, make_db, run_child

PROCESSES = 8
PER_PROCESS = 5_000

WORKER = """
import sys
from fib_runtime.capture import capture_stats, disable_capture, enable_capture
root, worker, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
config = {"flush_interval_s": 0.02, "queue_size": count,
          "default": {"max_workloads": None}}
record = enable_capture(root, config).recorder_for("toy_norm_h8")
for i in range(count):
    record((worker * count + i + 1,), ())
disable_capture()
total = capture_stats()["total"]
assert total["recorded"] == count and total["dropped_total"] == 0, total
"""


def test_eight_processes_capture_40k_whole_lines(tmp_path: Path) -> None:
    make_db(tmp_path)
    children = [run_child(WORKER, str(tmp_path), str(w), str(PER_PROCESS))
                for w in range(PROCESSES)]
    for child in children:
        _, err = child.communicate(timeout=240)
        assert child.returncode == 0, err
    raw = (tmp_path / f"workloads/rmsnorm/{NORM}.jsonl").read_bytes().split(b"\n")
    assert raw[-1] == b""  # the file ends with a newline
    traces = [Trace.from_dict(orjson.loads(line)) for line in raw[:-1]]  # each line parses
    assert len(traces) == PROCESSES * PER_PROCESS
    assert all(t.is_workload and t.definition == NORM for t in traces)
    batches = sorted(t.workload.axes["batch_size"] for t in traces)
    assert batches == list(range(1, PROCESSES * PER_PROCESS + 1))
