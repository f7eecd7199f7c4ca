"""Traffic-weighted retune: the workloads most called, where dispatch gains most, first.

Capture counts the calls of each key (`store.read_traffic`). A workload's priority is its
key's calls (summed over GPU models) times the expected gain of measuring it: the speed-up
of the fastest solution over the engine's original at the nearest key measured so far on
the GPU model retune runs on (1 where that is unknown). Traces are read one definition and
GPU model at a time (`TraceDB.stored_traces`), as the plan reads them. With `fib retune
--budget`, work is taken in that order until the budget is spent; what is left is measured
by the next retune (it skips what is measured), and the summary says what share of the
captured calls the keys measured on this hardware now cover.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from fib_runtime.keys import Key, axes_to_key
from fib_runtime.ranking import nearest_key, rank
from fib_runtime.retuning.plan import WorkloadTask
from fib_runtime.schema import Definition, Status
from fib_runtime.store import TraceDB, read_traffic


def calls_per_key(db: TraceDB, definition: Definition) -> Counter[Key]:
    """The captured calls of each key, summed over GPU models."""
    calls: Counter[Key] = Counter()
    for (_, key), n in read_traffic(db.root, definition).items():
        calls[key] += n
    return calls


def gains(db: TraceDB, definition: Definition, hardware: str) -> dict[Key, float]:
    """Per key ranked on `hardware` (the ranking rule's own candidates): the fastest
    solution's speed-up over the engine's original there (keys where no original is a
    candidate are left out)."""
    out: dict[Key, float] = {}
    for key, result in rank(definition, db.stored_traces(definition.name, hardware),
                            db.solutions, hardware).items():
        ranking = result.ranking
        latency = dict(zip(ranking.names, ranking.latencies_ms, strict=True))
        original = min((latency[n] for n in ranking.originals if n in latency), default=None)
        fastest = min(ranking.latencies_ms, default=0.0)
        if original is not None and fastest > 0:
            out[key] = original / fastest
    return out


def by_traffic(db: TraceDB, items: list[WorkloadTask], hardware: str) -> list[WorkloadTask]:
    """The items ordered by calls x expected gain on `hardware` (the GPU model retune runs
    on), highest first (ties keep their order)."""
    calls: dict[str, Counter[Key]] = {}
    gain: dict[str, dict[Key, float]] = {}

    def priority(item: WorkloadTask) -> float:
        definition = item.definition
        name = definition.name
        if name not in calls:
            calls[name] = calls_per_key(db, definition)
            gain[name] = gains(db, definition, hardware)
        key = axes_to_key(definition, dict(item.workload.workload.axes))
        near = gain[name].get(key) or gain[name].get(nearest_key(gain[name], key) or ())
        return calls[name][key] * (near or 1.0)

    return sorted(items, key=priority, reverse=True)


def coverage(db: TraceDB, definitions: Iterable[str], hardware_keys: Iterable[str]
             ) -> tuple[int, int]:
    """(captured calls whose key has a passing trace on these GPU models, captured calls)."""
    keys = set(hardware_keys)
    covered = total = 0
    for name in dict.fromkeys(definitions):
        definition = db.definitions[name]
        calls = calls_per_key(db, definition)
        measured = {axes_to_key(definition, dict(t.workload.axes))
                    for hw in keys for t in db.stored_traces(name, hw)
                    if t.evaluation is not None and t.evaluation.status == Status.PASSED}
        total += sum(calls.values())
        covered += sum(n for key, n in calls.items() if key in measured)
    return covered, total
