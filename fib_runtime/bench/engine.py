"""retune: benchmark every candidate solution on every captured workload, on this machine's
devices, and append the results to the database as traces.

For each definition and each distinct workload, the worker of a device materialises the
inputs and runs the reference once; then each solution whose `target_hardware` admits the
device is built, checked and timed in that worker. Every result becomes a trace, appended
as soon as it exists, so an interrupted retune resumes where it stopped: a (solution,
workload, hardware key, timing regime) that already has a trace is skipped unless `force`
(the one rule: `_Retune.needs_measuring`). Each timing regime asked for (`timings`, see
fib_runtime.bench.timing) gives its own trace, stamped with its regime.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fib_runtime.bench.compare import Tolerance
from fib_runtime.bench.gate import trusted_only
from fib_runtime.bench.item import Settings, WorkloadTask, evaluate_item, missing_blob
from fib_runtime.bench.pool import DeviceInfo, WorkerHandle
from fib_runtime.bench.progress import Progress
from fib_runtime.bench.report import (
    Outcome,
    RetuneReport,
    Unusable,
    nothing_to_compare,
    summarise,
)
from fib_runtime.bench.timing import get_timer, parse_timings
from fib_runtime.bench.trace_record import make_trace
from fib_runtime.errors import FibError, RetuneError, TracesNotWritten
from fib_runtime.hardware import CPU_KEY, target_matches
from fib_runtime.original import untimeable_reason
from fib_runtime.ranking import measures
from fib_runtime.regimes import DEVICE
from fib_runtime.schema import (
    Solution,
    Trace,
)
from fib_runtime.schema.provenance import digest_of, solution_digest, timing_of
from fib_runtime.store import TraceDB

log = logging.getLogger("fib_runtime.bench")


@dataclass(frozen=True)
class RetuneConfig:
    """Settings beyond the command line's.

    `tolerances` overrides the per-dtype defaults (see fib_runtime.bench.compare) for the
    named definitions, as (atol, rtol). `reference_timeout` bounds preparing a workload
    (inputs, reference run and timing); `startup_timeout` bounds starting a worker.
    """

    tolerances: Mapping[str, Tolerance] = field(default_factory=dict)
    reference_timeout: float = 600.0
    startup_timeout: float = 300.0
    timings: tuple[str, ...] = (DEVICE.name,)  # the timing regimes to measure

    def __post_init__(self) -> None:
        object.__setattr__(self, "timings", parse_timings(self.timings))


def resolve_devices(devices: str | Sequence[int | str] | None) -> list[str]:
    """Device names for `None` (GPU 0, else the CPU), "all", "cpu", "0,1" or [0, 1]."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if devices is None:
        return ["cuda:0"] if count else ["cpu"]
    if isinstance(devices, str):
        if devices.strip().lower() == "all":
            return [f"cuda:{i}" for i in range(count)] or ["cpu"]
        if devices.strip().lower() == "cpu":
            return ["cpu"]
        devices = [d for d in devices.split(",") if d.strip()]
    chosen = []
    for device in devices:
        text = str(device).strip()
        if not text.isdigit() or int(text) >= count:
            raise RetuneError(f"no CUDA device {text!r} (this machine has {count})")
        chosen.append(f"cuda:{int(text)}")
    if not chosen:
        raise RetuneError("no device given")
    return list(dict.fromkeys(chosen))


