"""A step for the gate: loaded by import path, run under one dispatch state at a time
(a variant), and timed in a serving regime with the variants interleaved in rounds.

A step is named `module:factory`; `factory(**kwargs)` builds whatever the step needs
(weights, inputs, static buffers) and returns a callable of no arguments that runs the step
once (a decode layer, a model forward, an engine step). For the graph regime the step must
be recordable in a CUDA graph (static inputs, no host sync).
"""

from __future__ import annotations

import importlib
import os
import random
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fib_runtime.dispatch import sites
from fib_runtime.dispatch.runtime import Runtime
from fib_runtime.errors import FibError
from fib_runtime.measure.timing import Latency, back_to_back_ms, summarise

Step = Callable[[], Any]
_TARGET_S = 0.02  # the least time of one sample (a run of back-to-back steps)
_MAX_CALLS = 1000


def load_step(spec: str, kwargs: Mapping[str, Any] | None = None) -> Step:
    """`module:factory` -> the step `factory(**kwargs)` returns (FibError when it cannot)."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise FibError(f"step {spec!r}: expected module:factory, e.g. "
                       "integration.llama_decode_layer:gate_step")
    if os.getcwd() not in sys.path:  # the current folder's packages, after the installed ones
        sys.path.append(os.getcwd())
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise FibError(f"step {spec!r}: {type(exc).__name__}: {exc}") from None
    step = factory(**dict(kwargs or {}))
    if not callable(step):
        raise FibError(f"step {spec!r}: {attr}(...) returned {type(step).__name__}, "
                       "not a callable of no arguments")
    return step  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Variant:
    """One way to run the step: dispatch off (`runtime` None: the engine's own path), or
    dispatch from one runtime (its database and config)."""

    name: str
    runtime: Runtime | None


def activate(variant: Variant) -> None:
    """Make every call site serve from this variant's runtime (or call its own function)."""
    sites.set_runtime(variant.runtime)


def time_variants(step: Step, variants: list[Variant], regime: str, *, rounds: int,
                  cuda: bool, seed: int = 0) -> dict[str, Latency]:
    """Per variant, the median time of one step (ms) and its spread over `rounds` rounds;
    in each round every variant runs once, in a shuffled order. `eager`: back-to-back steps
    (host launch path included); `graph`: replays of the step recorded once per variant."""
    order = random.Random(seed)
    if regime == "graph":
        graphs = {v.name: _record(step, v) for v in variants}
        run = {name: graph.replay for name, graph in graphs.items()}
    else:
        run = {v.name: step for v in variants}
    active = {v.name: v for v in variants}
    calls = _calls_per_sample(run[variants[0].name], variants[0] if regime != "graph" else None,
                              cuda)
    samples: dict[str, list[float]] = {v.name: [] for v in variants}
    for _ in range(rounds):
        names = list(samples)
        order.shuffle(names)
        for name in names:
            if regime != "graph":
                activate(active[name])
                run[name]()  # keys resolved on the new bindings, outside the timed run
                run[name]()
            samples[name].append(back_to_back_ms(run[name], (), calls, cuda))
    return {name: summarise(values) for name, values in samples.items()}


def _record(step: Step, variant: Variant) -> Any:
    """The step recorded in a CUDA graph with this variant's choices (keys warmed up first:
    a key first seen while recording runs the original)."""
    import torch

    activate(variant)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    torch.cuda.synchronize()
    return graph


def _calls_per_sample(run: Step, variant: Variant | None, cuda: bool) -> int:
    if variant is not None:
        activate(variant)
    run()
    once = back_to_back_ms(run, (), 3, cuda) / 1e3  # s per call
    return max(3, min(_MAX_CALLS, int(_TARGET_S / max(once, 1e-7)) + 1))


__all__ = ["Latency", "Step", "Variant", "activate", "load_step", "time_variants"]
