"""Retune on a Ray cluster: the evaluations of a retune spread over every GPU of the cluster.

The executor behind `retune(cluster=...)` (`RayCluster`, see fib_runtime.retuning.executor).
One Ray actor per GPU (`num_gpus=1`, pinned to its node; on a cluster without GPUs, one
actor per node with one CPU) owns a local worker process (`worker.WorkerHandle`), so a
solution that crashes, hangs or runs out of memory costs that worker, exactly as on one
host: a trace status, then a fresh worker. An actor that is itself lost (killed, its node
gone, or silent past its deadline) is replaced and its workload handed out again, at most
`MAX_LOSSES` times; then the workload's evaluations get a trace with RUNTIME_ERROR (TIMEOUT
for a deadline).

Every actor reports its device; each hardware key (H100, H200, cpu...) has its own queue of
workloads, served only by the actors of that key, so a cluster of H100s and H200s measures
every workload on both and writes traces for both; nothing measured on one model stands for
another. The driver is the only writer: it appends each workload's traces to the database
as they arrive, and what is measured already (per hardware key) is not sent out again.

Ray is imported only here, only when a cluster retune starts (`pip install fib-runtime[ray]`).
The database must be at the same path on every node (shared storage) for workloads whose
inputs are safetensors blobs; others need nothing on the nodes but the same Python packages.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fib_runtime.errors import ClusterError
from fib_runtime.retuning.executor import Job, Settings, evaluate_item, missing_blob
from fib_runtime.retuning.plan import WorkloadTask
from fib_runtime.retuning.worker import DeviceInfo, Extensions, WorkerHandle, extensions

if TYPE_CHECKING:
    from fib_runtime.schema import Solution

log = logging.getLogger("fib_runtime.retuning")
MAX_LOSSES = 2  # an actor lost this many times on one workload: its evaluations fail
_START_SLACK_S = 60.0
_POLL_S = 1.0


def connect(cluster: str) -> Any:
    """Import Ray and connect to `cluster` ("ray": $RAY_ADDRESS or the local cluster)."""
    try:
        import ray
    except ImportError:
        raise ClusterError("a cluster retune needs Ray: pip install 'fib-runtime[ray]'"
                           ) from None
    if ray.is_initialized():
        return ray
    address = os.environ.get("RAY_ADDRESS", "auto") if cluster == "ray" else cluster
    try:
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from None
    return ray


class Evaluator:
    """The body of one Ray actor: a local worker process on the actor's device."""

    def __init__(self, gpu: bool, db_root: str, startup_timeout: float,
                 parent: Extensions | None = None) -> None:
        # Ray makes the actor's one GPU the only visible one. The worker adopts the driver's
        # regimes, timers and input makers.
        self.handle = WorkerHandle("cuda:0" if gpu else "cpu", Path(db_root),
                                   startup_timeout=startup_timeout, parent=parent)

    def start(self) -> dict[str, Any]:
        import ray

        info = self.handle.start()
        gpus = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
        return {"name": info.name, "key": info.key, "libs": info.libs, "gpus": list(gpus),
                "pid": os.getpid()}

    def run(self, definition: dict[str, Any], workload: dict[str, Any],
            solutions: list[dict[str, Any]], settings: dict[str, Any],
            tolerance: tuple[float, float] | None) -> dict[str, Any]:
        results: list[tuple[str, dict[str, Any], float]] = []
        reason = evaluate_item(self.handle, definition, workload, solutions,
                               Settings(**settings), tolerance,
                               lambda name, result, ms: results.append((name, result, ms)))
        return {"results": results, "unusable": reason}

    def stop(self) -> None:
        self.handle.stop()


@dataclass
class Slot:
    """One place an actor runs: a GPU of a node (or a CPU-only node)."""

    node: str
    address: str
    gpu: bool
    actor: Any = None
    info: DeviceInfo | None = None
    label: str = ""
    busy: bool = False
    failed_starts: int = 0


def plan_slots(nodes: list[dict[str, Any]]) -> list[Slot]:
    """One slot per GPU of each alive node; with no GPU anywhere, one per node with a CPU."""
    alive = [n for n in nodes if n.get("Alive")]
    gpus = [(n, int(n.get("Resources", {}).get("GPU", 0))) for n in alive]
    if any(count for _, count in gpus):
        return [Slot(n["NodeID"], n.get("NodeManagerAddress", ""), True)
                for n, count in gpus for _ in range(count)]
    return [Slot(n["NodeID"], n.get("NodeManagerAddress", ""), False) for n in alive
            if n.get("Resources", {}).get("CPU", 0) >= 1]


