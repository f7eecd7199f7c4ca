"""A capture session (database, config, recorders, writer) and the process-wide switch."""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from fib_runtime.capture.config import CaptureConfig
from fib_runtime.capture.recorder import CaptureQueue, DefinitionRecorder
from fib_runtime.capture.signals import SignalFlush
from fib_runtime.capture.stats import total
from fib_runtime.capture.writer import Writer
from fib_runtime.dispatch.sites import Recorder, set_recorder_factory
from fib_runtime.dispatch.unknown import say_once
from fib_runtime.hardware import current_hardware
from fib_runtime.paths import default_db_path
from fib_runtime.schema import Definition
from fib_runtime.store import TraceDB, announce_own_writes

log = logging.getLogger("fib_runtime.capture")


class CaptureSession:
    """Records the workloads of the definitions called through `fib.apply` into one database.

    `recorder_for(name)` is the factory given to dispatch. Use `enable_capture()` to create
    and activate one; as a context manager, leaving it closes it (and re-activates the
    session that was active before).
    """

    def __init__(self, db: TraceDB, config: CaptureConfig) -> None:
        self.db = db
        self.config = config
        self.closed = False
        self._shared = CaptureQueue(config.queue_size, config.max_total_blob_bytes)
        self._hardware = current_hardware().key  # the GPU model of the call counts
        self._writer = Writer(db, self._shared, config.flush_interval_s, config.shard,
                              self._live_recorders, self._hardware)
        self._signals = SignalFlush(self.flush) if config.handle_signals else None
        self._recorders: dict[str, DefinitionRecorder | None] = {}
        self._lock = threading.Lock()
        self._catalogue: dict[str, Definition] | None = None
        self._originals: set[tuple[str, str]] = set()

    # -- the factory ---------------------------------------------------------------------

    def recorder_for(self, name: str) -> Recorder | None:
        """The hot-path recorder of a definition, or None when it is not captured."""
        with self._lock:
            if name not in self._recorders:
                self._recorders[name] = self._build(name)
            built = self._recorders[name]
        return None if built is None else built.record  # type: ignore[return-value]

    def _build(self, name: str) -> DefinitionRecorder | None:
        try:
            definition = self.db.definitions.get(name) or self._from_catalogue(name)
            if definition is None:
                say_once(name, self.db.root, list(self.db.definitions),
                         "nor does the built-in catalogue; its calls are not captured")
                return None
            return DefinitionRecorder(definition, self.config.policy_for(name), self._shared,
                                      self.config.seed)
        except Exception as exc:
            log.error("capture: %s is not captured: %s", name, exc)
            return None

    def note_original(self, name: str, fn: Callable[..., Any]) -> None:
        """Record a captured site's own function as a candidate solution, once (see
        fib_runtime.original); one that cannot be timed is recorded saying why. Called on a
        serving call: the writing (and the trust store's lock) happens on the writer thread."""
        from fib_runtime.original import original_name

        with self._lock:
            key = (name, original_name(name, fn))
            if key in self._originals:
                return
            self._originals.add(key)
        self._writer.later(functools.partial(self._record_original, name, fn))

    def _record_original(self, name: str, fn: Callable[..., Any]) -> None:
        from fib_runtime.original import is_original, original_solution

        try:
            definition = self.db.definitions.get(name)
            if definition is None:
                return
            solution = original_solution(definition, fn)
            existing = self.db.solutions.get(solution.name)
            if existing == solution:
                return
            if existing is not None and not is_original(existing):
                log.warning("capture: %s: a solution named %s exists; the original is not "
                            "recorded", name, solution.name)
                return
            self.db.add_solution(solution, replace=existing is not None)
        except Exception as exc:
            log.warning("capture: %s: the original function is not recorded: %s", name, exc)

    def _from_catalogue(self, name: str) -> Definition | None:
        """A built-in definition, written into the database so its workloads load (and
        remembered as trusted on the writer thread: never a lock wait on a serving call)."""
        if self._catalogue is None:
            from fib_runtime.catalogue import load_catalogue

            self._catalogue = load_catalogue().definitions
        definition = self._catalogue.get(name)
        if definition is not None:
            self.db.add_definition(definition, own=False)
            self._writer.later(functools.partial(announce_own_writes, definitions=[definition]))
        return definition

    def _live_recorders(self) -> list[DefinitionRecorder]:
        with self._lock:
            return [r for r in self._recorders.values() if r is not None]

    def check_config(self) -> None:
        """Build the recorders of the definitions the config names exactly (raises on error)."""
        for name in self.config.definitions:
            definition = self.db.definitions.get(name)
            if definition is not None:
                DefinitionRecorder(definition, self.config.policy_for(name), self._shared)

    # -- life cycle ----------------------------------------------------------------------

    def flush(self) -> int:
        """Write every queued record now; returns the number of workloads written."""
        return self._writer.flush()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            recorders = {n: r for n, r in self._recorders.items() if r is not None}
        per_definition = {name: r.snapshot() for name, r in sorted(recorders.items())}
        return {"active": active_session() is self, "db": str(self.db.root),
                "queue": {"pending": len(self._shared.queue),
                          "capacity": self._shared.capacity},
                "total": total(per_definition), "definitions": per_definition}

    def _start(self) -> None:
        self._writer.start()
        atexit.register(self.close)
        if self._signals is not None:
            self._signals.install()

    def _restart_after_fork(self) -> None:
        """In a forked child: fresh locks, an empty queue (the parent writes what it had
        queued) and a writer thread of its own (threads do not survive fork)."""
        self._lock = threading.Lock()
        self._shared.after_fork()
        self._writer = Writer(self.db, self._shared, self.config.flush_interval_s,
                              self.config.shard, self._live_recorders, self._hardware)
        self._writer.start()

    def close(self) -> None:
        """Flush, stop the writer, restore signal handlers and deactivate. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._shared.open = False
        _deactivate(self)
        if self._signals is not None:
            self._signals.restore()
        atexit.unregister(self.close)
        self._writer.close()

    def __enter__(self) -> CaptureSession:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# -- the process-wide switch ---------------------------------------------------------------

_stack: list[CaptureSession] = []
_last: CaptureSession | None = None
_switch = threading.RLock()


def enable_capture(db: TraceDB | str | Path | None = None,
                   config: CaptureConfig | Mapping[str, Any] | str | Path | None = None
                   ) -> CaptureSession:
    """Start capturing into `db` (a TraceDB or folder; default $FIB_DATASET_PATH or
    ~/.cache/fib_runtime/db) with `config` (a CaptureConfig, dict or JSON file; default
    $FIB_CAPTURE_CONFIG or the defaults). The new session becomes the active one."""
    global _last
    database = db if isinstance(db, TraceDB) else TraceDB.open(db or default_db_path(),
                                                               create=True, traces=False)
    session = CaptureSession(database, _as_config(config))
    session.check_config()
    with _switch:
        _stack.append(session)
        _last = session
        session._start()
    _sync_factory()
    return session


def disable_capture() -> None:
    """Close every open session (each flushes what it holds); capture is off afterwards."""
    while True:
        with _switch:
            if not _stack:
                return
            session = _stack[-1]
        session.close()


def capture_stats() -> dict[str, Any]:
    """Seen / recorded / dropped (by reason) / bytes, per definition and in total, of the
    active session (or of the last one when capture is off)."""
    session = active_session() or _last
    if session is None:
        return {"active": False, "db": None, "queue": {"pending": 0, "capacity": 0},
                "total": total({}), "definitions": {}}
    return session.stats()


def active_session() -> CaptureSession | None:
    """The session that capture records into now (None: capture is off)."""
    return _stack[-1] if _stack else None


def _deactivate(session: CaptureSession) -> None:
    with _switch:
        if session not in _stack:
            return
        _stack.remove(session)
    _sync_factory()


def _sync_factory() -> None:
    """Give dispatch the active session's factory (None when capture is off)."""
    with _switch:
        top = active_session()
        set_recorder_factory(top.recorder_for if top is not None else None,
                             top.note_original if top is not None else None)


def _after_fork_in_child() -> None:
    global _switch
    _switch = threading.RLock()
    for session in _stack:
        session._restart_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _as_config(config: CaptureConfig | Mapping[str, Any] | str | Path | None) -> CaptureConfig:
    if config is None:
        return CaptureConfig.from_env()
    if isinstance(config, CaptureConfig):
        return config
    if isinstance(config, Mapping):
        return CaptureConfig.from_dict(dict(config))
    return CaptureConfig.load(config)
