"""retune: benchmark every candidate solution on every captured workload, on this machine's
devices (or a Ray cluster's), and append the results to the database as traces.

It reads as its four steps: the plan (`plan`: the workloads and solutions asked for, the
trust gate, and what is measured already), the executor (`executor`: the local pool of
worker processes or the Ray cluster; in a device's worker each workload is materialised and
its reference run once, then each solution whose `target_hardware` admits the device is
built, checked and timed), the record (`record`: every result becomes a trace, appended as
soon as it exists, so an interrupted retune resumes where it stopped) and the summary
(`summary`). Each timing regime asked for (`timings`, see fib_runtime.regimes and
fib_runtime.measure.timing) gives its own trace, stamped with its regime.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fib_runtime.dispatch.served import write_served
from fib_runtime.errors import FibError, RetuneError
from fib_runtime.hardware import current_hardware
from fib_runtime.measure.compare import Tolerance
from fib_runtime.measure.timing import parse_timings
from fib_runtime.regimes import DEVICE
from fib_runtime.retuning.executor import Executor, Job, LocalPool, Settings
from fib_runtime.retuning.plan import Plan, trusted_only, workload_tasks
from fib_runtime.retuning.record import Recorder
from fib_runtime.retuning.summary import RetuneSummary, fill_buckets, nothing_to_compare
from fib_runtime.retuning.traffic import by_traffic, coverage
from fib_runtime.store import TraceDB

log = logging.getLogger("fib_runtime.retuning")


@dataclass(frozen=True)
class RetuneConfig:
    """Settings beyond the command line's.

    `tolerances` overrides the per-dtype defaults (see fib_runtime.measure.compare) for the
    named definitions, as (atol, rtol). `reference_timeout` bounds preparing a workload
    (inputs, reference run and timing); `startup_timeout` bounds starting a worker.
    """

    tolerances: Mapping[str, Tolerance] = field(default_factory=dict)
    reference_timeout: float = 600.0
    startup_timeout: float = 300.0
    timings: tuple[str, ...] = (DEVICE.name,)  # the timing regimes to measure

    def __post_init__(self) -> None:
        object.__setattr__(self, "timings", parse_timings(self.timings))


def retune(db: TraceDB | str | Path, definitions: Iterable[str] | None = None,
           solutions: Iterable[str] | None = None,
           devices: str | Sequence[int | str] | None = None, *, warmup: int = 10,
           iters: int = 50, timeout: float = 120.0, force: bool = False,
           progress: bool = True, config: RetuneConfig | None = None,
           cluster: str | None = None, budget: float | None = None) -> RetuneSummary:
    """Benchmark the selected solutions on the captured workloads and append traces.

    Workloads are taken most-called first, weighted by the expected gain (traffic.py);
    with `budget` (seconds) no workload is started once it is spent, and the next retune
    goes on from there. `timeout` bounds one solution on one workload (build, check and
    timing) in seconds.
    `cluster` ("ray" for the Ray cluster of $RAY_ADDRESS or this host, or an address)
    spreads the work over every GPU of a Ray cluster instead of this machine's `devices`.
    """
    if cluster is not None and devices is not None:
        raise RetuneError("give either devices or a cluster, not both")
    if not isinstance(db, TraceDB):  # traces are read one definition at a time (Plan)
        db = TraceDB.open(db, traces=False)
    config = config or RetuneConfig()
    deadline = None if budget is None else time.monotonic() + budget
    items, untrusted = trusted_only(db, workload_tasks(db, definitions, solutions))
    items = by_traffic(db, items, current_hardware().key if cluster is None else "")
    summary = RetuneSummary(untrusted=untrusted, notes=nothing_to_compare(db, definitions))
    executor: Executor
    if cluster is not None:
        from fib_runtime.retuning.cluster import RayCluster  # Ray only when asked for

        executor = RayCluster(cluster)
    else:
        executor = LocalPool(devices, config.startup_timeout, db)
    job = new_job(db, summary, warmup=warmup, iters=iters, timeout=timeout, force=force,
                  config=config, deadline=deadline)
    if items:
        infos = executor.run(job, items, progress)
        names = [i.definition.name for i in items]
        fill_buckets(summary, db, names, {i.key for i in infos}, config.timings)
        summary.traffic = coverage(db, names, {i.key for i in infos})
        refresh_served(db.root, sorted({i.key for i in infos}))
    job.recorder.raise_if_lost()
    return summary


def refresh_served(root: Path, hardware_keys: list[str]) -> None:
    """Write the served tables of the keys just measured beside the traces, so that serving
    processes start without parsing them; a failure only costs them that parse."""
    try:
        write_served(root, hardware_keys)
    except (OSError, FibError) as exc:
        log.warning("served tables of %s not written: %s", root, exc)


def new_job(db: TraceDB, summary: RetuneSummary, *, warmup: int, iters: int, timeout: float,
            force: bool, config: RetuneConfig, deadline: float | None = None) -> Job:
    """What an executor is handed: the settings, the plan and the recorder of one retune."""
    lock, stop = threading.Lock(), threading.Event()
    plan = Plan(db, config.timings, force, summary, lock, deadline)
    recorder = Recorder(db, plan, summary, config.timings, lock, stop)
    return Job(db, Settings(warmup, iters, timeout, config.reference_timeout, config.timings),
               config.tolerances, config.startup_timeout, plan, recorder, summary, stop)