class KeyQueues:
    """The workloads still to measure, one queue per hardware key."""

    def __init__(self, job: Job, items: list[WorkloadTask]) -> None:
        self.job = job
        self.items = items
        self.by_key: dict[str, deque[WorkloadTask]] = {}
        self.losses: Counter[tuple[int, str]] = Counter()

    def join(self, info: DeviceInfo) -> None:
        """A worker of `info.key` is ready: the first one of its key brings the key's work."""
        if info.key not in self.by_key:
            self.by_key[info.key] = deque(self.items)
            self.job.recorder.progress.grow(sum(len(self.job.plan.todo(i, info))
                                                for i in self.items))

    def next_for(self, info: DeviceInfo) -> tuple[WorkloadTask, list[Solution]] | None:
        """The next workload with something left to measure on this key."""
        queue = self.by_key[info.key]
        while queue:
            item = queue.popleft()
            todo = self.job.plan.take(item, info)
            if todo:
                return item, todo
        return None

    def retry(self, item: WorkloadTask, info: DeviceInfo) -> int:
        """Hand a workload out again after its actor was lost; returns the losses so far."""
        key = (id(item), info.key)
        self.losses[key] += 1
        if self.losses[key] <= MAX_LOSSES:
            self.by_key[info.key].appendleft(item)
        return self.losses[key]

    def left(self) -> dict[str, int]:
        return {key: len(queue) for key, queue in self.by_key.items() if queue}


@dataclass
class _Task:
    kind: str  # "start" or "run"
    slot: Slot
    deadline: float
    item: WorkloadTask | None = None
    todo: list[Solution] = dataclasses.field(default_factory=list)
    timed_out: bool = False


