"""The dispatch runtime: one database on one device, its tables, builds and dispatchers.

Each load reads the database and the trust store into one `Snapshot`, published by a single
assignment: a reader takes the snapshot once and sees one load, never a new database with
the old trust state. A build takes one solution record from the snapshot, judges that
record's content with the snapshot's trust, and builds that very record (its sources are
written from memory), so only the content whose digest was checked is ever imported.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fib_runtime.build import BuildCache, Built
from fib_runtime.dispatch.config import DispatchConfig
from fib_runtime.dispatch.dispatcher import Dispatcher
from fib_runtime.dispatch.ranks import RankGroup
from fib_runtime.dispatch.served import (
    CorruptTables,
    ServedTables,
    load_tables,
    save_tables,
    served_files,
)
from fib_runtime.dispatch.table import (
    DefinitionTable,
    compile_tables,
    empty_table,
    reads_other_hardware,
)
from fib_runtime.errors import BuildError, FibError
from fib_runtime.hardware import Hardware, current_hardware
from fib_runtime.original import vouched
from fib_runtime.paths import cache_path, default_db_path
from fib_runtime.schema import Solution
from fib_runtime.schema.provenance import content_digest
from fib_runtime.store import TraceDB, decisions_fingerprint
from fib_runtime.trust import Trust, Untrusted, stamp

log = logging.getLogger("fib_runtime.dispatch")


@dataclass(frozen=True)
class Snapshot:
    """One load: the database, the trust store read with it, the decision tables, and what
    changes when the folder or the store does."""

    db: TraceDB
    trust: Trust
    tables: Mapping[str, DefinitionTable]
    fingerprint: str
    trust_stamp: tuple[int, ...] | None
    warned: set[tuple[str, str]] = field(default_factory=set)  # untrusted (name, digest)


class Runtime:
    """Serves fib.apply calls from one database on one device."""

    def __init__(self, db: TraceDB | str | Path | None = None,
                 config: DispatchConfig | None = None, *,
                 hardware: Hardware | None = None, watch: bool = True,
                 ranks: RankGroup | None = None) -> None:
        self.config = config or DispatchConfig()
        self.ranks = ranks  # the ranks that serve one table (dispatch/ranks.py)
        self.hardware = hardware or current_hardware()
        self.root = db.root if isinstance(db, TraceDB) else Path(db or default_db_path())
        self._db = db if isinstance(db, TraceDB) else None
        self._builds = BuildCache()
        self.dispatchers: dict[str, Dispatcher | None] = {}
        self._lock = threading.RLock()
        self._listeners: list[Callable[[], None]] = []
        # per load, where its tables came from: "served" (a served-table file that matches
        # the records; no trace parsed), "compiled" (from this hardware's traces); and the
        # files passed over: "stale" (older records), "corrupt" (unreadable; rebuilt)
        self.table_loads: Counter[str] = Counter()
        self._load()
        self._stop = threading.Event()
        if watch and self.config.check_interval_s > 0 and ranks is None:  # ranks: sync()
            threading.Thread(target=self._watch, name="fib-dispatch-watch", daemon=True).start()

    # -- loading and reloading ----------------------------------------------------------

    def _load(self) -> None:
        """Read definitions and solutions, and the tables from a served-table file that
        matches the records; only without one, parse this hardware's traces and compile
        them (then kept in this host's cache). A reload does this in the watcher thread
        while the old snapshot serves."""
        folder = decisions_fingerprint(self.root)  # before reading: a later change
        trust_stamp = stamp()  # of either reloads
        db = self._db if self._db is not None else TraceDB.open(
            self.root, create=True, workloads=False, traces=False)
        self._db = None  # a later reload reads the folder again
        trust = Trust(self.root, db.definitions)
        files = served_files(self.root, cache_path(), self.hardware.key, self.config)
        tables: Mapping[str, DefinitionTable] | None = self._served(
            files, folder, set(db.definitions))
        if tables is None:
            db.load_traces(hardware=None if reads_other_hardware(self.config)
                           else self.hardware.key)
            tables = compile_tables(db, self.hardware.key, self.config)
            self.table_loads["compiled"] += 1
            try:
                if decisions_fingerprint(self.root) == folder:  # not a later state's
                    save_tables(files[1], ServedTables(folder, self.hardware.key, tables))
            except OSError as exc:
                log.debug("cannot cache decision tables at %s: %s", files[1], exc)
        if self.ranks is not None:
            tables = self.ranks.agree(tables)
        self.snapshot = Snapshot(db, trust, tables, folder, trust_stamp)  # one publication

    def _served(self, files: tuple[Path, ...], folder: str, definitions: set[str]
                ) -> Mapping[str, DefinitionTable] | None:
        """The tables of the first served-table file built from these very records."""
        for path in files:
            try:
                served = load_tables(path)
            except CorruptTables as exc:
                self.table_loads["corrupt"] += 1
                log.warning("decision tables %s unreadable, rebuilt from the traces", exc)
                continue
            if served is None:
                continue
            if served.fingerprint == folder and served.hardware_key == self.hardware.key \
                    and set(served.tables) == definitions:
                self.table_loads["served"] += 1
                return served.tables
            self.table_loads["stale"] += 1
        return None

    def measured(self) -> TraceDB:
        """The snapshot's database with this hardware's traces, read on first need when
        its tables came from a served-table file (for `fib.explain`, never for a call)."""
        db = self.snapshot.db
        with self._lock:
            if not db.traces_loaded:
                db.load_traces(hardware=None if reads_other_hardware(self.config)
                               else self.hardware.key)
        return db

    @property
    def db(self) -> TraceDB:
        return self.snapshot.db

    @property
    def tables(self) -> Mapping[str, DefinitionTable]:
        return self.snapshot.tables

    @property
    def fingerprint(self) -> str:
        return self.snapshot.fingerprint

    def reload(self) -> None:
        """Re-read the database; every dispatcher forgets its decisions, keeps its counters
        (solutions stay built)."""
        with self._lock:
            self._load()
            for name, dispatcher in list(self.dispatchers.items()):
                definition = self.db.definitions.get(name)
                if dispatcher is None or definition != dispatcher.definition:
                    del self.dispatchers[name]  # made afresh on next use
                else:
                    dispatcher.update(self._table(name), self.config.for_definition(name))
        for listener in list(self._listeners):
            listener()

    def sync(self) -> bool:
        """Reload now if the database changed, with a rank group if any rank's did: the
        agreed point of a reload, called by every rank together (between steps). Whether it
        reloaded; a failed exchange keeps the tables served."""
        changed = self.changed()
        if self.ranks is not None:
            try:
                changed = self.ranks.any_changed(changed)
            except Exception as exc:
                log.error("ranks could not agree on a reload (%s: %s); serving the tables "
                          "loaded before", type(exc).__name__, exc)
                return False
        if changed:
            self.reload()
        return changed

    def on_reload(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def changed(self) -> bool:
        """The database or the trust store changed since the last load."""
        snapshot = self.snapshot
        return (decisions_fingerprint(self.root) != snapshot.fingerprint
                or stamp() != snapshot.trust_stamp)

    def _watch(self) -> None:
        while not self._stop.wait(self.config.check_interval_s):
            try:
                if self.changed():
                    log.info("database %s changed; reloading decisions", self.root)
                    self.reload()
            except Exception as exc:  # a half-written DB must not kill the watcher
                log.warning("reload of %s failed: %s", self.root, exc)

    def close(self) -> None:
        self._stop.set()

    # -- dispatchers and builds -----------------------------------------------------------

    def dispatcher(self, name: str) -> Dispatcher | None:
        """The dispatcher of a definition, or None when the database does not define it."""
        dispatcher = self.dispatchers.get(name)
        if dispatcher is None and name not in self.dispatchers:
            with self._lock:
                if name in self.dispatchers:
                    return self.dispatchers[name]
                definition = self.db.definitions.get(name)
                if definition is not None:
                    try:
                        dispatcher = Dispatcher(definition, self._table(name),
                                                self.config.for_definition(name), self.build)
                    except FibError as exc:
                        log.warning("%s cannot be dispatched: %s", name, exc)
                self.dispatchers[name] = dispatcher
        return dispatcher

    def _table(self, name: str) -> DefinitionTable:
        return self.tables.get(name) or empty_table()

    def build(self, name: str) -> Built | BuildError:
        """A solution of the database built once; a failure marks it unavailable here. The
        engine's own function, where a live call site vouches for the record, is returned
        as it is (nothing imported). An untrusted solution is never imported: Untrusted."""
        snapshot = self.snapshot  # one load: the record judged is the record built
        solution = snapshot.db.solutions.get(name)
        if solution is None:
            return BuildError(f"solution '{name}' is not in {self.root}")
        engine = vouched(solution)
        if engine is not None:
            return Built(name, engine, dps=False, original=True)
        if not self._may_run(snapshot, solution):
            return Untrusted(f"solution '{name}' of {self.root} is not trusted; "
                             f"`fib trust {self.root}` (or --author, --solution) runs it")
        return self._builds.get(solution)

    def _may_run(self, snapshot: Snapshot, solution: Solution) -> bool:
        """The snapshot's verdict on this exact content (kept per digest by its Trust);
        logged once per content when it may not run."""
        if snapshot.trust.solution(solution) is not None:
            return True
        seen = (solution.name, content_digest(solution))
        if seen not in snapshot.warned:
            snapshot.warned.add(seen)
            log.warning("solution %s (author %s) of %s is not trusted and does not run; "
                        "`fib trust %s` trusts it", solution.name, solution.author,
                        self.root, self.root)
        return False

    def stats(self) -> dict[str, dict[str, Any]]:
        return {name: d.stats() for name, d in self.dispatchers.items() if d is not None}
