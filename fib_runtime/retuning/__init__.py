"""Offline retune: plan what to measure, execute it on workers (this machine's devices or a
Ray cluster), record each result as a trace in the database, and summarise the winners."""

from fib_runtime.errors import RetuneError
from fib_runtime.measure.compare import DEFAULT_TOLERANCES
from fib_runtime.retuning.executor import resolve_devices
from fib_runtime.retuning.run import RetuneConfig, retune
from fib_runtime.retuning.summary import Bucket, Outcome, RetuneSummary, Unusable

__all__ = [
    "DEFAULT_TOLERANCES", "Bucket", "Outcome", "RetuneConfig", "RetuneError", "RetuneSummary",
    "Unusable", "resolve_devices", "retune",
]