def retune(db: TraceDB | str | Path, definitions: Iterable[str] | None = None,
           solutions: Iterable[str] | None = None,
           devices: str | Sequence[int | str] | None = None, *, warmup: int = 10,
           iters: int = 50, timeout: float = 120.0, force: bool = False,
           progress: bool = True, config: RetuneConfig | None = None,
           cluster: str | None = None) -> RetuneReport:
    """Benchmark the selected solutions on the captured workloads and append traces.

    `timeout` bounds one solution on one workload (build, check and timing) in seconds.
    `cluster` ("ray" for the Ray cluster of $RAY_ADDRESS or this host, or an address)
    spreads the work over every GPU of a Ray cluster instead of this machine's `devices`.
    """
    if cluster is not None and devices is not None:
        raise RetuneError("give either devices or a cluster, not both")
    if not isinstance(db, TraceDB):
        db = TraceDB.open(db)
    items, untrusted = trusted_only(db, _plan(db, definitions, solutions))
    notes = nothing_to_compare(db, definitions)
    if cluster is not None:
        from fib_runtime.bench.ray_pool import retune_on_cluster

        run = _Retune(db, warmup=warmup, iters=iters, timeout=timeout, force=force,
                   config=config or RetuneConfig())
        run.report.untrusted, run.report.notes = untrusted, notes
        if items:
            run.summarise(items, retune_on_cluster(run, items, cluster, progress=progress))
        run.raise_if_lost()
        return run.report
    handles = [WorkerHandle(d, db.root, startup_timeout=(config or RetuneConfig()).startup_timeout)
               for d in resolve_devices(devices)]
    run = _Retune(db, warmup=warmup, iters=iters, timeout=timeout, force=force,
               config=config or RetuneConfig())
    run.report.untrusted, run.report.notes = untrusted, notes
    if not items:
        return run.report
    try:
        infos = _start_all(handles)
        run.report.hardware = sorted({f"{i.name} ({i.key})" for i in infos})
        total = sum(len(run.todo(item, infos[0])) for item in items)
        run.progress.open(total, progress)
        work: queue.SimpleQueue[WorkloadTask] = queue.SimpleQueue()
        for item in items:
            work.put(item)
        _run_all(run, handles, work)
    finally:
        run.progress.close()
        for handle in handles:
            handle.stop()
    run.summarise(items, infos)
    run.raise_if_lost()
    return run.report


def _plan(db: TraceDB, definitions: Iterable[str] | None,
          solutions: Iterable[str] | None) -> list[WorkloadTask]:
    names = sorted(db.definitions) if definitions is None else list(dict.fromkeys(definitions))
    unknown = [n for n in names if n not in db.definitions]
    if unknown:
        raise RetuneError(f"{db.root}: unknown definitions: {', '.join(unknown)}")
    wanted = None if solutions is None else set(solutions)
    if wanted is not None:
        missing = sorted(wanted - set(db.solutions))
        if missing:
            raise RetuneError(f"{db.root}: unknown solutions: {', '.join(missing)}")
    items = []
    for name in names:
        candidates = tuple(s for s in db.solutions_for(name)
                           if wanted is None or s.name in wanted)
        if candidates:
            items.extend(WorkloadTask(db.definitions[name], w, candidates)
                         for w in db.distinct_workloads(name))
    return items


def _start_all(handles: list[WorkerHandle]) -> list[DeviceInfo]:
    """Start every worker at once and wait until each has reported its device."""
    with ThreadPoolExecutor(len(handles)) as pool:
        return list(pool.map(WorkerHandle.start, handles))


def _run_all(run: _Retune, handles: list[WorkerHandle],
             work: queue.SimpleQueue[WorkloadTask]) -> None:
    """One driver per device, each taking the next workload from the shared queue."""
    with ThreadPoolExecutor(len(handles), thread_name_prefix="fib-retune") as pool:
        futures = [pool.submit(run.drive, handle, work) for handle in handles]
        try:
            for future in futures:
                future.result()
        finally:
            run.stop.set()  # on an error or an interrupt the other drivers stop too


