"""When workloads reach the disk: background, disable, nesting, exit, signals, SIGKILL."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from fib_runtime.capture import capture_stats, disable_capture, enable_capture
from fib_runtime.store import TraceDB
from tests.capture.conftest import NORM, lines, make_db, run_child

# A child that captures `n` distinct keys, says "ready" and then waits to be signalled.
CHILD = """
import signal, sys, time
from fib_runtime.capture import enable_capture
root, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
# Python's own SIGINT handler, as in a foreground process: a shell starts background jobs
# with SIGINT ignored, and capture rightly honours an ignored signal.
signal.signal(signal.SIGINT, signal.default_int_handler)
if mode == "chained":
    def mine(signum, frame):
        open(root + "/handler_ran", "w").close()
        sys.exit(3)
    signal.signal(signal.SIGTERM, mine)
record = enable_capture(root, {"flush_interval_s": 3600}).recorder_for("toy_norm_h8")
for batch in range(1, n + 1):
    record((batch,), ())
if mode == "exit":
    sys.exit(0)
print("ready", flush=True)
time.sleep(120)
"""


def test_background_flush(db: TraceDB, tmp_path: Path) -> None:
    record = enable_capture(db, {"flush_interval_s": 0.05}).recorder_for(NORM)
    record((3,), ())
    deadline = time.monotonic() + 10
    while not lines(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [line["workload"]["axes"] for line in lines(tmp_path)] == [{"batch_size": 3}]


def test_flush_on_disable_and_nesting_restores_the_outer_session(tmp_path: Path) -> None:
    outer_db, inner_db = make_db(tmp_path / "outer"), make_db(tmp_path / "inner")
    outer = enable_capture(outer_db, {"flush_interval_s": 3600})
    outer.recorder_for(NORM)((1,), ())
    with enable_capture(inner_db, {"flush_interval_s": 3600}) as inner:
        assert capture_stats()["db"] == str(inner_db.root)
        inner.recorder_for(NORM)((2,), ())
    assert inner.closed and len(lines(tmp_path / "inner")) == 1
    assert capture_stats()["db"] == str(outer_db.root) and capture_stats()["active"]
    assert lines(tmp_path / "outer") == []  # the outer session has not flushed yet
    disable_capture()
    assert [line["workload"]["axes"] for line in lines(tmp_path / "outer")] == \
        [{"batch_size": 1}]
    assert not capture_stats()["active"]


def test_flush_at_interpreter_exit(tmp_path: Path) -> None:
    make_db(tmp_path)
    child = run_child(CHILD, str(tmp_path), "50", "exit")
    _, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert len(lines(tmp_path)) == 50


def _signalled_child(root: Path, mode: str, signum: int) -> tuple[int, str]:
    make_db(root)
    child = run_child(CHILD, str(root), "200", mode)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    assert lines(root) == []  # nothing written before the signal
    child.send_signal(signum)
    _, err = child.communicate(timeout=60)
    return child.returncode, err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_flush_on_signal_then_default_behaviour(tmp_path: Path, signum: int) -> None:
    code, err = _signalled_child(tmp_path, "plain", signum)
    # SIGTERM's default action is re-raised; SIGINT's Python handler raised KeyboardInterrupt.
    assert code == -signum, err
    assert sorted(line["workload"]["axes"]["batch_size"] for line in lines(tmp_path)) \
        == list(range(1, 201))


def test_flush_on_sigterm_chains_to_the_previous_handler(tmp_path: Path) -> None:
    code, err = _signalled_child(tmp_path, "chained", signal.SIGTERM)
    assert code == 3, err
    assert (tmp_path / "handler_ran").exists()
    assert len(lines(tmp_path)) == 200


KILLED = """
import sys
from fib_runtime.capture import enable_capture
config = {"flush_interval_s": 0.005, "queue_size": 100000, "default": {"max_workloads": None}}
record = enable_capture(sys.argv[1], config).recorder_for("toy_norm_h8")
batch = 0
while True:
    batch += 1
    record((batch,), ())
"""


def test_sigkill_mid_run_leaves_a_loadable_database(tmp_path: Path) -> None:
    make_db(tmp_path)
    target = tmp_path / "workloads/rmsnorm/toy_norm_h8.jsonl"
    child = run_child(KILLED, str(tmp_path))
    deadline = time.monotonic() + 30
    while (not target.exists() or target.stat().st_size < 200_000) \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    child.kill()
    child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    lost = _check_loads_and_appends(tmp_path, target, known=0)

    # The worst case, made certain: the process died inside a write, mid-line.
    data = target.read_bytes()
    target.write_bytes(data[:len(data) - 40])
    assert _check_loads_and_appends(tmp_path, target, known=lost) == lost + 1


def _check_loads_and_appends(root: Path, target: Path, *, known: int) -> int:
    """The database loads with the `known` earlier problems plus at most one, the last line;
    a later capture appends whole lines after it. Returns the number of problems."""
    whole = [line for line in target.read_bytes().split(b"\n") if line]
    db = TraceDB.open(root)
    problems = db.load_errors
    assert known <= len(problems) <= known + 1
    if len(problems) > known:
        assert problems[-1].line == len(whole)  # the last line, and only it
    assert len(db.workloads_for(NORM)) == len(whole) - len(problems)
    with enable_capture(db, {"flush_interval_s": 3600}) as session:
        session.recorder_for(NORM)((10**9,), ())
    db = TraceDB.open(root)
    assert len(db.load_errors) == len(problems)
    assert db.workloads_for(NORM)[-1].workload.axes == {"batch_size": 10**9}
    return len(problems)


FORKED = """
import os, sys, time
from fib_runtime.capture import enable_capture
session = enable_capture(sys.argv[1], {"flush_interval_s": 0.05})
record = session.recorder_for("toy_norm_h8")
record((1,), ())
session.flush()
record((2,), ())  # still queued at fork: the parent writes it, the child must not
pid = os.fork()
if pid == 0:
    record((1,), ())  # recorded by the parent already
    record((3,), ())
    time.sleep(1.0)  # the child's own writer thread flushes in the background
    os._exit(0)  # no atexit in a forked worker
os.waitpid(pid, 0)
"""


def test_forked_child_gets_its_own_writer(tmp_path: Path) -> None:
    make_db(tmp_path)
    child = run_child(FORKED, str(tmp_path))
    _, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert sorted(line["workload"]["axes"]["batch_size"] for line in lines(tmp_path)) \
        == [1, 2, 3]
