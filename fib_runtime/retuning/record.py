"""Record: a worker's answer becomes a trace stamped with its regime, the digest of the
solution content measured and its spread, written to the database once, as soon as it exists
(so an interrupted retune resumes where it stopped); then the summary's outcome and the
progress bar. A write failure stops the retune and says what was not written."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from fib_runtime.errors import FibError, TracesNotWritten
from fib_runtime.regimes import DEVICE
from fib_runtime.retuning.plan import Plan, WorkloadTask
from fib_runtime.retuning.summary import Outcome, RetuneSummary, Unusable
from fib_runtime.retuning.worker import DeviceInfo
from fib_runtime.schema import (
    Correctness,
    Environment,
    Evaluation,
    Performance,
    Solution,
    Status,
    Trace,
)
from fib_runtime.schema.provenance import stamped
from fib_runtime.store import TraceDB

log = logging.getLogger("fib_runtime.retuning")
# One evaluation's result: the solution, the worker's answer, the reference's ms (one
# number, or one per timing regime).
Result = tuple[Solution, dict[str, Any], float | Mapping[str, float]]


def make_trace(definition: str, workload: Trace, solution: str, result: dict[str, Any],
               reference_ms: float | Mapping[str, float], info: DeviceInfo,
               timing: str = DEVICE.name, *, digest: str | None = None) -> Trace:
    """The trace of one evaluation (a worker's answer) in one timing regime on the device
    `info` describes. A regime other than `device` and the digest of the solution content
    measured are stamped into the environment."""
    status = Status(result["status"])
    if isinstance(reference_ms, Mapping):  # the reference timed in each regime
        reference_ms = float(reference_ms.get(timing, reference_ms.get(DEVICE.name, 0.0)))
    correctness = performance = None
    raw = result.get("correctness")
    if raw is not None:
        correctness = Correctness(raw["max_relative_error"], raw["max_absolute_error"],
                                  raw.get("extra"))
    if status is Status.PASSED:
        latency = float((result.get("latencies_ms") or {}).get(timing, result.get("latency_ms")))
        performance = Performance(latency, reference_ms,
                                  reference_ms / latency if latency > 0 else 0.0)
    spread = (result.get("spreads") or {}).get(timing) if performance is not None else None
    environment = Environment(info.name, info.libs, {"hardware_key": info.key})
    if timing != DEVICE.name or digest is not None or spread is not None:
        environment = stamped(environment, timing=None if timing == DEVICE.name else timing,
                              digest=digest, spread=spread)
    evaluation = Evaluation(status, environment, datetime.now(timezone.utc).isoformat(),
                            result.get("log") or None, correctness, performance)
    return Trace(definition, workload.workload, solution, evaluation)


class Recorder:
    """Writes each evaluation's traces (the only writer of a retune) and keeps the summary's
    outcomes, the progress bar and the count of what a failed write lost."""

    def __init__(self, db: TraceDB, plan: Plan, summary: RetuneSummary, timings: tuple[str, ...],
                 lock: threading.Lock, stop: threading.Event) -> None:
        self.db, self.plan, self.summary, self.timings = db, plan, summary, timings
        self.lock, self.stop = lock, stop
        self.progress = Progress()
        self.write_failure: Exception | None = None
        self.lost = 0

    def record(self, item: WorkloadTask, results: list[Result], info: DeviceInfo,
               device: str) -> None:
        """Append the traces of evaluations of one workload, each in every regime it was
        timed in, in one write."""
        name, wl = item.definition.name, item.workload.workload
        traces = [(solution, timing, make_trace(name, item.workload, solution.name, result,
                                                reference_ms, info, timing,
                                                digest=self.plan.digest(solution)))
                  for solution, result, reference_ms in results
                  for timing in result.get("timings") or self.timings
                  if timing not in (result.get("unavailable") or {})]
        if not traces:
            return
        with self.lock:
            if not self._write([trace for _, _, trace in traces]):
                return
            for solution, timing, trace in traces:
                self.plan.measured_now(name, info.key, solution, wl.uuid, timing)
                evaluation = trace.evaluation
                performance = evaluation.performance if evaluation else None
                self.summary.outcomes.append(Outcome(
                    name, wl.uuid, solution.name, evaluation.status.value if evaluation else "",
                    performance.latency_ms if performance else None, device, timing))
        self.progress.advance(len(results), name)

    def unusable(self, item: WorkloadTask, reason: str, not_measured: int) -> None:
        """Note a workload that could not be prepared; its evaluations count as done."""
        wl = item.workload.workload
        log.warning("%s: workload %s skipped: %s", item.definition.name, wl.uuid,
                    reason.splitlines()[0])
        with self.lock:
            self.summary.unusable.append(Unusable(item.definition.name, wl.uuid, reason))
        self.progress.advance(not_measured, item.definition.name)

    def _write(self, traces: list[Trace]) -> bool:
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
                                   len(self.summary.outcomes))


class Progress:
    """Retune's progress bar (tqdm on stderr) over evaluations, opened with a total that may
    grow later; every method is a no-op until `open`."""

    def __init__(self) -> None:
        self._bar: Any = None

    def open(self, total: int, enabled: bool) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, file=sys.stderr, disable=not enabled, unit="eval",
                         dynamic_ncols=True, desc="retune")

    def grow(self, count: int) -> None:
        """More evaluations to do (a cluster's hardware kind joined)."""
        if self._bar is not None and count:
            self._bar.total += count
            self._bar.refresh()

    def advance(self, count: int, label: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(label, refresh=False)
            self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
