"""Executor: runs the planned evaluations on workers and hands each result to the recorder.

One interface (`Executor.run`), two pools behind it: the local pool (`LocalPool`, one worker
process per device of this machine, each driven by a thread taking the next workload from a
shared queue) and the Ray cluster (`fib_runtime.retuning.cluster.RayCluster`). Both evaluate a
workload the same way (`evaluate_item`): the requests, the handling of a lost worker (a trace
status, then a fresh worker that prepares again) and what counts as unusable are the same
wherever the worker runs.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from fib_runtime.errors import RetuneError, StoreError, WorkerLost
from fib_runtime.measure.compare import Tolerance
from fib_runtime.regimes import DEVICE, EAGER
from fib_runtime.retuning.plan import Plan, WorkloadTask
from fib_runtime.retuning.record import Recorder
from fib_runtime.retuning.summary import RetuneSummary
from fib_runtime.retuning.worker import DeviceInfo, WorkerHandle
from fib_runtime.schema import SafetensorsInput, Trace
from fib_runtime.store import TraceDB

# (solution name, worker answer, reference ms: one number, or one per timing regime)
OnResult = Callable[[str, dict[str, Any], "float | dict[str, float]"], None]


@dataclass(frozen=True)
class Settings:
    """Timing and time limits of every evaluation of a retune."""

    warmup: int
    iters: int
    timeout: float
    reference_timeout: float
    timings: tuple[str, ...] = (DEVICE.name,)  # the regimes to time (fib_runtime.regimes)


@dataclass(frozen=True)
class Job:
    """What an executor needs of the retune it serves."""

    db: TraceDB
    settings: Settings
    tolerances: Mapping[str, Tolerance]
    startup_timeout: float  # starting one worker, in seconds
    plan: Plan
    recorder: Recorder
    summary: RetuneSummary
    stop: threading.Event  # set on an error, an interrupt or a failed write: drivers stop


class Executor(Protocol):
    """Runs the items' evaluations somewhere, recording each result as it comes."""

    def run(self, job: Job, items: list[WorkloadTask], progress: bool) -> list[DeviceInfo]:
        """Evaluate every item (each solution still to measure on each hardware kind);
        returns the info of each hardware kind that measured."""
        ...


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


class LocalPool:
    """One worker process per device of this machine ("cpu", "cuda:N")."""

    def __init__(self, devices: str | Sequence[int | str] | None, startup_timeout: float,
                 db: TraceDB) -> None:
        self.handles = [WorkerHandle(d, db.root, startup_timeout=startup_timeout)
                        for d in resolve_devices(devices)]

    def run(self, job: Job, items: list[WorkloadTask], progress: bool) -> list[DeviceInfo]:
        progress_bar = job.recorder.progress
        try:
            with ThreadPoolExecutor(len(self.handles)) as pool:  # every worker starts at once
                infos = list(pool.map(WorkerHandle.start, self.handles))
            job.summary.hardware = sorted({f"{i.name} ({i.key})" for i in infos})
            progress_bar.open(sum(len(job.plan.todo(item, infos[0])) for item in items),
                              progress)
            work: queue.SimpleQueue[WorkloadTask] = queue.SimpleQueue()
            for item in items:
                work.put(item)
            with ThreadPoolExecutor(len(self.handles), thread_name_prefix="fib-retune") as pool:
                futures = [pool.submit(_drive, job, handle, work) for handle in self.handles]
                try:
                    for future in futures:
                        future.result()
                finally:
                    job.stop.set()  # on an error or an interrupt the other drivers stop too
        finally:
            progress_bar.close()
            for handle in self.handles:
                handle.stop()
        return infos


def _drive(job: Job, handle: WorkerHandle, work: queue.SimpleQueue[WorkloadTask]) -> None:
    """One device's driver: take the next workload from the shared queue until none is left."""
    info = handle.start()
    while not job.stop.is_set():
        try:
            item = work.get_nowait()
        except queue.Empty:
            return
        _run_item(job, handle, info, item)


def _run_item(job: Job, handle: WorkerHandle, info: DeviceInfo, item: WorkloadTask) -> None:
    todo = job.plan.take(item, info)
    if not todo:
        return
    by_name = {s.name: s for s in todo}
    done = 0

    def on_result(solution: str, result: dict[str, Any], reference_ms: Any) -> None:
        nonlocal done
        done += 1
        job.recorder.record(item, [(by_name[solution], result, reference_ms)], info,
                            handle.device)

    reason = missing_blob(job.db, item.workload)
    if reason is None:
        reason = evaluate_item(handle, item.definition.to_dict(),
                               item.workload.workload.to_dict(), [s.to_dict() for s in todo],
                               job.settings, job.tolerances.get(item.definition.name),
                               on_result, job.stop.is_set,
                               lambda s: job.plan.regimes(item, info, by_name[s]))
    if reason is not None:
        job.recorder.unusable(item, reason, len(todo) - done)


