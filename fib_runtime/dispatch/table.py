"""The decision tables of a definition on this hardware, one per timing regime, and their
on-disk cache."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from fib_runtime import regimes
from fib_runtime.dispatch.config import DispatchConfig
from fib_runtime.files import write_atomic
from fib_runtime.hardware import arch_of_key
from fib_runtime.keys import Key
from fib_runtime.ranking import Ranking, rank, timings_in
from fib_runtime.schema import Definition
from fib_runtime.store import TraceDB

log = logging.getLogger("fib_runtime.dispatch")


@dataclass(frozen=True)
class DefinitionTable:
    """Per timing regime that ranks something here (fib_runtime.regimes; `device` always
    present, maybe empty), per measured key, the candidates fastest first (an empty ranking:
    none passed). Which candidate is the engine's own function is not the table's to say
    (see fib_runtime.original.vouched)."""

    rankings: dict[str, dict[Key, Ranking]]

    def for_timing(self, timing: str) -> dict[Key, Ranking]:
        """The rankings of a regime; device time where that regime has no traces."""
        return self.rankings.get(timing) or self.rankings.get(regimes.DEVICE.name, {})


def empty_table() -> DefinitionTable:
    return DefinitionTable({regimes.DEVICE.name: {}})


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
    def ranked(timing: str) -> dict[Key, Ranking]:
        results = rank(definition, traces, db.solutions, hardware_key, policy, timing)
        return {key: result.ranking for key, result in results.items()}

    device = regimes.DEVICE.name
    ranked_in = {t: ranked(t) for t in sorted(timings_in(traces) - {device}, key=regimes.order)}
    return DefinitionTable({device: ranked(device), **{t: r for t, r in ranked_in.items() if r}})


def cache_file(cache: Path, fingerprint: str, hardware_key: str, config: DispatchConfig) -> Path:
    digest = hashlib.blake2b(repr(config).encode(), digest_size=6).hexdigest()
    return cache / "tables" / f"{fingerprint}-{hardware_key}-{digest}.json"


def _dump(rankings: dict[Key, Ranking]) -> list[list[object]]:
    return [[list(k), list(r.names), list(r.latencies_ms), list(r.spreads),
             sorted(r.originals), r.note] for k, r in rankings.items()]


def _parse(raw: list[list[Any]]) -> dict[Key, Ranking]:
    return {tuple(k): Ranking(tuple(n), tuple(lat), tuple(sp), frozenset(orig), note)
            for k, n, lat, sp, orig, note in raw}


def save_tables(path: Path, tables: dict[str, DefinitionTable]) -> None:
    data = {name: {t: _dump(r) for t, r in table.rankings.items()}
            for name, table in tables.items()}
    write_atomic(path, orjson.dumps({"format": 4, "tables": data}))


def load_tables(path: Path) -> dict[str, DefinitionTable] | None:
    """The cached tables, or None when absent, unreadable or of an older format (then they
    are rebuilt)."""
    try:
        data = orjson.loads(path.read_bytes())
        if data.get("format") != 4:
            return None
        return {name: DefinitionTable({t: _parse(r) for t, r in raw.items()})
                for name, raw in data["tables"].items()}
    except (OSError, orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None
