"""The dispatch runtime: one database, one device, compiled tables, builds, and counters."""

from __future__ import annotations

import itertools
import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fib_runtime.build import Built, build_solution, destination_passing, value_returning
from fib_runtime.dispatch.config import DefinitionConfig, DispatchConfig
from fib_runtime.dispatch.keys import Key, key_expression
from fib_runtime.dispatch.table import (
    DefinitionTable,
    Ranking,
    cache_file,
    compile_table,
    load_tables,
    nearest_key,
    save_tables,
)
from fib_runtime.errors import BuildError, FibError
from fib_runtime.hardware import Hardware, current_hardware
from fib_runtime.paths import cache_path, default_db_path
from fib_runtime.schema import Definition
from fib_runtime.store import TraceDB
from fib_runtime.store.files import fingerprint
from fib_runtime.store.layout import DECISION_FOLDERS

log = logging.getLogger("fib_runtime.dispatch")


@dataclass
class OpStats:
    """Counters of one definition (fib.stats()); hits are counted by the sites."""

    nearest: int = 0  # keys resolved to a nearby measured key
    fallbacks: Counter[str] = field(default_factory=Counter)  # calls, by reason
    errors: Counter[str] = field(default_factory=Counter)  # by solution
    quarantined: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        return {"nearest": self.nearest, "fallbacks": dict(self.fallbacks),
                "errors": dict(self.errors), "quarantined": sorted(self.quarantined)}


@dataclass
class Decision:
    """How one key of one definition is served."""

    solution: str | None  # None: the fallback
    reason: str
    via_key: Key | None = None  # the measured key the ranking came from


class Op:
    """Per-definition state inside a runtime."""

    def __init__(self, definition: Definition, table: DefinitionTable,
                 policy: DefinitionConfig) -> None:
        self.definition = definition
        self.table = table
        self.policy = policy
        self.key_source = key_expression(definition, "args")  # ShapeError if not readable
        self.n_inputs = len(definition.inputs)
        self.n_outputs = len(definition.outputs)
        self.names = (*definition.inputs, *definition.outputs)
        self.lock = threading.Lock()
        self.stats = OpStats()
        self.via: dict[Key, Key | None] = {}  # resolved key -> measured key used
        self.hit_counters: list[itertools.count[int]] = []  # one per site, bumped per call
        self.clear_hooks: list[Callable[[], None]] = []  # forget the sites' cached choices

    def stats_dict(self) -> dict[str, Any]:
        calls = sum(int(repr(c)[6:-1]) for c in self.hit_counters)
        stats = self.stats.as_dict()
        stats["hits"] = calls - sum(self.stats.fallbacks.values())
        return stats

    def ranking(self, key: Key) -> tuple[Ranking | None, Key | None, str]:
        """The ranking that serves `key`, the measured key it came from, and why."""
        if key in self.table.rankings:
            return self.table.rankings[key], key, "measured"
        if not self.table.rankings:
            return None, None, "no_traces"
        if self.policy.miss == "nearest":
            if key not in self.via:
                self.via[key] = nearest_key(self.table.rankings, key)
                self.stats.nearest += 1
            via = self.via[key]
            return self.table.rankings[via], via, "nearest"
        if self.policy.miss == "best_overall":
            return self.table.best_overall(), None, "best_overall"
        return None, None, "miss"


class Runtime:
    """Serves fib.apply calls from one database on one device."""

    def __init__(self, db: TraceDB | str | Path | None = None,
                 config: DispatchConfig | None = None, *,
                 hardware: Hardware | None = None, watch: bool = True) -> None:
        self.config = config or DispatchConfig()
        self.hardware = hardware or current_hardware()
        self.root = db.root if isinstance(db, TraceDB) else Path(db or default_db_path())
        self._db = db if isinstance(db, TraceDB) else None
        self.builds: dict[str, Built | BuildError] = {}
        self.ops: dict[str, Op | None] = {}
        self._lock = threading.RLock()
        self._listeners: list[Callable[[], None]] = []
        self._load()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        if watch and self.config.check_interval_s > 0:
            self._watcher = threading.Thread(target=self._watch, name="fib-dispatch-watch",
                                             daemon=True)
            self._watcher.start()

    # -- loading and reloading ----------------------------------------------------------

    def _load(self) -> None:
        self.fingerprint = fingerprint(self.root, DECISION_FOLDERS)
        db = self._db if self._db is not None else TraceDB.open(self.root, create=True,
                                                                 workloads=False)
        self._db = None  # a later reload reads the folder again
        self.db = db
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
        """Re-read the database and rebuild every decision (solutions stay built)."""
        with self._lock:
            self._load()
            old = self.ops
            self.ops = {}
            for name, op in old.items():
                if op is not None and name in self.db.definitions:
                    fresh = self.op(name)
                    if fresh is not None:  # counters survive a reload
                        fresh.stats = op.stats
        for listener in list(self._listeners):
            listener()

    def on_reload(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def changed(self) -> bool:
        return fingerprint(self.root, DECISION_FOLDERS) != self.fingerprint

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

    # -- decisions ----------------------------------------------------------------------

    def op(self, name: str) -> Op | None:
        """The state of a definition, or None when the database does not define it."""
        op = self.ops.get(name)
        if op is None and name not in self.ops:
            with self._lock:
                definition = self.db.definitions.get(name)
                if definition is None:
                    op = None
                else:
                    table = self.tables.get(name) or DefinitionTable({}, ())
                    try:
                        op = Op(definition, table, self.config.for_definition(name))
                    except FibError as exc:
                        log.warning("%s cannot be dispatched: %s", name, exc)
                        op = None
                self.ops[name] = op
        return op

    def decide(self, op: Op, key: Key, dps: bool, exclude: str | None = None
               ) -> tuple[Decision, Callable[..., Any] | None]:
        """The first usable solution for a key, adapted to the caller's convention."""
        ranking, via, reason = op.ranking(key)
        if ranking is None:
            return Decision(None, reason, via), None
        for name in ranking.names:
            if name in op.stats.quarantined or name == exclude:
                continue
            built = self.build(name)
            if isinstance(built, Built):
                adapt = destination_passing if dps else value_returning
                return Decision(name, reason, via), adapt(built, op.definition)
        return Decision(None, "unavailable", via), None

    def build(self, name: str) -> Built | BuildError:
        """Build a solution once; a failure marks it unavailable on this machine."""
        built = self.builds.get(name)
        if built is None:
            with self._lock:
                built = self.builds.get(name)
                if built is None:
                    solution = self.db.solutions.get(name)
                    if solution is None:
                        built = BuildError(f"solution '{name}' is not in {self.root}")
                    else:
                        try:
                            built = build_solution(solution)
                        except BuildError as exc:
                            built = exc
                    if isinstance(built, BuildError):
                        log.warning("solution %s is unavailable here: %s", name,
                                    str(built).splitlines()[0])
                    self.builds[name] = built
        return built

    def stats(self) -> dict[str, dict[str, Any]]:
        return {name: op.stats_dict() for name, op in self.ops.items() if op is not None}
