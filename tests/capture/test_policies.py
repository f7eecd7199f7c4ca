"""Admission policies: dedup, first k, sampling, caps, queue bound; the recorder never raises."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from pathlib import Path

import pytest

from fib_runtime.capture import capture_stats, disable_capture, enable_capture
from fib_runtime.keys import make_key_extractor
from fib_runtime.store import TraceDB
from tests.capture.conftest import NORM, PAGED, lines, make_db, paged_args

SLOW_FLUSH = {"flush_interval_s": 3600}


def batches(root: Path) -> list[int]:
    return [line["workload"]["axes"]["batch_size"] for line in lines(root)]


def test_dedup_by_key_is_the_default(db: TraceDB, tmp_path: Path) -> None:
    record = enable_capture(db, SLOW_FLUSH).recorder_for(NORM)
    for batch in [4, 8, 4, 4, 16, 8, 4]:
        record((batch,), ())
    stats = capture_stats()["definitions"][NORM]
    assert stats["seen"] == 7 and stats["admitted"] == 3 and stats["recorded"] == 0
    disable_capture()
    assert sorted(batches(tmp_path)) == [4, 8, 16]
    stats = capture_stats()["definitions"][NORM]
    assert stats["recorded"] == 3 and stats["dropped_total"] == 0 and stats["bytes_written"] > 0


def test_first_k_per_key(db: TraceDB, tmp_path: Path) -> None:
    record = enable_capture(db, {**SLOW_FLUSH, "default": {"per_key": 3}}).recorder_for(NORM)
    for _ in range(10):
        record((2,), ())
        record((5,), ())
    disable_capture()
    assert Counter(batches(tmp_path)) == {2: 3, 5: 3}
    assert capture_stats()["definitions"][NORM]["seen"] == 20


def test_sampling_is_seeded_and_near_p(db: TraceDB, tmp_path: Path) -> None:
    config = {**SLOW_FLUSH, "seed": 7, "queue_size": 10_000,
              "default": {"sample": 0.25, "per_key": None, "max_workloads": None}}
    runs = []
    for attempt in range(2):
        root = tmp_path / f"run{attempt}"
        with enable_capture(make_db(root), config) as session:
            record = session.recorder_for(NORM)
            for call in range(4000):
                record((call % 3 + 1,), ())
        runs.append(batches(root))
        stats = capture_stats()["definitions"][NORM]
        assert stats["dropped"] == {"sampled_out": 4000 - len(runs[-1])}
    assert runs[0] == runs[1]  # same seed, same calls kept
    assert 850 <= len(runs[0]) <= 1150  # p = 0.25 of 4000 (> 6 sigma margin)


def test_cap_on_workloads_drops_counts_and_warns_once(
        db: TraceDB, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "fib_runtime.capture")
    record = enable_capture(db, {**SLOW_FLUSH, "definitions": {
        "toy_norm_*": {"max_workloads": 3}}}).recorder_for(NORM)
    for batch in range(1, 11):
        record((batch,), ())
        record((batch,), ())  # a refused key is done: the second call takes the fast path
    disable_capture()
    assert batches(tmp_path) == [1, 2, 3]
    stats = capture_stats()["definitions"][NORM]
    assert stats["dropped"] == {"cap_workloads": 7} and stats["seen"] == 20
    assert sum("max_workloads=3" in r.message for r in caplog.records) == 1


def test_cap_on_blob_bytes_per_definition(db: TraceDB, tmp_path: Path) -> None:
    # Each call dumps kv_indptr (3 x int32 = 12 bytes) and kv_indices (4 x int32 = 16 bytes).
    session = enable_capture(db, {**SLOW_FLUSH, "default": {"dump": "int",
                                                            "max_blob_bytes": 28 * 2}})
    record = session.recorder_for(PAGED["name"])
    for batch in range(1, 6):
        record((batch, 3, 4), paged_args([1, 3]))  # distinct keys, same tensor sizes
    stats = capture_stats()["definitions"][PAGED["name"]]
    assert stats["admitted"] == 2 and stats["dropped"] == {"cap_bytes": 3}
    disable_capture()
    assert len(lines(tmp_path, "gqa_paged", PAGED["name"])) == 2
    assert capture_stats()["total"]["blob_bytes"] > 2 * 28  # safetensors headers included


def test_total_byte_cap_spans_definitions(tmp_path: Path) -> None:
    db = make_db(tmp_path)
    db.add_definition(type(db.definitions[PAGED["name"]]).from_dict(
        {**PAGED, "name": "toy_paged_decode_h2_d4_copy"}))
    session = enable_capture(db, {**SLOW_FLUSH, "default": {"dump": "int"},
                                  "max_total_blob_bytes": 28 * 3})
    first = session.recorder_for(PAGED["name"])
    second = session.recorder_for("toy_paged_decode_h2_d4_copy")
    for batch in (1, 2):
        first((batch, 3, 4), paged_args([2, 2]))
        second((batch, 3, 4), paged_args([2, 2]))
    total = capture_stats()["total"]
    assert total["admitted"] == 3 and total["dropped"] == {"cap_total_bytes": 1}


def test_full_queue_drops_counts_and_never_blocks(db: TraceDB, tmp_path: Path) -> None:
    """The writer is busy (another thread holds its lock, as a slow disk would) while 5 new
    keys arrive at a queue of 2: 2 are queued, 3 dropped and counted, and recording returns
    without waiting for the writer. Nothing here depends on when the writer thread runs."""
    session = enable_capture(db, {**SLOW_FLUSH, "queue_size": 2})
    record = session.recorder_for(NORM)
    busy, done = threading.Event(), threading.Event()

    def writer_busy() -> None:
        with session._writer._lock:  # flush() takes it: the queue cannot drain meanwhile
            busy.set()
            done.wait()

    holder = threading.Thread(target=writer_busy)
    holder.start()
    busy.wait()
    recording = threading.Thread(target=lambda: [record((b,), ()) for b in range(1, 6)])
    recording.start()
    recording.join(timeout=60)
    assert not recording.is_alive()  # it never waited for the writer
    assert capture_stats()["definitions"][NORM]["dropped"] == {"queue_full": 3}
    done.set()
    holder.join()
    session.flush()  # waits for a flush the writer thread may have started meanwhile
    assert capture_stats()["definitions"][NORM]["recorded"] == 2
    record((5,), ())  # a key dropped for a full queue is offered again
    disable_capture()
    assert sorted(batches(tmp_path)) == [1, 2, 5]


def test_recorder_never_raises(db: TraceDB, tmp_path: Path) -> None:
    session = enable_capture(db, {**SLOW_FLUSH, "default": {"dump": "all"}})
    record = session.recorder_for(PAGED["name"])
    record([1, 2], ())  # unhashable key
    record((1, 2, 3), None)  # args that cannot be indexed
    record((1,), paged_args([1]))  # a key of the wrong length: the writer cannot name its axes
    disable_capture()
    stats = capture_stats()["definitions"][PAGED["name"]]
    assert stats["dropped"] == {"error": 2, "write_error": 1} and stats["recorded"] == 0


def test_unknown_definition_is_not_captured(db: TraceDB,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "fib_runtime")
    session = enable_capture(db, SLOW_FLUSH)
    assert session.recorder_for("toy_norm_h9") is None
    assert session.recorder_for("toy_norm_h9") is None
    assert [r.getMessage() for r in caplog.records if "toy_norm_h9" in r.getMessage()] == [
        f"fib.apply('toy_norm_h9'): the database {db.root} holds no definition of that name; "
        "nor does the built-in catalogue; its calls are not captured. A typo? closest names: "
        "toy_norm_h8"]


def test_catalogue_definition_is_added_to_an_empty_database(tmp_path: Path) -> None:
    session = enable_capture(TraceDB.open(tmp_path, create=True), SLOW_FLUSH)
    record = session.recorder_for("rmsnorm_h4096")
    assert record is not None and record.definition.name == "rmsnorm_h4096"
    record((8,), ())
    disable_capture()
    reloaded = TraceDB.open(tmp_path, strict=True)
    assert [w.workload.axes for w in reloaded.workloads_for("rmsnorm_h4096")] == \
        [{"batch_size": 8}]


def test_kv_bucket_key_dedups_on_the_writer(db: TraceDB, tmp_path: Path) -> None:
    paged = db.definitions[PAGED["name"]]
    config = {**SLOW_FLUSH, "definitions": {paged.name: {"key": "kv_bucket", "per_key": 4}}}
    record = enable_capture(db, config).recorder_for(paged.name)
    key_of = make_key_extractor(paged)
    # Two sequences; mean KV length 3 and 4 share bucket 4; 10 -> 16; 100 -> 128.
    for lengths in ([3, 3], [4, 4], [4, 4], [10, 10], [100, 100], [200, 200], [1, 1, 1]):
        args = paged_args(lengths)
        record(key_of(args), args)
    disable_capture()
    stats = capture_stats()["definitions"][paged.name]
    # Hot path: (2,3,8) repeated is done; the fifth distinct batch-2 key exceeds per_key=4.
    assert stats["admitted"] == 5 and stats["recorded"] == 4
    assert stats["dropped"] == {"duplicate_kv_bucket": 1, "key_allowance": 1}
    written = lines(tmp_path, "gqa_paged", paged.name)
    assert sorted(w["workload"]["axes"]["num_kv_indices"] for w in written) == [3, 6, 20, 200]
    assert all(w["workload"]["inputs"]["kv_indptr"]["type"] == "safetensors" for w in written)


def test_threads_racing_on_new_keys_record_each_once(db: TraceDB, tmp_path: Path) -> None:
    import threading

    record = enable_capture(db, {**SLOW_FLUSH, "queue_size": 10_000}).recorder_for(NORM)
    start = threading.Barrier(4)

    def serve() -> None:
        start.wait()
        for batch in range(1, 1001):
            record((batch,), ())

    threads = [threading.Thread(target=serve) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    disable_capture()
    assert sorted(batches(tmp_path)) == list(range(1, 1001))
