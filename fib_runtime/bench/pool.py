"""Parent side of a benchmark worker: start it, ask it, and kill and restart it when it
crashes or hangs."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fib_runtime.bench import worker
from fib_runtime.errors import WorkerLost

log = logging.getLogger("fib_runtime.bench")
_POLL_S = 0.05
_FAULT_LOG_TAIL = 4000


@dataclass(frozen=True)
class DeviceInfo:
    """What a worker reports about its device."""

    name: str
    key: str
    libs: dict[str, str]


class WorkerHandle:
    """One worker process on one device ("cpu" or "cuda:N"), restarted on demand."""

    def __init__(self, device: str, db_root: Path, *, startup_timeout: float = 300.0) -> None:
        self.device = device
        self.db_root = db_root
        self.startup_timeout = startup_timeout
        self.info: DeviceInfo | None = None
        self._process: Any = None
        self._conn: Any = None
        self._fault_log: Path | None = None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def start(self) -> DeviceInfo:
        """Start the process (if not running) and wait until it reports its device."""
        if self.alive:
            assert self.info is not None
            return self.info
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        if self._fault_log is not None:  # the previous process's, already reported
            self._fault_log.unlink(missing_ok=True)
        fd, fault_log = tempfile.mkstemp(prefix="fib-worker-", suffix=".log")
        os.close(fd)
        self._fault_log = Path(fault_log)
        self._process = ctx.Process(
            target=worker.main, args=(child, self.device, str(self.db_root), fault_log),
            name=f"fib-retune-{self.device}", daemon=True)
        self._process.start()
        child.close()
        self._conn = parent
        info = self._receive(self.startup_timeout, "starting")
        self.info = DeviceInfo(info["name"], info["key"], dict(info["libs"]))
        return self.info

    def request(self, kind: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one request and wait for its answer; WorkerLost if the worker dies or hangs."""
        self.start()
        try:
            self._conn.send((kind, payload))
        except (BrokenPipeError, OSError):
            raise self._lost("RUNTIME_ERROR", "the worker was gone before the request") from None
        return self._receive(timeout, kind)

    def _receive(self, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self._conn.poll(_POLL_S):
            if not self._process.is_alive():
                raise self._lost("RUNTIME_ERROR", f"the worker process died while {what}: "
                                 f"{_describe_exit(self._process.exitcode)}")
            if time.monotonic() > deadline:
                raise self._lost("TIMEOUT", f"no answer within {timeout:g} s while {what}; "
                                 "the worker was killed")
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            self._process.join(5)
            raise self._lost("RUNTIME_ERROR", f"the worker process died while {what}: "
                             f"{_describe_exit(self._process.exitcode)}") from None

    def _lost(self, status: str, message: str) -> WorkerLost:
        self.kill()
        tail = self._read_fault_log()
        log.warning("worker on %s lost (%s); it will be restarted", self.device, status)
        return WorkerLost(status, message + (f"\n{tail}" if tail else ""))

    def _read_fault_log(self) -> str:
        if self._fault_log is None or not self._fault_log.exists():
            return ""
        text = self._fault_log.read_text(errors="replace").strip()
        return text[-_FAULT_LOG_TAIL:]

    def kill(self) -> None:
        """End the process now (the next request starts a fresh one)."""
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(10)
            self._process = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def stop(self) -> None:
        """Ask the worker to exit, then make sure it has; remove its fault log."""
        if self.alive:
            try:
                self._conn.send(("stop", {}))
                self._process.join(5)
            except (BrokenPipeError, OSError):
                pass
        self.kill()
        if self._fault_log is not None:
            self._fault_log.unlink(missing_ok=True)
            self._fault_log = None


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name} (exit code {code})"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
