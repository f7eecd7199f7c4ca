"""Offline retune: materialise workloads, check solutions against the reference, time them
in isolated workers, and append the results to the database as traces."""

from fib_runtime.bench.compare import DEFAULT_TOLERANCES
from fib_runtime.bench.engine import RetuneConfig, resolve_devices, retune
from fib_runtime.bench.report import Bucket, Outcome, RetuneReport, Unusable
from fib_runtime.errors import RetuneError

__all__ = [
    "DEFAULT_TOLERANCES", "Bucket", "Outcome", "RetuneConfig", "RetuneError", "RetuneReport",
    "Unusable", "resolve_devices", "retune",
]
