"""One definition's recorder: the hot-path filter and the admission policy behind it."""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from fib_runtime import cuda_graphs
from fib_runtime.capture.config import CapturePolicy
from fib_runtime.capture.snapshot import (
    copy_to_host,
    is_tensor,
    nbytes,
    scalar_value,
)
from fib_runtime.capture.stats import DefinitionStats
from fib_runtime.errors import CaptureConfigError
from fib_runtime.schema import Definition
from fib_runtime.tensors import INTEGER_DTYPES

log = logging.getLogger("fib_runtime.capture")
Key = tuple[int, ...]
INT_OR_BOOL_DTYPES = INTEGER_DTYPES | {"bool"}


@dataclass(slots=True)
class Record:
    """What the hot path hands to the writer: the key, scalars and host tensor copies."""

    owner: DefinitionRecorder
    key: Key
    hot_key: Key
    scalars: dict[str, int | float | bool]
    tensors: dict[str, Any]
    events: list[Any]


class CaptureQueue:
    """What a session's recorders share: the admission lock, the bounded record queue, totals.

    The lock is re-entrant so that a signal handler flushing in the main thread cannot
    deadlock against an admission it interrupted.

    `wake` is set when an admission takes the queue to its high-water mark (a quarter of
    its capacity), so that a burst of new workloads is written at once rather than at the
    writer's next interval; it is set on the crossing only, never per call.
    """

    def __init__(self, queue_size: int, max_total_bytes: int | None) -> None:
        self.lock = threading.RLock()
        self.queue: deque[Record] = deque()
        self.capacity = queue_size
        self.high_water = max(1, queue_size // 4)
        self.wake = threading.Event()
        self.max_total_bytes = max_total_bytes
        self.reserved_bytes = 0
        self.open = True
        self._warned: set[tuple[str, str]] = set()

    def after_fork(self) -> None:
        self.lock = threading.RLock()
        self.wake = threading.Event()
        self.queue.clear()

    def warn_once(self, tag: tuple[str, str], message: str, *args: Any) -> None:
        if tag not in self._warned:
            self._warned.add(tag)
            log.warning(message, *args)


class DefinitionRecorder:
    """Capture state of one definition.

    `record(key, args)` is the hot path handed to dispatch: a key in `done` costs one dict
    increment (its call count); any other key goes to `_admit` (under the session lock),
    which applies the policy, counts the call and queues a Record. `done` holds the keys
    that need no more records (their allowance is used up, or a cap refused them) with the
    calls made since; `take_calls()` hands the counts per key to the writer (traffic).
    """

    def __init__(self, definition: Definition, policy: CapturePolicy, shared: CaptureQueue,
                 seed: int | None = None) -> None:
        self.definition = definition
        self.policy = policy
        self.shared = shared
        self.stats = DefinitionStats()
        self.done: dict[Key, int] = {}  # key -> its calls on the hot path
        self._slow: dict[Key, int] = {}  # key -> its calls on the slow path
        self._reported: dict[Key, int] = {}  # key -> calls handed out by take_calls
        self._per_hot: dict[Key, int] = {}
        self._rng = random.Random(f"{seed}:{definition.name}" if seed is not None else None)
        specs = list(definition.inputs.items())
        self._scalars = [(i, name) for i, (name, spec) in enumerate(specs) if spec.shape is None]
        self.kv_indptr: str | None = None
        self._hot_key: Callable[[Key], Key] = _identity
        if policy.key == "kv_bucket":
            self.kv_indptr = policy.kv_indptr
            self._hot_key = self._shape_projection()
        dump = self._dump_names()
        self._dumps = [(i, name) for i, (name, _) in enumerate(specs) if name in dump]
        self.record, self._fast_hits = self._hot_path()

    # -- construction ----------------------------------------------------------------

    def _dump_names(self) -> set[str]:
        policy, inputs = self.policy, self.definition.inputs
        tensors = {name for name, spec in inputs.items() if spec.shape is not None}
        if policy.dump == "all":
            names = tensors
        elif policy.dump == "int":
            names = {name for name in tensors if inputs[name].dtype in INT_OR_BOOL_DTYPES}
        elif policy.dump == "named":
            unknown = sorted(set(policy.dump_inputs) - tensors)
            if unknown:
                raise CaptureConfigError(
                    f"{self.definition.name}: field 'dump_inputs': {', '.join(unknown)} are "
                    f"not tensor inputs (inputs: {', '.join(sorted(tensors))})")
            names = set(policy.dump_inputs)
        else:
            names = set()
        if self.kv_indptr is not None:
            if self.kv_indptr not in tensors:
                raise CaptureConfigError(
                    f"{self.definition.name}: field 'kv_indptr': key 'kv_bucket' needs a "
                    f"tensor input named {self.kv_indptr!r}")
            names.add(self.kv_indptr)
        return names

    def _shape_projection(self) -> Callable[[Key], Key]:
        definition = self.definition
        var_axes = definition.var_axes
        axes = self.policy.shape_axes
        if axes is None:
            axes = tuple(a for a in var_axes if any(
                a in (spec.shape or ()) and spec.dtype not in INT_OR_BOOL_DTYPES
                for spec in definition.inputs.values()))
        unknown = [a for a in axes if a not in var_axes]
        if unknown:
            raise CaptureConfigError(
                f"{definition.name}: field 'shape_axes': {', '.join(unknown)} are not "
                f"variable axes (variable axes: {', '.join(var_axes)})")
        positions = [var_axes.index(a) for a in axes]
        if len(positions) == 1:
            only = positions[0]
            return lambda key: (key[only],)
        return itemgetter(*positions) if positions else _empty_key  # type: ignore[return-value]

    def _hot_path(self) -> tuple[Callable[[Key, tuple[Any, ...]], None], Callable[[], int]]:
        done = self.done
        admit = self._admit

        def record(key: Key, args: tuple[Any, ...]) -> None:
            try:
                done[key] += 1
                return
            except KeyError:  # not done: the slow path
                pass
            except TypeError:  # an unhashable key; _admit counts it as an error
                pass
            admit(key, args)

        def fast_hits() -> int:
            return sum(list(done.values()))

        record.definition = self.definition  # type: ignore[attr-defined]
        record.__qualname__ = f"capture[{self.definition.name}]"
        return record, fast_hits

    # -- slow path ---------------------------------------------------------------------

    def _admit(self, key: Key, args: tuple[Any, ...]) -> None:
        """A call whose key is not done: apply the policy, maybe queue a record. Never raises."""
        name = self.definition.name
        with self.shared.lock:
            try:
                reason = self._try_admit(key, args)
            except Exception as exc:
                reason = "error"
                self.shared.warn_once((name, "error"), "capture of %s: a call could not be "
                                      "recorded and is skipped (%r); counting further ones",
                                      name, exc)
            if reason is not None:
                self.stats.dropped[reason] += 1

    def _try_admit(self, key: Key, args: tuple[Any, ...]) -> str | None:
        """None when a record was queued (or none was needed), else the reason it was not."""
        stats, policy, shared = self.stats, self.policy, self.shared
        stats.slow_calls += 1
        self._slow[key] = self._slow.get(key, 0) + 1
        if key in self.done:
            return None
        if not shared.open:
            return "session_closed"
        if policy.sample < 1.0 and self._rng.random() >= policy.sample:
            return "sampled_out"
        hot = self._hot_key(key)
        count = self._per_hot.get(hot, 0)
        if policy.per_key is not None and count >= policy.per_key:
            self.done.setdefault(key, 0)
            return "key_allowance"
        if policy.max_workloads is not None and stats.admitted >= policy.max_workloads:
            return self._refuse(key, "cap_workloads", f"max_workloads={policy.max_workloads}")
        in_graph = cuda_graphs.being_recorded()  # its tensors are not filled yet: no dumps
        dumps = {} if in_graph else self._tensors_to_dump(args)
        size = sum(nbytes(t) for t in dumps.values())
        if size and policy.max_blob_bytes is not None \
                and stats.reserved_bytes + size > policy.max_blob_bytes:
            return self._refuse(key, "cap_bytes", f"max_blob_bytes={policy.max_blob_bytes}")
        if size and shared.max_total_bytes is not None \
                and shared.reserved_bytes + size > shared.max_total_bytes:
            return self._refuse(key, "cap_total_bytes",
                                f"max_total_blob_bytes={shared.max_total_bytes}")
        pending = len(shared.queue)
        if pending >= shared.capacity:
            shared.warn_once(("*", "queue_full"), "capture queue full (%d records): calls are "
                             "dropped until the writer catches up; raise queue_size or lower "
                             "flush_interval_s", shared.capacity)
            return "queue_full"
        tensors, events = copy_to_host(dumps) if dumps else ({}, [])
        shared.queue.append(Record(self, key, hot, self._scalar_values(args), tensors, events))
        if pending + 1 == shared.high_water:  # the crossing: wake the writer once
            shared.wake.set()
        stats.admitted += 1
        stats.reserved_bytes += size
        shared.reserved_bytes += size
        stats.graph_captured += in_graph
        self._per_hot[hot] = count + 1
        if self.kv_indptr is not None or (policy.per_key is not None
                                           and count + 1 >= policy.per_key):
            self.done.setdefault(key, 0)
        return None

    def _refuse(self, key: Key, reason: str, cap: str) -> str:
        """Past a cap: the key is done, the call dropped and counted, one warning."""
        self.done.setdefault(key, 0)
        scope = "*" if reason == "cap_total_bytes" else self.definition.name
        self.shared.warn_once((scope, reason), "capture of %s reached %s: further workloads "
                              "are dropped and counted (capture_stats())",
                              self.definition.name, cap)
        return reason

    def _tensors_to_dump(self, args: tuple[Any, ...]) -> dict[str, Any]:
        return {name: args[i] for i, name in self._dumps if i < len(args) and is_tensor(args[i])}

    def _scalar_values(self, args: tuple[Any, ...]) -> dict[str, int | float | bool]:
        out = {}
        for i, name in self._scalars:
            value = scalar_value(args[i]) if i < len(args) else None
            if value is not None:
                out[name] = value
        return out

    def take_calls(self) -> dict[Key, int]:
        """The calls of each key since the last take (for the traffic counts)."""
        with self.shared.lock:
            totals = dict(self._slow)
            for key, calls in list(self.done.items()):
                totals[key] = totals.get(key, 0) + calls
            new = {k: n - self._reported.get(k, 0) for k, n in totals.items()}
            self._reported = totals
        return {k: n for k, n in new.items() if n > 0}

    def snapshot(self) -> dict[str, Any]:
        return self.stats.as_dict(self._fast_hits())


def _identity(key: Key) -> Key:
    return key


def _empty_key(key: Key) -> Key:
    return ()
