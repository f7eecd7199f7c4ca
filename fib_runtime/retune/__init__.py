"""Offline retune: plan what to measure, execute it on workers (this machine's devices or a
Ray cluster), record each result as a trace in the database, and summarise the winners."""

import sys
import types
from typing import Any

from fib_runtime.errors import RetuneError
from fib_runtime.measure.compare import DEFAULT_TOLERANCES
from fib_runtime.retune.executor import resolve_devices
from fib_runtime.retune.run import RetuneConfig, retune
from fib_runtime.retune.summary import Bucket, Outcome, RetuneSummary, Unusable

__all__ = [
    "DEFAULT_TOLERANCES", "Bucket", "Outcome", "RetuneConfig", "RetuneError", "RetuneSummary",
    "Unusable", "resolve_devices", "retune",
]


class _CallablePackage(types.ModuleType):
    """`fib_runtime.retune` is both this package and, as before, the function: importing the
    package makes it the attribute `fib_runtime.retune`, so `fib.retune(db, ...)` (and
    `from fib_runtime import retune`) must still call `retune`."""

    def __call__(self, *args: Any, **kwargs: Any) -> RetuneSummary:
        return retune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
