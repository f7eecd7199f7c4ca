"""The one question "is a CUDA graph being recorded now?", asked of torch in one place.

Dispatch, shadow checks, workload capture and the adapters all ask it; none imports torch
for it (a process that never imported torch, or never initialised CUDA, records nothing).
`fib_runtime.dispatch.graphs` is another thing: it follows recordings begun through torch's
CUDAGraph API, on every thread, to switch the maps call sites serve from.
"""

from __future__ import annotations

import sys


def being_recorded() -> bool:
    """Whether the current CUDA stream is recording a graph (False where CUDA is unused)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return False
    return bool(torch.cuda.is_current_stream_capturing())
