"""Latency of one call, in a timing regime: a registry of timers, keyed by the regime names of
`fib_runtime.regimes` (a timer is registered under its regime's name; the regime's
`gpu_only` says when it cannot be measured on the CPU). The three shipped timers:

- `device`: warm-up, then the median of N timed runs. On a GPU each run is timed with CUDA
  events on the current stream, after the inputs are re-filled with fresh data and the L2
  cache is flushed (a write to a buffer of twice the L2 size, at least 256 MB), both outside
  the timed region. On the CPU each run is timed with `time.perf_counter_ns`, after the same
  re-fill. What a call costs replayed from a CUDA graph, without the graph's own overhead.
- `eager`: the per-call cost of back-to-back calls with no sync between them, the host's
  launch path included (what an eager engine pays): per round, re-fill, sync, start, N calls
  in a row (N = max(10, iters) on a GPU, iters / rounds on a CPU), end, sync; the per-call
  time is the round's total / N; the median over 7 rounds. Retune times a workload's
  passing candidates once more together, interleaved in rounds (`eager_interleaved_ms`),
  and keeps those times.
- `graph`: the call captured in a CUDA graph (after a warm-up on a side stream) and replayed;
  the median per-replay time, L2 flushed before each replay (GPU only).

Every timer returns a `Latency`: the median in ms (a float) that also carries its `spread`,
the relative half-width of the samples' interquartile range ((q3 - q1) / 2 / median; the
runs of `device` and `graph`, the rounds of `eager`). Retune stamps it on the trace
(`fib_runtime.schema.provenance.SPREAD_KEY`) and the ranking rule reads it as the noise of
the measurement (`fib_runtime.ranking`).

A timer that cannot run on a device says why (`unavailable`); it is never emulated. Adding a
regime: `fib_runtime.regimes.register(Regime(...))`, then `register_timer(name, measure)`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fib_runtime import regimes
from fib_runtime.errors import FibError

_MIN_FLUSH_BYTES = 256 << 20
_flush_buffers: dict[int, Any] = {}
_EAGER_ROUNDS = 7
Refill = Callable[[int], None]


class Latency(float):
    """A median latency in ms that also carries `spread`, the relative half-width of the
    interquartile range of the samples it is the median of (0.0 when unknown)."""

    spread: float

    def __new__(cls, median_ms: float, spread: float = 0.0) -> Latency:
        value = super().__new__(cls, median_ms)
        value.spread = spread
        return value

    def __reduce__(self) -> tuple[Any, ...]:
        return (Latency, (float(self), self.spread))

    def __repr__(self) -> str:
        return f"Latency({float(self)!r}, spread={self.spread!r})"


def summarise(samples: Sequence[float]) -> Latency:
    """The median of `samples` with its spread ((q3 - q1) / 2 / median)."""
    median = statistics.median(samples)
    if len(samples) < 2 or not median > 0:
        return Latency(median, 0.0)
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return Latency(median, (q3 - q1) / 2 / median)


@dataclass(frozen=True)
class Timer:
    """The timer of one regime: `measure(fn, args, device=, refill=, warmup=, iters=) ->
    Latency`."""

    name: str
    measure: Callable[..., float]

    def unavailable(self, device: Any) -> str | None:
        """Why this regime cannot be measured on `device` (None: it can)."""
        regime = regimes.REGIMES.get(self.name)
        if regime is not None and regime.gpu_only and not _is_cuda(device):
            return f"the {self.name} regime needs a CUDA device (not {device})"
        return None


TIMERS: dict[str, Timer] = {}


def register_timer(name: str, measure: Callable[..., float]) -> Timer:
    """Add (or replace) the timer of the registered regime `name`. Retune's worker processes
    adopt it, so `measure` must be importable (defined at a module's top level)."""
    if name not in regimes.REGIMES:
        raise FibError(f"no timing regime {name!r} is registered (fib_runtime.regimes."
                       "register comes first)")
    timer = TIMERS[name] = Timer(name, measure)
    return timer


def unregister_timer(name: str) -> None:
    """Remove a regime's timer (nothing when it has none)."""
    TIMERS.pop(name, None)


def get_timer(name: str) -> Timer:
    timer = TIMERS.get(name)
    if timer is None or name not in regimes.REGIMES:
        known = [n for n in TIMERS if n in regimes.REGIMES]
        raise FibError(f"unknown timing regime {name!r}; known: {', '.join(known)}")
    return timer


def registered() -> list[tuple[regimes.Regime, Timer]]:
    """Every regime with a timer, for a worker process to adopt (`adopt`)."""
    return [(regimes.REGIMES[n], t) for n, t in TIMERS.items() if n in regimes.REGIMES]


def adopt(pairs: Sequence[tuple[regimes.Regime, Timer]]) -> None:
    """Register, in this process, the regimes and timers of another (a worker's parent) that
    it lacks: a regime added in the user's code is measured in the workers too."""
    for regime, timer in pairs:
        if regime.name not in regimes.REGIMES:
            regimes.register(regime)
        if timer.name not in TIMERS:
            register_timer(timer.name, timer.measure)


def parse_timings(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """`"device,eager"` or ["device", "eager"] -> ("device", "eager"), each one known."""
    if value is None:
        return (regimes.DEVICE.name,)
    parts = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))
    if not names:
        raise FibError("no timing regime given")
    for name in names:
        get_timer(name)
    return names


