"""Latency of one call: warm-up, then the median of N timed runs.

On a GPU each run is timed with CUDA events on the current stream, after the inputs are
re-filled with fresh data and the L2 cache is flushed (a write to a buffer of twice the L2
size, at least 256 MB), both outside the timed region. On the CPU each run is timed with
`time.perf_counter_ns`, after the same re-fill.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

_MIN_FLUSH_BYTES = 256 << 20
_flush_buffers: dict[int, Any] = {}


def flush_buffer(device: Any) -> Any:
    """A buffer larger than the device's L2 cache (one per device, kept)."""
    import torch

    index = torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    buffer = _flush_buffers.get(index)
    if buffer is None:
        l2 = getattr(torch.cuda.get_device_properties(index), "L2_cache_size", 0)
        size = max(2 * l2, _MIN_FLUSH_BYTES)
        buffer = torch.empty(size // 4, dtype=torch.int32, device=f"cuda:{index}")
        _flush_buffers[index] = buffer
    return buffer


def median_latency_ms(fn: Callable[..., Any], args: list[Any], *, device: Any,
                      refill: Callable[[int], None] | None = None, warmup: int = 10,
                      iters: int = 50) -> float:
    """Median latency of `fn(*args)` in milliseconds; `refill(i)` runs before run i."""
    import torch

    if iters < 1:
        raise ValueError("iters must be at least 1")
    refill = refill or (lambda _i: None)
    for i in range(warmup):
        refill(i)
        fn(*args)
    if torch.device(device).type != "cuda":
        return _cpu_median(fn, args, lambda i: refill(warmup + i), iters)
    flush = flush_buffer(device)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    torch.cuda.synchronize(device)
    for i in range(iters):
        refill(warmup + i)
        flush.zero_()
        starts[i].record()
        fn(*args)
        ends[i].record()
    torch.cuda.synchronize(device)
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends, strict=True))


def _cpu_median(fn: Callable[..., Any], args: list[Any], refill: Callable[[int], None],
                iters: int) -> float:
    times = []
    for i in range(iters):
        refill(i)
        start = time.perf_counter_ns()
        fn(*args)
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1e6
