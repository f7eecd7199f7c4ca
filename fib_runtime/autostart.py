"""FIB_ENABLE_APPLY / FIB_ENABLE_TRACING: switch dispatch and capture on from the
environment, once per process, before the first fib.apply call runs.

Installed by `fib_runtime/__init__` as first-call hooks of dispatch, so that dispatch never
imports capture (capture depends on dispatch, not the reverse). A hook that fails is logged
and serving goes on with the original functions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fib_runtime.config_fields import env_flag
from fib_runtime.dispatch import sites

log = logging.getLogger("fib_runtime")

# What could not be started from the environment, one line per switch (reported once).
problems: list[str] = []


def start_dispatch() -> None:
    if env_flag("FIB_ENABLE_APPLY") and sites.current_runtime() is None:
        from fib_runtime.dispatch.api import enable_apply

        _guarded("FIB_ENABLE_APPLY", "dispatch", enable_apply)


def start_capture() -> None:
    if env_flag("FIB_ENABLE_TRACING"):
        from fib_runtime.capture.session import active_session, enable_capture

        if active_session() is None:
            _guarded("FIB_ENABLE_TRACING", "capture", enable_capture)


def _guarded(variable: str, feature: str, start: Callable[[], object]) -> None:
    """Start a feature; if it cannot start (a bad config, an unreadable database), say so
    once and leave it off: the decorated functions keep answering."""
    try:
        start()
    except Exception as exc:
        problems.append(f"{variable}: {feature} stays off: {type(exc).__name__}: {exc}")
        log.error("%s", problems[-1])


def install() -> None:
    sites.on_first_call(start_dispatch)
    sites.on_first_call(start_capture)
