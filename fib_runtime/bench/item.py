"""One workload on one worker: prepare it, then check and time each solution on it.

Shared by the local pool (`engine`) and the Ray cluster (`ray_pool`): the requests, the
handling of a lost worker (a trace status, then a fresh worker that prepares again) and
what counts as unusable are the same wherever the worker runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fib_runtime.bench.compare import Tolerance
from fib_runtime.bench.pool import WorkerHandle
from fib_runtime.bench.progress import Progress
from fib_runtime.errors import StoreError, WorkerLost
from fib_runtime.schema import Definition, SafetensorsInput, Solution, Trace
from fib_runtime.store import TraceDB

# (solution name, worker answer, reference ms: one number, or one per timing regime)
OnResult = Callable[[str, dict[str, Any], "float | dict[str, float]"], None]


@dataclass(frozen=True)
class WorkloadTask:
    """One distinct workload of a definition and the solutions to measure on it."""

    definition: Definition
    workload: Trace
    solutions: tuple[Solution, ...]


class Run(Protocol):
    """What a driver (local or cluster) needs of the retune it serves (engine._Retune)."""

    db: TraceDB
    config: Any  # RetuneConfig
    settings: Settings
    report: Any  # RetuneReport

    def todo(self, item: WorkloadTask, info: Any) -> list[Solution]: ...
    def admitted(self, item: WorkloadTask, info: Any) -> int: ...
    def note_skipped(self, count: int) -> None: ...
    def unusable(self, item: WorkloadTask, reason: str, not_measured: int) -> None: ...
    def record_all(self, item: WorkloadTask,
                   results: list[tuple[Solution, dict[str, Any], float]], info: Any,
                   device: str) -> None: ...
    progress: Progress


@dataclass(frozen=True)
class Settings:
    """Timing and time limits of every evaluation of a retune."""

    warmup: int
    iters: int
    timeout: float
    reference_timeout: float
    timings: tuple[str, ...] = ("device",)  # the regimes to time (fib_runtime.bench.timing)


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
    for index, solution in enumerate(solutions):
        if stop():
            return None
        timings = list(settings.timings if timings_of is None else timings_of(solution["name"]))
        request = {"solution": solution, "warmup": settings.warmup, "iters": settings.iters,
                   "tolerance": tolerance, "timings": timings}
        try:
            result = handle.request("evaluate", request, settings.timeout)
        except WorkerLost as lost:
            result = {"status": lost.status, "log": lost.log, "fatal": True,
                      "timings": timings}
        on_result(solution["name"], result, reference_ms)
        if result.get("fatal"):
            handle.kill()  # the next request gets a fresh worker
            if index + 1 == len(solutions):
                break
            reference_ms, reason = _prepare(handle, definition, workload, settings)
            if reference_ms is None:
                return reason
    return None


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