class _Retune:
    """State shared by the device drivers: the database, progress and report."""

    def __init__(self, db: TraceDB, *, warmup: int, iters: int, timeout: float, force: bool,
                 config: RetuneConfig) -> None:
        self.db = db
        self.warmup, self.iters, self.timeout, self.force = warmup, iters, timeout, force
        self.config = config
        self.settings = Settings(warmup, iters, timeout, config.reference_timeout,
                                 config.timings)
        self.report = RetuneReport()
        self.stop = threading.Event()
        self._lock = threading.Lock()
        # Per (definition, hardware key): the solution digests that the traces of each
        # (solution, workload, timing) carry (None: a trace without one).
        self._measured: dict[tuple[str, str], dict[tuple[str, str, str], set[str | None]]] = {}
        self._digests: dict[str, str] = {}
        self.write_failure: Exception | None = None
        self.lost = 0
        self.progress = Progress()

    # -- planning -------------------------------------------------------------------------

    def needs_measuring(self, solution: Solution, workload: str, timing: str,
                        measured: Mapping[tuple[str, str, str], set[str | None]]) -> bool:
        """THE rule of what retune skips: a (solution, workload, timing) with a trace on this
        hardware of the solution's current content is measured already, unless `force` (a
        changed solution is measured again: ranking.measures)."""
        digests = measured.get((solution.name, workload, timing))
        return self.force or digests is None or not measures(digests, self.digest(solution))

    def digest(self, solution: Solution) -> str:
        """The solution's content digest (computed once per retune)."""
        found = self._digests.get(solution.name)
        if found is None:
            found = self._digests[solution.name] = solution_digest(solution)
        return found

    def timings_on(self, info: DeviceInfo) -> tuple[str, ...]:
        """The asked-for regimes this device can time (the others are noted once)."""
        device = "cpu" if info.key == CPU_KEY else "cuda"
        usable = []
        for timing in self.config.timings:
            reason = get_timer(timing).unavailable(device)
            if reason is None:
                usable.append(timing)
                continue
            self._note(f"{timing} timing not measured on {info.key}: {reason}")
        return tuple(usable)

    def _note(self, note: str) -> None:
        """Say once, after the table, what this retune did not measure and why."""
        with self._lock:
            if note not in self.report.notes:
                self.report.notes.append(note)

    def regimes(self, item: WorkloadTask, info: DeviceInfo, solution: Solution
                ) -> tuple[str, ...]:
        """The regimes in which a solution still needs measuring on the item's workload."""
        name = item.definition.name
        with self._lock:
            measured = self._measured.get((name, info.key))
            if measured is None:
                measured = {}
                for t in self.db.traces_for(name, info.key):
                    if t.evaluation is not None:
                        measured.setdefault((t.solution or "", t.workload.uuid,
                                             timing_of(t.evaluation)), set()).add(
                            digest_of(t.evaluation))
                self._measured[(name, info.key)] = measured
        uuid = item.workload.workload.uuid
        return tuple(t for t in self.timings_on(info)
                     if self.needs_measuring(solution, uuid, t, measured))

    def todo(self, item: WorkloadTask, info: DeviceInfo) -> list[Solution]:
        """The item's solutions that run on this device and still need measuring."""
        todo = []
        for solution in item.solutions:
            if not target_matches(solution.spec.target_hardware, info.key):
                continue
            reason = untimeable_reason(solution)
            if reason is not None:
                self._note(f"{item.definition.name}: the original {solution.name} is not "
                           f"timed: {reason}")
                continue
            if self.regimes(item, info, solution):
                todo.append(solution)
        return todo

    # -- one device -----------------------------------------------------------------------

    def drive(self, handle: WorkerHandle, work: queue.SimpleQueue[WorkloadTask]) -> None:
        info = handle.start()
        while not self.stop.is_set():
            try:
                item = work.get_nowait()
            except queue.Empty:
                return
            self._run_item(handle, info, item)

    def _run_item(self, handle: WorkerHandle, info: DeviceInfo, item: WorkloadTask) -> None:
        name = item.definition.name
        todo = self.todo(item, info)
        self.note_skipped(self.admitted(item, info) - len(todo))
        if not todo:
            return
        by_name = {s.name: s for s in todo}
        done = 0

        def on_result(solution: str, result: dict[str, Any], reference_ms: Any) -> None:
            nonlocal done
            done += 1
            self.record(item, by_name[solution], result, reference_ms, info, handle.device)

        reason = missing_blob(self.db, item.workload)
        if reason is None:
            reason = evaluate_item(handle, item.definition.to_dict(),
                                   item.workload.workload.to_dict(),
                                   [s.to_dict() for s in todo], self.settings,
                                   self.config.tolerances.get(name), on_result,
                                   self.stop.is_set,
                                   lambda s: self.regimes(item, info, by_name[s]))
        if reason is not None:
            self.unusable(item, reason, len(todo) - done)

    def note_skipped(self, count: int) -> None:
        """Evaluations not redone: already measured on this hardware."""
        with self._lock:
            self.report.skipped += count

    @staticmethod
    def admitted(item: WorkloadTask, info: DeviceInfo) -> int:
        """How many of the item's solutions may run on this device at all."""
        return sum(1 for s in item.solutions
                   if target_matches(s.spec.target_hardware, info.key)
                   and untimeable_reason(s) is None)

    def unusable(self, item: WorkloadTask, reason: str, not_measured: int) -> None:
        """Note a workload that could not be prepared; its evaluations count as done."""
        wl = item.workload.workload
        log.warning("%s: workload %s skipped: %s", item.definition.name, wl.uuid,
                    reason.splitlines()[0])
        with self._lock:
            self.report.unusable.append(Unusable(item.definition.name, wl.uuid, reason))
        self.progress.advance(not_measured, item.definition.name)

    def record(self, item: WorkloadTask, solution: Solution, result: dict[str, Any],
               reference_ms: Any, info: DeviceInfo, device: str) -> None:
        """Append one evaluation's trace now."""
        self.record_all(item, [(solution, result, reference_ms)], info, device)

    def record_all(self, item: WorkloadTask,
                   results: list[tuple[Solution, dict[str, Any], float]],
                   info: DeviceInfo, device: str) -> None:
        """Append the traces of several evaluations of one workload in one write."""
        name, wl = item.definition.name, item.workload.workload
        traces = [(solution, timing, make_trace(name, item.workload, solution.name, result,
                                                reference_ms, info, timing,
                                                digest=self.digest(solution)))
                  for solution, result, reference_ms in results
                  for timing in result.get("timings") or self.settings.timings
                  if timing not in (result.get("unavailable") or {})]
        if not traces:
            return
        with self._lock:
            if not self.write_traces([trace for _, _, trace in traces]):
                return
            measured = self._measured.setdefault((name, info.key), {})
            for solution, timing, trace in traces:
                measured.setdefault((solution.name, wl.uuid, timing), set()).add(
                    self.digest(solution))
                performance = trace.evaluation.performance if trace.evaluation else None
                self.report.outcomes.append(Outcome(
                    name, wl.uuid, solution.name, trace.evaluation.status.value
                    if trace.evaluation else "", performance.latency_ms if performance else None,
                    device, timing))
        self.progress.advance(len(results), name)

    def write_traces(self, traces: list[Trace]) -> bool:
        """Append traces (under the lock); on a write failure count them lost and stop."""
        if self.write_failure is None:
            try:
                self.db.append_traces(traces)
                return True
            except (OSError, FibError) as exc:  # a full disk, a read-only database, a path
                self.write_failure = exc        # the store refuses: nothing half-written
                self.stop.set()
        self.lost += len(traces)
        return False

    def raise_if_lost(self) -> None:
        """After the run: a RetuneError saying what was not written, if anything was not."""
        if self.write_failure is not None:
            raise TracesNotWritten(self.db.root, self.write_failure, self.lost,
                                   len(self.report.outcomes))

    def summarise(self, items: list[WorkloadTask], infos: list[DeviceInfo]) -> None:
        for name in dict.fromkeys(i.definition.name for i in items):
            definition = self.db.definitions[name]
            self.report.buckets[name] = [
                bucket for key in sorted({i.key for i in infos})
                for timing in self.config.timings
                for bucket in summarise(definition, self.db.traces_for(name, key),
                                        self.db.solutions, key, timing)]

