"""The background writer: queued records become workload lines (and safetensors blobs)."""

from __future__ import annotations

import logging
import threading
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

from fib_runtime.capture.recorder import CaptureQueue, DefinitionRecorder, Key, Record
from fib_runtime.capture.snapshot import wait
from fib_runtime.keys import key_to_axes
from fib_runtime.schema import (
    InputDescriptor,
    RandomInput,
    SafetensorsInput,
    ScalarInput,
    Trace,
    Workload,
)
from fib_runtime.store import (
    TraceDB,
    append_traffic,
    shard_name,
    shard_spec,
    workload_blob,
)

log = logging.getLogger("fib_runtime.capture")
_RANDOM = RandomInput()


def kv_bucket(indptr: Any) -> int:
    """Power-of-two bucket (next power of two >= the mean) of the KV length per sequence."""
    batch = indptr.numel() - 1
    if batch <= 0:
        return 0
    total = int(indptr[-1]) - int(indptr[0])
    mean = -(-total // batch)
    return 0 if mean <= 0 else 1 << (mean - 1).bit_length()


class Writer:
    """Drains the queue every `interval` seconds on a daemon thread, at once when the queue
    reaches its high-water mark (the recorders set `wake`), and on `flush()`.

    Each flush first runs the tasks handed to `later` (what must not run on a serving
    call: recording an original, remembering what capture wrote as trusted), then waits for
    the records' device copies, applies the kv-bucket dedup, saves blobs, then appends each
    definition's workloads with one locked write per file (`TraceDB.append_workloads`).
    """

    def __init__(self, db: TraceDB, shared: CaptureQueue, interval: float,
                 shard: str | None = None,
                 recorders: Callable[[], list[DefinitionRecorder]] = list,
                 hardware: str = "") -> None:
        self.db = db
        self._recorders = recorders  # whose call counts each flush appends (traffic)
        self._hardware = hardware  # the GPU model the counts are of
        self._shard = shard_spec(shard)  # None: the canonical files, locked
        self._shared = shared
        self._interval = interval
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._fine_keys: dict[str, set[tuple[Key, int | None]]] = defaultdict(set)
        self._tasks: deque[Callable[[], None]] = deque()
        self._thread = threading.Thread(target=self._run, name="fib-capture-writer",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop the thread and write what is left."""
        self._stop.set()
        self._shared.wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()
        self.flush()

    def later(self, task: Callable[[], None]) -> None:
        """Run `task` on the writer thread at its next flush (off the serving path)."""
        self._tasks.append(task)

    def _run(self) -> None:
        shared = self._shared
        while True:
            # Past the high-water mark after a flush (a burst still arriving): go on at once.
            if len(shared.queue) < shared.high_water:
                shared.wake.wait(self._interval)
            shared.wake.clear()
            if self._stop.is_set():
                return
            try:
                self.flush()
            except Exception:  # never let the thread die; flush() counts what it lost
                log.exception("capture writer: flush failed")

    def flush(self) -> int:
        """Write every queued record now; returns the number of workloads written."""
        with self._lock:
            while self._tasks:
                task = self._tasks.popleft()
                try:
                    task()
                except Exception:  # a task logs its own failures; this is a last resort
                    log.exception("capture writer: a deferred task failed")
            by_owner: dict[DefinitionRecorder, list[Trace]] = defaultdict(list)
            for record in self._take():
                trace = self._materialise(record)
                if trace is not None:
                    by_owner[record.owner].append(trace)
            written = 0
            shard = None if self._shard is None else shard_name(self._shard)
            for owner, traces in by_owner.items():
                try:
                    owner.stats.jsonl_bytes += self.db.append_workloads(traces, shard=shard)
                except Exception as exc:
                    self._lost(owner, "write_error", exc, len(traces))
                    continue
                owner.stats.recorded += len(traces)
                written += len(traces)
            self._write_traffic()
            return written

    def _write_traffic(self) -> None:
        """Append each definition's call counts since the last flush (store.traffic); a
        failure loses those counts, logged, never a record."""
        for recorder in self._recorders():
            calls = recorder.take_calls()
            if not calls:
                continue
            try:
                append_traffic(self.db.root, recorder.definition, self._hardware, calls,
                               None if self._shard is None else shard_name(self._shard))
            except Exception as exc:
                log.warning("capture: call counts of %s not written: %s",
                            recorder.definition.name, exc)

    def _take(self) -> list[Record]:
        """What is queued now, taken at once so that a burst refills an empty queue while
        these are written (in flight and queued together stay within twice the capacity)."""
        queue = self._shared.queue
        taken = []
        for _ in range(len(queue)):  # callers keep adding
            try:
                taken.append(queue.popleft())
            except IndexError:  # a flush re-entered from a signal handler took the rest
                break
        return taken

    def _materialise(self, record: Record) -> Trace | None:
        owner = record.owner
        definition = owner.definition
        try:
            wait(record.events)
            if owner.kv_indptr is not None:
                indptr = record.tensors.get(owner.kv_indptr)
                fine = (record.hot_key, None if indptr is None else kv_bucket(indptr))
                seen = self._fine_keys[definition.name]
                if fine in seen:
                    owner.stats.write_dropped["duplicate_kv_bucket"] += 1
                    return None
                seen.add(fine)
            axes = key_to_axes(definition, record.key)
            workload_id = str(uuid.uuid4())
            blob = None
            if record.tensors:
                blob = workload_blob(definition.op_type, definition.name, workload_id)
                owner.stats.blob_bytes += self.db.save_tensors(blob, record.tensors)
            inputs: dict[str, InputDescriptor] = {}
            for name in definition.inputs:
                if name in record.scalars:
                    inputs[name] = ScalarInput(record.scalars[name])
                elif blob is not None and name in record.tensors:
                    inputs[name] = SafetensorsInput(blob, name)
                else:
                    inputs[name] = _RANDOM
            workload = Workload(workload_id, axes, inputs)
            return Trace(definition=definition.name, workload=workload)
        except Exception as exc:
            self._lost(owner, "write_error", exc, 1)
            return None

    def _lost(self, owner: DefinitionRecorder, reason: str, exc: Exception, count: int) -> None:
        owner.stats.write_dropped[reason] += count
        name = owner.definition.name
        self._shared.warn_once((name, reason), "capture of %s: %d workload(s) could not be "
                               "written (%r); counting further losses in capture_stats()",
                               name, count, exc)