def _is_cuda(device: Any) -> bool:
    import torch

    return torch.device(device).type == "cuda"


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


def _warm(fn: Callable[..., Any], args: list[Any], refill: Refill, warmup: int) -> Refill:
    for i in range(warmup):
        refill(i)
        fn(*args)
    return lambda i: refill(warmup + i)


def median_latency_ms(fn: Callable[..., Any], args: list[Any], *, device: Any,
                      refill: Refill | None = None, warmup: int = 10,
                      iters: int = 50) -> Latency:
    """Device regime: median latency of `fn(*args)` in ms; `refill(i)` runs before run i."""
    import torch

    if iters < 1:
        raise ValueError("iters must be at least 1")
    refill = _warm(fn, args, refill or (lambda _i: None), warmup)
    if not _is_cuda(device):
        return _cpu_median(fn, args, refill, iters)
    flush = flush_buffer(device)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    torch.cuda.synchronize(device)
    for i in range(iters):
        refill(i)
        flush.zero_()
        starts[i].record()
        fn(*args)
        ends[i].record()
    torch.cuda.synchronize(device)
    return summarise([s.elapsed_time(e) for s, e in zip(starts, ends, strict=True)])


def _cpu_median(fn: Callable[..., Any], args: list[Any], refill: Refill, iters: int) -> Latency:
    times = []
    for i in range(iters):
        refill(i)
        start = time.perf_counter_ns()
        fn(*args)
        times.append((time.perf_counter_ns() - start) / 1e6)
    return summarise(times)


def eager_latency_ms(fn: Callable[..., Any], args: list[Any], *, device: Any,
                     refill: Refill | None = None, warmup: int = 10, iters: int = 50,
                     rounds: int = _EAGER_ROUNDS) -> Latency:
    """Eager regime: median over rounds of (N back-to-back calls) / N, in ms."""

    if iters < 1:
        raise ValueError("iters must be at least 1")
    refill = _warm(fn, args, refill or (lambda _i: None), warmup)
    # On a GPU, enough calls that the last kernel's own time (the tail after the last
    # launch) is a small part of the round: with few it favours short device times. A CPU
    # call is synchronous (no tail): about `iters` calls in all.
    cuda = _is_cuda(device)
    per_round = max(10, iters) if cuda else max(1, iters // rounds)
    times = []
    for r in range(rounds):
        refill(r)
        times.append(back_to_back_ms(fn, args, per_round, cuda))
    return summarise(times)


def eager_interleaved_ms(calls: Mapping[str, Callable[..., Any]], args: list[Any], *,
                         device: Any, refill: Refill | None = None, warmup: int = 10,
                         iters: int = 50, rounds: int = _EAGER_ROUNDS,
                         seed: int = 0) -> dict[str, Latency]:
    """The eager regime for several candidates of one workload, interleaved: per round, each
    candidate's N back-to-back calls (as `eager_latency_ms`), in an order shuffled each
    round. Host-bound calls of a few microseconds wander by several per cent from one
    moment to the next (clocks, other processes); timed one after the other, that drift
    decides between candidates within it, timed in rounds it falls on all of them alike."""
    import random

    if iters < 1:
        raise ValueError("iters must be at least 1")
    refill = refill or (lambda _i: None)
    for fn in calls.values():
        _warm(fn, args, refill, warmup)
    cuda = _is_cuda(device)
    per_round = max(10, iters) if cuda else max(1, iters // rounds)
    order = list(calls)
    rng = random.Random(seed)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(rounds):
        rng.shuffle(order)
        for name in order:
            refill(warmup + r)
            times[name].append(back_to_back_ms(calls[name], args, per_round, cuda))
    return {name: summarise(samples) for name, samples in times.items()}


def back_to_back_ms(fn: Callable[..., Any], args: Sequence[Any], calls: int,
                    cuda: bool) -> float:
    """ms per call of `calls` calls of `fn(*args)` in a row, no sync between them: CUDA
    events on the current stream on a GPU (synchronised before and after), the wall clock
    on a CPU."""
    if cuda:
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(calls):
            fn(*args)
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end)) / calls
    begin = time.perf_counter_ns()
    for _ in range(calls):
        fn(*args)
    return (time.perf_counter_ns() - begin) / 1e6 / calls


def graph_latency_ms(fn: Callable[..., Any], args: list[Any], *, device: Any,
                     refill: Refill | None = None, warmup: int = 10, iters: int = 50) -> Latency:
    """Graph regime: median per-replay latency in ms of `fn(*args)` captured in a CUDA graph
    (warm-up on a side stream first, as capture requires); L2 flushed before each replay."""
    import torch

    if not _is_cuda(device):
        raise FibError(f"the graph regime needs a CUDA device (not {device})")
    refill = refill or (lambda _i: None)
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for i in range(max(warmup, 3)):
            refill(i)
            fn(*args)
    torch.cuda.current_stream(device).wait_stream(side)
    torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn(*args)
    torch.cuda.synchronize(device)
    flush = flush_buffer(device)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for i in range(iters):
        refill(i)
        flush.zero_()
        starts[i].record()
        graph.replay()
        ends[i].record()
    torch.cuda.synchronize(device)
    del graph
    return summarise([s.elapsed_time(e) for s, e in zip(starts, ends, strict=True)])


register_timer(regimes.DEVICE.name, median_latency_ms)
register_timer(regimes.EAGER.name, eager_latency_ms)
register_timer(regimes.GRAPH.name, graph_latency_ms)
