"""fib-runtime: capture, retune and dispatch kernels on the FlashInfer Trace format.

    import fib_runtime as fib

    @fib.apply("rmsnorm_h4096")
    def rmsnorm(hidden_states, weight): ...
"""

from typing import Any

from fib_runtime import autostart, trust
from fib_runtime.dispatch import (
    ApplySession,
    DefinitionConfig,
    DispatchConfig,
    Explanation,
    RankGroup,
    apply,
    disable_apply,
    dispatch_enabled,
    enable_apply,
    explain,
    reload,
    serves,
    stats,
    sync,
    warmup,
)
from fib_runtime.errors import BuildError, FibError, SchemaError, ShapeError, StoreError
from fib_runtime.hardware import Hardware, current_hardware, hardware_key
from fib_runtime.store import TraceDB, check_copies_with, listen_to_own_writes
from fib_runtime.version import __version__

autostart.install()
# The store records, trust decides: it remembers what our own fib writes, and refuses a merge
# that would launder code nobody trusted (store.hooks; the store never imports trust).
listen_to_own_writes(trust.remember)
check_copies_with(trust.refuse_laundering)

# Imported on first use, so that dispatch-only users never load capture or retune.
_LAZY = {
    "enable_capture": "fib_runtime.capture", "disable_capture": "fib_runtime.capture",
    "capture_stats": "fib_runtime.capture", "CaptureConfig": "fib_runtime.capture",
    "CapturePolicy": "fib_runtime.capture", "CaptureSession": "fib_runtime.capture",
    "retune": "fib_runtime.retuning", "RetuneConfig": "fib_runtime.retuning",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fib_runtime' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "ApplySession", "BuildError", "DefinitionConfig", "DispatchConfig", "Explanation", "RankGroup",
    "FibError", "Hardware", "SchemaError", "ShapeError", "StoreError", "TraceDB", "apply",
    "current_hardware", "disable_apply", "dispatch_enabled", "enable_apply", "explain",
    "hardware_key", "reload", "serves", "stats", "sync", "warmup", "__version__", *_LAZY,
]
