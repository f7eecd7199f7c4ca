"""The decision table of a definition on this hardware, and its on-disk cache."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import orjson

from fib_runtime.dispatch.config import DispatchConfig
from fib_runtime.hardware import arch_of_key
from fib_runtime.keys import Key
from fib_runtime.ranking import Ranking, rank
from fib_runtime.schema import Definition
from fib_runtime.store import TraceDB
from fib_runtime.store.files import write_atomic

log = logging.getLogger("fib_runtime.dispatch")


@dataclass(frozen=True)
class DefinitionTable:
    """Per measured key, the candidates fastest first (an empty ranking: none passed)."""

    rankings: dict[Key, Ranking]


def compile_table(db: TraceDB, definition: Definition, hardware_key: str,
                  config: DispatchConfig) -> DefinitionTable:
    """Rank the solutions measured on this hardware (or its architecture, when allowed)."""
    policy = config.for_definition(definition.name)
    traces = db.traces_for(definition.name, hardware_key)
    if not traces and policy.other_hardware == "same_arch" and arch_of_key(hardware_key):
        sources = [k for k in db.hardware_keys(definition.name)
                   if arch_of_key(k) == arch_of_key(hardware_key)]
        traces = [t for k in sources for t in db.traces_for(definition.name, k)]
        if traces:
            log.warning("%s: no traces for %s; using those of %s (same architecture)",
                        definition.name, hardware_key, ", ".join(sources))
    # Traces of the same architecture rank as if measured here: their solutions must
    # target this hardware all the same.
    results = rank(definition, traces, db.solutions, hardware_key, policy)
    return DefinitionTable({key: result.ranking for key, result in results.items()})


def cache_file(cache: Path, fingerprint: str, hardware_key: str, config: DispatchConfig) -> Path:
    digest = hashlib.blake2b(repr(config).encode(), digest_size=6).hexdigest()
    return cache / "tables" / f"{fingerprint}-{hardware_key}-{digest}.json"


def save_tables(path: Path, tables: dict[str, DefinitionTable]) -> None:
    data = {name: [[list(k), list(r.names), list(r.latencies_ms)]
                   for k, r in table.rankings.items()]
            for name, table in tables.items()}
    write_atomic(path, orjson.dumps(data))


def load_tables(path: Path) -> dict[str, DefinitionTable] | None:
    """The cached tables, or None when absent or unreadable (then they are rebuilt)."""
    try:
        data = orjson.loads(path.read_bytes())
        return {name: DefinitionTable({tuple(k): Ranking(tuple(n), tuple(lat))
                                       for k, n, lat in raw})
                for name, raw in data.items()}
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