class ClusterDriver:
    """Hands workloads to the actors as they free up and records what comes back."""

    def __init__(self, ray: Any, job: Job, items: list[WorkloadTask], slots: list[Slot], *,
                 evaluator: type = Evaluator) -> None:
        self.ray = ray
        self.job = job
        self.slots = slots
        self.queues = KeyQueues(job, items)
        self.pending: dict[Any, _Task] = {}
        self.infos: dict[str, DeviceInfo] = {}
        self._actor_class = ray.remote(evaluator)
        self._extensions = extensions()
        settings = job.settings
        self._startup_s = job.startup_timeout + _START_SLACK_S
        self._per_eval_s = settings.timeout + settings.reference_timeout

    def run_all(self) -> list[DeviceInfo]:
        for slot in self.slots:
            self._launch(slot)
        while self.pending:
            ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=_POLL_S)
            for ref in ready:
                task = self.pending.pop(ref)
                if task.kind == "start":
                    self._started(ref, task)
                else:
                    self._finished(ref, task)
            self._enforce_deadlines()
        if not self.infos:
            raise ClusterError("no worker could start on any node of the cluster (see the "
                               "warnings above)")
        for key, count in self.queues.left().items():
            log.warning("cluster retune: %d workloads were not measured on %s (no worker of "
                        "that hardware is left); run the retune again", count, key)
        return list(self.infos.values())

    def shutdown(self) -> None:
        """Stop every actor (each stops its worker process), then make sure they are gone."""
        actors = [s.actor for s in self.slots if s.actor is not None]
        try:
            self.ray.get([a.stop.remote() for a in actors], timeout=15)
        except Exception as exc:  # lost actors cannot answer; they are killed below
            log.debug("cluster retune: stopping actors: %r", exc)
        for actor in actors:
            self.ray.kill(actor)

    # -- actors ---------------------------------------------------------------------------

    def _launch(self, slot: Slot) -> None:
        strategy = self.ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy
        options: dict[str, Any] = {
            "num_gpus": 1 if slot.gpu else 0, "num_cpus": 0 if slot.gpu else 1,
            "max_restarts": 0, "scheduling_strategy": strategy(slot.node, soft=False)}
        slot.actor = self._actor_class.options(**options).remote(
            slot.gpu, str(self.job.db.root.resolve()), self.job.startup_timeout,
            self._extensions)
        slot.busy = True
        self.pending[slot.actor.start.remote()] = _Task(
            "start", slot, time.monotonic() + self._startup_s)

    def _replace(self, slot: Slot) -> None:
        if slot.actor is not None:
            self.ray.kill(slot.actor)
            slot.actor = None
        self._launch(slot)

    def _started(self, ref: Any, task: _Task) -> None:
        slot = task.slot
        try:
            answer = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            slot.failed_starts += 1
            if slot.failed_starts > MAX_LOSSES:
                log.warning("cluster retune: no worker starts on node %s (%s); it is left out",
                            slot.address, _first_line(exc))
                self.ray.kill(slot.actor)
                slot.actor, slot.busy = None, False
                return
            self._replace(slot)
            return
        slot.failed_starts = 0
        info = DeviceInfo(answer["name"], answer["key"], dict(answer["libs"]))
        if slot.info is not None and slot.info.key != info.key:
            log.warning("cluster retune: node %s now reports %s instead of %s", slot.address,
                        info.key, slot.info.key)
        slot.info = info
        gpus = answer["gpus"]
        device = f"cuda:{gpus[0]}" if gpus else "cpu"
        slot.label = f"{slot.address}[{slot.node[:8]}]/{device}"
        self.infos.setdefault(info.key, info)
        self.job.summary.hardware = sorted({f"{i.name} ({i.key})" for i in self.infos.values()})
        self.queues.join(info)
        self._dispatch(slot)

    # -- work -----------------------------------------------------------------------------

    def _dispatch(self, slot: Slot) -> None:
        """Give the slot its next workload; it goes idle when its key has none left."""
        assert slot.info is not None
        job = self.job
        while True:
            nxt = self.queues.next_for(slot.info)
            if nxt is None:
                slot.busy = False
                return
            item, todo = nxt
            reason = missing_blob(job.db, item.workload)
            if reason is None:
                break
            job.recorder.unusable(item, reason, len(todo))
        ref = slot.actor.run.remote(
            item.definition.to_dict(), item.workload.workload.to_dict(),
            [s.to_dict() for s in todo], dataclasses.asdict(job.settings),
            job.tolerances.get(item.definition.name))
        deadline = time.monotonic() + self._per_eval_s * (len(todo) + 1) + _START_SLACK_S
        slot.busy = True
        self.pending[ref] = _Task("run", slot, deadline, item, todo)

    def _finished(self, ref: Any, task: _Task) -> None:
        slot, item = task.slot, task.item
        assert item is not None and slot.info is not None
        try:
            answer = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            self._lost(task, exc)
            return
        by_name = {s.name: s for s in task.todo}
        self.job.recorder.record(item, [(by_name[name], result, reference_ms)
                                        for name, result, reference_ms in answer["results"]],
                                 slot.info, slot.label)
        if answer["unusable"] is not None:
            self.job.recorder.unusable(item, answer["unusable"],
                                       len(task.todo) - len(answer["results"]))
        self._dispatch(slot)

    def _lost(self, task: _Task, exc: Exception) -> None:
        """The actor died (or was killed at its deadline) with a workload in hand."""
        slot, item = task.slot, task.item
        assert item is not None and slot.info is not None
        info = slot.info
        status = "TIMEOUT" if task.timed_out else "RUNTIME_ERROR"
        log.warning("cluster retune: the worker on %s was lost (%s); it is replaced",
                    slot.label, _first_line(exc))
        losses = self.queues.retry(item, info)
        if losses > MAX_LOSSES:
            text = (f"the Ray worker on {slot.label} was lost {losses} times while evaluating "
                    f"this workload ({status}): {_first_line(exc)}")
            failed = {"status": status, "log": text}
            self.job.recorder.record(item, [(s, failed, 0.0) for s in task.todo], info,
                                     slot.label)
        self._replace(slot)
        for other in self.slots:  # idle workers of the key take the returned workload
            if other is not slot and not other.busy and other.actor is not None \
                    and other.info is not None and other.info.key == info.key:
                self._dispatch(other)

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for task in self.pending.values():
            if now > task.deadline and not task.timed_out:
                task.timed_out = True
                log.warning("cluster retune: the worker on %s is past its deadline; killed",
                            task.slot.label or task.slot.address)
                self.ray.kill(task.slot.actor)  # its pending call now fails: handled as lost


class RayCluster:
    """The executor of a cluster retune: every GPU of the Ray cluster at `address` ("ray":
    $RAY_ADDRESS or the cluster started on this host)."""

    def __init__(self, address: str) -> None:
        self.address = address

    def run(self, job: Job, items: list[WorkloadTask], progress: bool) -> list[DeviceInfo]:
        """Run the retune's evaluations on the cluster; returns each hardware kind's info."""
        ray = connect(self.address)
        slots = plan_slots(ray.nodes())
        if not slots:
            raise ClusterError(f"the Ray cluster {self.address!r} has no alive node with a "
                               "GPU or CPU")
        driver = ClusterDriver(ray, job, items, slots)
        job.recorder.progress.open(0, progress)
        try:
            return driver.run_all()
        finally:
            job.recorder.progress.close()
            driver.shutdown()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
