"""Flush on SIGTERM / SIGINT, chaining to the handlers installed before ours."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger("fib_runtime.capture")
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SignalFlush:
    """Installs a handler that flushes, then does what the previous handler would have done.

    A callable previous handler is called; SIG_IGN is honoured; SIG_DFL (or a handler not
    installed from Python) is restored and the signal raised again, so the process ends as
    it would have without capture. Handlers can only be installed from the main thread.
    """

    def __init__(self, flush: Callable[[], Any]) -> None:
        self._flush = flush
        self._previous: dict[int, Any] = {}

    def install(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            log.info("capture enabled outside the main thread: no SIGTERM/SIGINT flush "
                     "(flushes still happen in the background and at exit)")
            return False
        for sig in SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        return True

    def restore(self) -> None:
        """Put the previous handlers back where ours are still the installed ones."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) == self._handle:
                signal.signal(sig, signal.SIG_DFL if previous is None else previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        try:
            self._flush()
        except Exception:
            log.exception("capture flush on signal %d failed", signum)
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
