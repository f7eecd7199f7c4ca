"""A burst at the default capture config: 8 processes x 5000 distinct keys, none dropped.

The queue holds 4096 records and the writer drains it every 2 s by default, so a burst of
5000 new keys in well under 2 s only fits if the recorder wakes the writer early (the
high-water mark). The attack: the burst; the assertion: exactly 40000 whole lines.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.capture.conftest import NORM, capture_in_processes, make_db

PROCESSES = 8
PER_PROCESS = 5_000

WORKER = """
import sys, time
from fib_runtime.capture import capture_stats, disable_capture, enable_capture
from fib_runtime.capture.config import CaptureConfig
root, worker, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
session = enable_capture(root)  # the default config
assert session.config == CaptureConfig(), session.config
record = session.recorder_for("toy_norm_h8")
start = time.perf_counter()
for i in range(count):
    record((worker * count + i + 1,), ())
burst = time.perf_counter() - start
disable_capture()
total = capture_stats()["total"]
print(f"burst {burst:.3f}s {total}")
assert total["recorded"] == count and total["dropped_total"] == 0, total
"""


def test_burst_at_default_config_loses_nothing(tmp_path: Path) -> None:
    make_db(tmp_path)
    env = {k: "" for k in ("FIB_CAPTURE_CONFIG", "FIB_CAPTURE_SHARD") if k in os.environ}
    traces = capture_in_processes(tmp_path, WORKER, PROCESSES, PER_PROCESS, env=env)
    assert len(traces) == PROCESSES * PER_PROCESS
    batches = sorted(t.workload.axes["batch_size"] for t in traces)
    assert batches == list(range(1, PROCESSES * PER_PROCESS + 1))


def test_the_high_water_mark_wakes_the_writer_before_its_interval(tmp_path: Path) -> None:
    import time

    from fib_runtime.capture import enable_capture

    make_db(tmp_path)
    path = tmp_path / f"workloads/rmsnorm/{NORM}.jsonl"
    with enable_capture(tmp_path, {"flush_interval_s": 600, "queue_size": 16}) as session:
        record = session.recorder_for(NORM)
        for batch in range(1, 4):  # below the mark (4): nothing is written
            record((batch,), ())
        time.sleep(0.3)
        assert not path.exists()
        record((4,), ())  # the crossing
        deadline = time.monotonic() + 10
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(path.read_bytes().splitlines()) == 4
