"""What a retune measures: the workloads and solutions asked for, the trust gate, and THE
rule of what is skipped (`Plan.needs_measuring`).

Only trusted code is sent to the workers (decided here, in the driver, so local workers and
Ray workers see one decision; see fib_runtime.trust). A (solution, workload, hardware key,
timing regime) that already has a trace of the solution's current content is skipped unless
`force`, so an interrupted retune resumes where it stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from fib_runtime.errors import RetuneError
from fib_runtime.hardware import CPU_KEY, target_matches
from fib_runtime.measure.timing import get_timer
from fib_runtime.original import untimeable_reason
from fib_runtime.ranking import measures
from fib_runtime.retuning.summary import RetuneSummary
from fib_runtime.retuning.worker import DeviceInfo
from fib_runtime.schema import Definition, Solution, Trace
from fib_runtime.schema.provenance import content_digest, digest_of, timing_of
from fib_runtime.store import TraceDB
from fib_runtime.trust import Trust

log = logging.getLogger("fib_runtime.retuning")
# Per (solution, workload, timing): the solution digests its traces carry (None: a trace
# without one).
Measured = dict[tuple[str, str, str], set[str | None]]


@dataclass(frozen=True)
class WorkloadTask:
    """One distinct workload of a definition and the solutions to measure on it."""

    definition: Definition
    workload: Trace
    solutions: tuple[Solution, ...]


def workload_tasks(db: TraceDB, definitions: Iterable[str] | None,
                   solutions: Iterable[str] | None) -> list[WorkloadTask]:
    """Each distinct workload of the asked-for definitions with its asked-for solutions."""
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


def trusted_only(db: TraceDB, items: list[WorkloadTask]
                 ) -> tuple[list[WorkloadTask], list[str]]:
    """The items with their untrusted solutions removed, and without the workloads of a
    definition whose reference is untrusted (it would run as the correctness oracle);
    plus what was left out, one line each."""
    trust = Trust(db.root, db.definitions)  # its verdicts are kept per kind and content
    left_out: dict[str, None] = {}
    kept = []
    for item in items:
        definition = item.definition
        reference_runs = trust.definition(definition) is not None
        if not reference_runs:
            left_out[f"definition {definition.name} (its reference)"] = None
        solutions = []
        for solution in item.solutions:
            if trust.solution(solution) is not None:
                solutions.append(solution)
            else:
                left_out[f"solution {solution.name} (author {solution.author})"] = None
        if solutions and reference_runs:
            kept.append(replace(item, solutions=tuple(solutions)))
    if left_out:
        log.warning("%s: %d untrusted records are not run; `fib trust %s` trusts them",
                    db.root, len(left_out), db.root)
    return kept, list(left_out)


class Plan:
    """What is still to measure, per device: what the database holds (read once per
    definition and hardware key, from its files when the database was opened without traces;
    only the keys are kept) plus what this retune has recorded (`measured_now`).
    Shared by the device drivers (thread-safe under `lock`)."""

    def __init__(self, db: TraceDB, timings: tuple[str, ...], force: bool,
                 summary: RetuneSummary, lock: threading.Lock,
                 deadline: float | None = None) -> None:
        self.db, self.timings, self.force = db, timings, force
        self.deadline = deadline  # time.monotonic() past which no workload is started
        self.summary = summary
        self.lock = lock
        self._measured: dict[tuple[str, str], Measured] = {}  # per (definition, hardware)
        self._digests: dict[str, str] = {}
        self._record_files: dict[str, list[tuple[Path, bool]]] | None = None

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
            found = self._digests[solution.name] = content_digest(solution)
        return found

    def timings_on(self, info: DeviceInfo) -> tuple[str, ...]:
        """The asked-for regimes this device can time (the others are noted once)."""
        device = "cpu" if info.key == CPU_KEY else "cuda"
        usable = []
        for timing in self.timings:
            reason = get_timer(timing).unavailable(device)
            if reason is None:
                usable.append(timing)
                continue
            self._note(f"{timing} timing not measured on {info.key}: {reason}")
        return tuple(usable)

    def _note(self, note: str) -> None:
        """Say once, after the table, what this retune did not measure and why."""
        with self.lock:
            if note not in self.summary.notes:
                self.summary.notes.append(note)

    def regimes(self, item: WorkloadTask, info: DeviceInfo, solution: Solution
                ) -> tuple[str, ...]:
        """The regimes in which a solution still needs measuring on the item's workload."""
        name = item.definition.name
        with self.lock:
            measured = self._measured.get((name, info.key))
            if measured is None:
                measured = {}
                if self._record_files is None and not self.db.traces_loaded:
                    self._record_files = self.db.record_files()  # once: a walk of the folder
                for t in self.db.stored_traces(name, info.key, self._record_files):
                    if t.evaluation is not None:
                        measured.setdefault((t.solution or "", t.workload.uuid,
                                             timing_of(t.evaluation)), set()).add(
                            digest_of(t.evaluation))
                self._measured[(name, info.key)] = measured
        uuid = item.workload.workload.uuid
        return tuple(t for t in self.timings_on(info)
                     if self.needs_measuring(solution, uuid, t, measured))

    def measured_now(self, definition: str, hardware: str, solution: Solution,
                     workload: str, timing: str) -> None:
        """A trace of this was just written (call under `lock`)."""
        self._measured.setdefault((definition, hardware), {}).setdefault(
            (solution.name, workload, timing), set()).add(self.digest(solution))

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

    def take(self, item: WorkloadTask, info: DeviceInfo) -> list[Solution]:
        """The item's solutions to measure now on this device; the ones it admits but that
        are measured already count as skipped."""
        todo = self.todo(item, info)
        if todo and self.deadline is not None and time.monotonic() > self.deadline:
            with self.lock:  # the budget is spent: the next retune measures it
                self.summary.deferred += len(todo)
            return []
        admitted = sum(1 for s in item.solutions
                       if target_matches(s.spec.target_hardware, info.key)
                       and untimeable_reason(s) is None)
        with self.lock:
            self.summary.skipped += admitted - len(todo)
        return todo