def evaluate_item(handle: WorkerHandle, definition: dict[str, Any], workload: dict[str, Any],
                  solutions: list[dict[str, Any]], settings: Settings,
                  tolerance: Tolerance | None, on_result: OnResult,
                  stop: Callable[[], bool] = lambda: False,
                  timings_of: Callable[[str], Sequence[str]] | None = None) -> str | None:
    """Prepare `workload`, then evaluate each solution, calling `on_result(solution name,
    worker answer, reference ms)` as each finishes. Returns None, or why the workload is
    unusable (then the solutions not yet reported get no result). `timings_of(solution
    name)` names the regimes still to time for a solution (default: the settings' all)."""
    reference_ms, reason = _prepare(handle, definition, workload, settings)
    if reference_ms is None:
        return reason
    # Results timed in the eager regime wait for one interleaved timing of them all (the
    # worker still holds their calls), then are reported.
    waiting: list[tuple[str, dict[str, Any], Any]] = []

    def settle() -> None:
        _interleave_eager(handle, waiting, settings)
        for name, answer, reference in waiting:
            on_result(name, answer, reference)
        waiting.clear()

    for index, solution in enumerate(solutions):
        if stop():
            break
        timings = list(settings.timings if timings_of is None else timings_of(solution["name"]))
        request = {"solution": solution, "warmup": settings.warmup, "iters": settings.iters,
                   "tolerance": tolerance, "timings": timings}
        try:
            result = handle.request("evaluate", request, settings.timeout)
        except WorkerLost as lost:
            result = {"status": lost.status, "log": lost.log, "fatal": True,
                      "timings": timings}
        if result.get("fatal"):
            settle()  # what the lost worker timed stands as it was timed
            on_result(solution["name"], result, reference_ms)
            handle.kill()  # the next request gets a fresh worker
            if index + 1 == len(solutions):
                break
            reference_ms, reason = _prepare(handle, definition, workload, settings)
            if reference_ms is None:
                return reason
        elif EAGER.name in (result.get("latencies_ms") or {}):
            waiting.append((solution["name"], result, reference_ms))
        else:
            on_result(solution["name"], result, reference_ms)
    settle()
    return None


def _interleave_eager(handle: WorkerHandle, waiting: list[tuple[str, dict[str, Any], Any]],
                      settings: Settings) -> None:
    """Replace the eager times of `waiting` (two or more) with one timing of them together,
    interleaved in rounds (measure.timing.eager_interleaved_ms); left as they are if that
    fails."""
    if len(waiting) < 2:
        return
    request = {"solutions": [name for name, _, _ in waiting], "warmup": settings.warmup,
               "iters": settings.iters}
    try:
        answer = handle.request("interleave", request, settings.timeout * len(waiting))
    except WorkerLost:
        handle.kill()
        return
    for name, result, _ in waiting:
        latency = answer["latencies_ms"].get(name)
        if latency is None:
            continue
        result["latencies_ms"][EAGER.name] = latency
        result.setdefault("spreads", {})[EAGER.name] = answer["spreads"][name]
        result["latency_ms"] = next(iter(result["latencies_ms"].values()))


def _prepare(handle: WorkerHandle, definition: dict[str, Any], workload: dict[str, Any],
             settings: Settings) -> tuple[float | dict[str, float] | None, str]:
    """Materialise the workload and run its reference in the worker."""
    request = {"definition": definition, "workload": workload, "warmup": settings.warmup,
               "iters": settings.iters, "timings": list(settings.timings)}
    try:
        answer = handle.request("prepare", request, settings.reference_timeout)
    except WorkerLost as lost:
        answer = {"ok": False, "reason": f"preparing the workload failed: {lost.log}"}
    if answer["ok"]:
        per_timing = answer.get("reference_latencies_ms")
        if per_timing:
            return {**{k: float(v) for k, v in per_timing.items()},
                    "device": float(answer["reference_latency_ms"])}, ""
        return float(answer["reference_latency_ms"]), ""
    return None, str(answer["reason"])


def missing_blob(db: TraceDB, workload: Trace) -> str | None:
    """Why a workload cannot be materialised from this database (None: it can)."""
    for name, desc in workload.workload.inputs.items():
        if isinstance(desc, SafetensorsInput):
            try:
                present = db.blob_path(desc.path).is_file()
            except StoreError as exc:
                return f"input '{name}': {exc}"
            if not present:
                return f"input '{name}': blob file {desc.path} is missing"
    return None
