"""Served-table files: the compiled tables of one hardware key, kept beside the records
(`DB/.fib/tables/`, written by offline tools) or in this host's cache (written by a serving
process that built its own), so that a serving process parses no trace while the records
have not changed.

A file is one header line (format, the `decisions_fingerprint` of the records it was built
from, the hardware key, the definitions in order, a digest of the rest) and one line per
definition. Loading checks the header and the digest (a truncated or damaged file is
CorruptTables: the caller rebuilds from the traces) and parses a definition's line only when
dispatch first asks for it: a process that serves ten definitions of five hundred builds ten
tables.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from fib_runtime.dispatch.config import DispatchConfig
from fib_runtime.dispatch.table import (
    DefinitionTable,
    compile_tables,
    empty_table,
    reads_other_hardware,
)
from fib_runtime.files import write_atomic
from fib_runtime.keys import Key
from fib_runtime.ranking import Ranking
from fib_runtime.store import TraceDB, decisions_fingerprint, served_table_file
from fib_runtime.version import __version__

log = logging.getLogger("fib_runtime.dispatch")
_FORMAT = 7
_INHERITED = "inherited"  # a definition line's key for DefinitionTable.inherited


@dataclass(frozen=True)
class ServedTables:
    """The compiled tables of one hardware key, and the database state they were built from
    (`decisions_fingerprint`: names, sizes and mtimes of the record files)."""

    fingerprint: str
    hardware_key: str
    tables: Mapping[str, DefinitionTable]


class CorruptTables(ValueError):
    """A served-table file that cannot be read back (it is rebuilt from the records)."""


class LazyTables(Mapping[str, DefinitionTable]):
    """Definition name -> table, each parsed from its line on first access. A line that does
    not parse (a writer's bug: the file's digest matched) gives an empty table, logged:
    those calls run the original function."""

    def __init__(self, lines: dict[str, bytes]) -> None:
        self._lines = lines
        self._parsed: dict[str, DefinitionTable] = {}

    def __getitem__(self, name: str) -> DefinitionTable:
        table = self._parsed.get(name)
        if table is None:
            line = self._lines[name]
            try:
                table = _parse_table(orjson.loads(line))
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
                log.warning("served table of %s unreadable (%s); it serves nothing", name, exc)
                table = empty_table()
            self._parsed[name] = table
        return table

    def lines(self) -> dict[str, bytes]:
        """Each definition's line, unparsed."""
        return dict(self._lines)

    def __iter__(self) -> Iterator[str]:
        return iter(self._lines)

    def __len__(self) -> int:
        return len(self._lines)


def config_tag(config: DispatchConfig) -> str:
    """What else the tables depend on: the dispatch config, and the ranking code's version
    (a newer fib-runtime ranks afresh rather than serve an older rule's tables)."""
    what = f"{config!r}\0{__version__}\0{_FORMAT}"
    return hashlib.blake2b(what.encode(), digest_size=6).hexdigest()


def served_files(root: Path, cache: Path, hardware_key: str, config: DispatchConfig
                 ) -> tuple[Path, Path]:
    """Where served tables are read, in order: beside the records (written by `fib
    retune`) and in this host's cache (written by a serving process that built its own)."""
    shared = served_table_file(root, hardware_key, config_tag(config))
    where = hashlib.blake2b(str(root.resolve()).encode(), digest_size=6).hexdigest()
    return shared, cache / "tables" / f"{where}-{shared.name}"


def _dump(rankings: Mapping[Key, Ranking]) -> list[list[object]]:
    return [[list(k), list(r.names), list(r.latencies_ms), list(r.spreads),
             sorted(r.originals), r.note] for k, r in rankings.items()]


def _parse(raw: list[list[Any]]) -> dict[Key, Ranking]:
    return {tuple(k): Ranking(tuple(n), tuple(lat), tuple(sp), frozenset(orig), note)
            for k, n, lat, sp, orig, note in raw}


def _dump_table(table: DefinitionTable) -> bytes:
    inherited = {t: [[list(k), sibling] for k, sibling in keys.items()]
                 for t, keys in table.inherited.items()}
    return orjson.dumps({**{t: _dump(r) for t, r in table.rankings.items()},
                         _INHERITED: inherited})


def table_lines(tables: Mapping[str, DefinitionTable]) -> dict[str, bytes]:
    """Each definition's table as its served-table line (LazyTables reads them back)."""
    if isinstance(tables, LazyTables):  # read from a file: its lines as they are
        return tables.lines()
    return {name: _dump_table(tables[name]) for name in tables}


def _parse_table(raw: dict[str, Any]) -> DefinitionTable:
    inherited = raw.pop(_INHERITED, {})
    return DefinitionTable({t: _parse(r) for t, r in raw.items()},
                           {t: {tuple(k): str(sibling) for k, sibling in keys}
                            for t, keys in inherited.items()})


def _digest(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=16).hexdigest()


def save_tables(path: Path, served: ServedTables) -> None:
    names = list(served.tables)
    lines = table_lines(served.tables)
    body = b"".join(lines[n] + b"\n" for n in names)
    header = orjson.dumps({"format": _FORMAT, "fingerprint": served.fingerprint,
                           "hardware": served.hardware_key, "definitions": names,
                           "digest": _digest(body)})
    write_atomic(path, header + b"\n" + body)


def load_tables(path: Path) -> ServedTables | None:
    """The served tables of a file; None when there is none; CorruptTables when it cannot
    be read back (unreadable, truncated, damaged, another format)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CorruptTables(f"{path}: {exc}") from None
    first, _, body = raw.partition(b"\n")
    try:
        head = orjson.loads(first)
        if head.get("format") != _FORMAT:
            raise CorruptTables(f"{path}: format {head.get('format')!r}, not {_FORMAT}")
        if head["digest"] != _digest(body):
            raise CorruptTables(f"{path}: its tables do not match its digest (cut short?)")
        names, lines = head["definitions"], body.split(b"\n")[:-1]
        if len(lines) != len(names) or not all(type(n) is str for n in names):
            raise CorruptTables(f"{path}: {len(lines)} tables for {len(names)} definitions")
        return ServedTables(str(head["fingerprint"]), str(head["hardware"]),
                            LazyTables(dict(zip(names, lines, strict=True))))
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError) as exc:
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
