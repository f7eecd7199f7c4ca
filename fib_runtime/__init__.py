"""fib-runtime: capture, retune and dispatch kernels on the FlashInfer Trace format.

    import fib_runtime as fib
"""

from fib_runtime.errors import BuildError, FibError, SchemaError, ShapeError, StoreError
from fib_runtime.hardware import Hardware, current_hardware, hardware_key

__all__ = [
    "BuildError", "FibError", "Hardware", "SchemaError", "ShapeError", "StoreError",
    "current_hardware", "hardware_key",
]
