"""The dispatch runtime: one database on one device, its tables, builds and dispatchers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fib_runtime.build import BuildCache, Built
from fib_runtime.dispatch.config import DispatchConfig
from fib_runtime.dispatch.dispatcher import Dispatcher
from fib_runtime.dispatch.table import (
    DefinitionTable,
    cache_file,
    compile_table,
    load_tables,
    save_tables,
)
from fib_runtime.errors import BuildError, FibError
from fib_runtime.hardware import Hardware, current_hardware
from fib_runtime.paths import cache_path, default_db_path
from fib_runtime.store import TraceDB
from fib_runtime.store.files import fingerprint
from fib_runtime.store.layout import DECISION_FOLDERS
from fib_runtime.trust import Trust, Untrusted, stamp

log = logging.getLogger("fib_runtime.dispatch")


class Runtime:
    """Serves fib.apply calls from one database on one device."""

    def __init__(self, db: TraceDB | str | Path | None = None,
                 config: DispatchConfig | None = None, *,
                 hardware: Hardware | None = None, watch: bool = True) -> None:
        self.config = config or DispatchConfig()
        self.hardware = hardware or current_hardware()
        self.root = db.root if isinstance(db, TraceDB) else Path(db or default_db_path())
        self._db = db if isinstance(db, TraceDB) else None
        self._builds = BuildCache()
        self.dispatchers: dict[str, Dispatcher | None] = {}
        self._lock = threading.RLock()
        self._listeners: list[Callable[[], None]] = []
        self._load()
        self._stop = threading.Event()
        if watch and self.config.check_interval_s > 0:
            threading.Thread(target=self._watch, name="fib-dispatch-watch", daemon=True).start()

    # -- loading and reloading ----------------------------------------------------------

    def _load(self) -> None:
        self.fingerprint = fingerprint(self.root, DECISION_FOLDERS)
        db = self._db if self._db is not None else TraceDB.open(self.root, create=True,
                                                                 workloads=False)
        self._db = None  # a later reload reads the folder again
        self.db = db
        self._trust_stamp = stamp()  # before reading the store: a later change reloads
        self.trust = Trust(self.root, db.definitions)
        self._trusted: dict[str, bool] = {}
        cached = cache_file(cache_path(), self.fingerprint, self.hardware.key, self.config)
        tables = load_tables(cached)
        if tables is None or set(tables) != set(db.definitions):
            tables = {name: compile_table(db, d, self.hardware.key, self.config)
                      for name, d in db.definitions.items()}
            try:
                save_tables(cached, tables)
            except OSError as exc:
                log.debug("cannot cache decision tables at %s: %s", cached, exc)
        self.tables = tables

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

    def on_reload(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def changed(self) -> bool:
        """The database or the trust store changed since the last load."""
        return (fingerprint(self.root, DECISION_FOLDERS) != self.fingerprint
                or stamp() != self._trust_stamp)

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
        return self.tables.get(name) or DefinitionTable({})

    def build(self, name: str) -> Built | BuildError:
        """A solution of the database built once; a failure marks it unavailable here. An
        untrusted solution is never imported: Untrusted (decided once per load, not per call)."""
        solution = self.db.solutions.get(name)
        if solution is None:
            return BuildError(f"solution '{name}' is not in {self.root}")
        if not self.is_trusted(name):
            return Untrusted(f"solution '{name}' of {self.root} is not trusted; "
                             f"`fib trust {self.root}` (or --author, --solution) runs it")
        return self._builds.get(solution)

    def is_trusted(self, name: str) -> bool:
        """May this solution's code run here (fib_runtime.trust)? Logged once when not."""
        trusted = self._trusted.get(name)
        if trusted is None:
            solution = self.db.solutions.get(name)
            if solution is None:
                return False
            trusted = self._trusted[name] = self.trust.solution(solution) is not None
            if not trusted:
                log.warning("solution %s (author %s) of %s is not trusted and does not run; "
                            "`fib trust %s` trusts it", name, solution.author, self.root,
                            self.root)
        return trusted

    def stats(self) -> dict[str, dict[str, Any]]:
        return {name: d.stats() for name, d in self.dispatchers.items() if d is not None}
