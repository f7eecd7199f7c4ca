"""Live workload capture: a hot-path recorder per definition, policies, a background writer.

    import fib_runtime.capture as capture
    with capture.enable_capture("/path/to/db", {"default": {"dump": "int"}}):
        serve()          # every fib.apply call is offered to its definition's recorder
    capture.capture_stats()

See docs/capture.md.
"""

from fib_runtime.capture.config import CaptureConfig, CapturePolicy
from fib_runtime.capture.session import (
    CaptureSession,
    capture_stats,
    disable_capture,
    enable_capture,
)
from fib_runtime.errors import CaptureConfigError

__all__ = [
    "CaptureConfig", "CaptureConfigError", "CapturePolicy", "CaptureSession", "capture_stats",
    "disable_capture", "enable_capture",
]
