"""fib-runtime: capture, retune and dispatch kernels on the FlashInfer Trace format.

    import fib_runtime as fib

    @fib.apply("rmsnorm_h4096")
    def rmsnorm(hidden_states, weight): ...
"""

from typing import Any

from fib_runtime.dispatch import (
    ApplySession,
    DefinitionConfig,
    DispatchConfig,
    apply,
    disable_apply,
    enable_apply,
    explain,
    reload,
    stats,
    warmup,
)
from fib_runtime.errors import BuildError, FibError, SchemaError, ShapeError, StoreError
from fib_runtime.hardware import Hardware, current_hardware, hardware_key

_CAPTURE_NAMES = ("enable_capture", "disable_capture", "capture_stats", "CaptureConfig",
                  "CapturePolicy")


def __getattr__(name: str) -> Any:
    # Capture is imported on first use so that dispatch-only users never load it.
    if name in _CAPTURE_NAMES:
        from fib_runtime import capture

        return getattr(capture, name)
    raise AttributeError(f"module 'fib_runtime' has no attribute {name!r}")


__all__ = [
    "ApplySession", "BuildError", "DefinitionConfig", "DispatchConfig", "FibError", "Hardware",
    "SchemaError", "ShapeError", "StoreError", "apply", "current_hardware", "disable_apply",
    "enable_apply", "explain", "hardware_key", "reload", "stats", "warmup", *_CAPTURE_NAMES,
]
