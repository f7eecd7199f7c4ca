"""The decision tables of a definition on this hardware, one per timing regime, and the
served-table files that keep them (so that a serving process parses no trace while the
records have not changed)."""

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
from fib_runtime.store import TraceDB, decisions_fingerprint, served_table_file

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


def compile_tables(db: TraceDB, hardware_key: str, config: DispatchConfig
                   ) -> dict[str, DefinitionTable]:
    """The table of every definition of `db` on this hardware."""
    return {name: compile_table(db, d, hardware_key, config)
            for name, d in db.definitions.items()}


def reads_other_hardware(config: DispatchConfig) -> bool:
    """Whether some definition may rank traces of other GPU models (`same_arch`), so that
    a table build must read every hardware key's traces, not only this one's."""
    return any(policy.other_hardware != "never"
               for policy in (config.default, *config.definitions.values()))


@dataclass(frozen=True)
class ServedTables:
    """The compiled tables of one hardware key, and the database state they were built from
    (`decisions_fingerprint`: names, sizes and mtimes of the record files)."""

    fingerprint: str
    hardware_key: str
    tables: dict[str, DefinitionTable]


class CorruptTables(ValueError):
    """A served-table file that cannot be read back (it is rebuilt from the records)."""


def config_tag(config: DispatchConfig) -> str:
    return hashlib.blake2b(repr(config).encode(), digest_size=6).hexdigest()


def served_files(root: Path, cache: Path, hardware_key: str, config: DispatchConfig
                 ) -> tuple[Path, Path]:
    """Where served tables are read, in order: beside the records (written by offline
    tools: `fib retune`, `fib tables`) and in this host's cache (written by a serving
    process that had to build its own)."""
    shared = served_table_file(root, hardware_key, config_tag(config))
    where = hashlib.blake2b(str(root.resolve()).encode(), digest_size=6).hexdigest()
    return shared, cache / "tables" / f"{where}-{shared.name}"


def _dump(rankings: dict[Key, Ranking]) -> list[list[object]]:
    return [[list(k), list(r.names), list(r.latencies_ms), list(r.spreads),
             sorted(r.originals), r.note] for k, r in rankings.items()]


def _parse(raw: list[list[Any]]) -> dict[Key, Ranking]:
    return {tuple(k): Ranking(tuple(n), tuple(lat), tuple(sp), frozenset(orig), note)
            for k, n, lat, sp, orig, note in raw}


_FORMAT = 5


def save_tables(path: Path, served: ServedTables) -> None:
    data = {name: {t: _dump(r) for t, r in table.rankings.items()}
            for name, table in served.tables.items()}
    write_atomic(path, orjson.dumps({"format": _FORMAT, "fingerprint": served.fingerprint,
                                     "hardware": served.hardware_key, "tables": data}))


def load_tables(path: Path) -> ServedTables | None:
    """The served tables of a file; None when there is none; CorruptTables when it cannot
    be read back (unreadable, truncated, another format)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CorruptTables(f"{path}: {exc}") from None
    try:
        data = orjson.loads(raw)
        if data.get("format") != _FORMAT:
            raise CorruptTables(f"{path}: format {data.get('format')!r}, not {_FORMAT}")
        tables = {name: DefinitionTable({t: _parse(r) for t, r in table.items()})
                  for name, table in data["tables"].items()}
        return ServedTables(str(data["fingerprint"]), str(data["hardware"]), tables)
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CorruptTables):
            raise
        raise CorruptTables(f"{path}: {type(exc).__name__}: {exc}") from None


def write_served(root: Path, hardware_keys: list[str] | None = None,
                 config: DispatchConfig | None = None) -> list[Path]:
    """Build the served tables of `hardware_keys` (default: every key the traces name) from
    the records and write them beside them, for serving processes to read without parsing
    any trace. Nothing is written when the records change meanwhile (the next serving
    process builds its own). Offline only: this reads the traces of those keys."""
    config = config or DispatchConfig()
    folder = decisions_fingerprint(root)
    one = hardware_keys is not None and len(hardware_keys) == 1 and \
        not reads_other_hardware(config)
    db = TraceDB.open(root, workloads=False, hardware=hardware_keys[0] if one else None)
    keys = hardware_keys if hardware_keys is not None else sorted(
        {k for name in db.definitions for k in db.hardware_keys(name)})
    built = [(key, ServedTables(folder, key, compile_tables(db, key, config))) for key in keys]
    if decisions_fingerprint(root) != folder:
        log.info("%s changed while its tables were built; not written", root)
        return []
    written = []
    for key, served in built:
        path = served_table_file(root, key, config_tag(config))
        save_tables(path, served)
        written.append(path)
    return written
