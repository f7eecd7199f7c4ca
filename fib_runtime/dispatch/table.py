"""The decision table: per definition, per workload key, solutions ranked by latency."""

from __future__ import annotations

import hashlib
import logging
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from fib_runtime.dispatch.config import DispatchConfig
from fib_runtime.dispatch.keys import Key, axes_to_key
from fib_runtime.hardware import arch_of_key, target_matches
from fib_runtime.schema import Definition, Status, Trace
from fib_runtime.store import TraceDB
from fib_runtime.store.files import write_atomic

log = logging.getLogger("fib_runtime.dispatch")


@dataclass(frozen=True)
class Ranking:
    """Candidates for one key, fastest first, with their median latency in ms."""

    names: tuple[str, ...]
    latencies_ms: tuple[float, ...]


@dataclass(frozen=True)
class DefinitionTable:
    """What one definition's measurements say on this hardware."""

    rankings: dict[Key, Ranking]
    source_hardware: tuple[str, ...]  # hardware keys the traces came from

    def best_overall(self) -> Ranking | None:
        """Solutions ranked by how often they win, then by geometric-mean slowdown."""
        if not self.rankings:
            return None
        wins: dict[str, int] = defaultdict(int)
        slowdowns: dict[str, list[float]] = defaultdict(list)
        for ranking in self.rankings.values():
            wins[ranking.names[0]] += 1
            best = ranking.latencies_ms[0]
            for name, latency in zip(ranking.names, ranking.latencies_ms, strict=True):
                slowdowns[name].append(math.log(latency / best) if best > 0 else 0.0)
        order = sorted(slowdowns, key=lambda n: (-wins[n], statistics.fmean(slowdowns[n])))
        return Ranking(tuple(order), tuple(math.nan for _ in order))


def nearest_key(measured: Iterable[Key], key: Key) -> Key | None:
    """The measured key closest to `key` in log2 space over the axes; ties go to the larger."""
    best: tuple[float, tuple[float, ...]] | None = None
    chosen = None
    logs = [math.log2(max(v, 1)) for v in key]
    for candidate in measured:
        distance = math.fsum((math.log2(max(c, 1)) - v) ** 2
                             for c, v in zip(candidate, logs, strict=True))
        rank = (distance, tuple(-c for c in candidate))  # smaller distance, then larger key
        if best is None or rank < best:
            best, chosen = rank, candidate
    return chosen


def compile_table(db: TraceDB, definition: Definition, hardware_key: str,
                  config: DispatchConfig) -> DefinitionTable:
    """Rank the solutions measured on this hardware (or its architecture, when allowed)."""
    policy = config.for_definition(definition.name)
    sources: Sequence[str] = (hardware_key,)
    traces = db.traces_for(definition.name, hardware_key)
    if not traces and policy.other_hardware == "same_arch" and arch_of_key(hardware_key):
        sources = tuple(k for k in db.hardware_keys(definition.name)
                        if arch_of_key(k) == arch_of_key(hardware_key))
        traces = [t for k in sources for t in db.traces_for(definition.name, k)]
        if traces:
            log.warning("%s: no traces for %s; using those of %s (same architecture)",
                        definition.name, hardware_key, ", ".join(sources))
    # A re-measured workload (retune --force) supersedes its earlier traces.
    latest: dict[tuple[str, str], tuple[Key, float]] = {}
    for trace in traces:
        if _usable(trace, db, hardware_key, config):
            key = axes_to_key(definition, trace.workload.axes)
            latest[(trace.solution, trace.workload.uuid)] = (
                key, trace.evaluation.performance.latency_ms)
    latencies: dict[Key, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (solution, _), (key, latency) in latest.items():
        latencies[key][solution].append(latency)
    rankings = {}
    for key, by_solution in latencies.items():
        medians = sorted((statistics.median(v), name) for name, v in by_solution.items())
        rankings[key] = Ranking(tuple(n for _, n in medians), tuple(m for m, _ in medians))
    return DefinitionTable(rankings, tuple(sources) if traces else ())


def _usable(trace: Trace, db: TraceDB, hardware_key: str, config: DispatchConfig) -> bool:
    evaluation = trace.evaluation
    if evaluation is None or evaluation.status is not Status.PASSED or trace.solution is None:
        return False
    policy = config.for_definition(trace.definition)
    solution = db.solutions.get(trace.solution)
    if solution is None or not policy.admits(solution.name):
        return False
    if not target_matches(solution.spec.target_hardware, hardware_key):
        return False
    if not all(axis in trace.workload.axes for axis in db.definitions[trace.definition].var_axes):
        return False
    correctness = evaluation.correctness
    return correctness is None or policy.within_tolerance(
        correctness.max_absolute_error, correctness.max_relative_error)


# -- the on-disk cache of compiled tables -------------------------------------------------

def cache_file(cache: Path, fingerprint: str, hardware_key: str, config: DispatchConfig) -> Path:
    digest = hashlib.blake2b(repr(config).encode(), digest_size=6).hexdigest()
    return cache / "tables" / f"{fingerprint}-{hardware_key}-{digest}.json"


def save_tables(path: Path, tables: dict[str, DefinitionTable]) -> None:
    data = {name: {"source_hardware": list(t.source_hardware),
                   "rankings": [[list(k), list(r.names), list(r.latencies_ms)]
                                for k, r in t.rankings.items()]}
            for name, t in tables.items()}
    write_atomic(path, orjson.dumps(data))


def load_tables(path: Path) -> dict[str, DefinitionTable] | None:
    """The cached tables, or None when absent or unreadable (then they are rebuilt)."""
    try:
        data = orjson.loads(path.read_bytes())
        return {name: DefinitionTable(
            {tuple(k): Ranking(tuple(n), tuple(lat)) for k, n, lat in raw["rankings"]},
            tuple(raw["source_hardware"])) for name, raw in data.items()}
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
