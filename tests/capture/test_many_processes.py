"""Eight capturing processes, one database: every workload line whole, none lost."""

from __future__ import annotations

from pathlib import Path

from tests.capture.conftest import NORM, capture_in_processes, make_db

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
    traces = capture_in_processes(tmp_path, WORKER, PROCESSES, PER_PROCESS)
    assert len(traces) == PROCESSES * PER_PROCESS
    assert all(t.is_workload and t.definition == NORM for t in traces)
    batches = sorted(t.workload.axes["batch_size"] for t in traces)
    assert batches == list(range(1, PROCESSES * PER_PROCESS + 1))
