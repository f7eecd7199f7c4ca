"""When CUDA graphs are being recorded: the switch between the call contexts' maps.

Each call site serves from one map per call context (`regimes.CONTEXTS`, see
`frames.Binding`): the choices for eager calls, or those for calls recorded into a CUDA
graph. A call on the hit path reads whichever map its site's global holds; it never asks
CUDA whether a graph is being recorded. Instead torch's `CUDAGraph.capture_begin` /
`capture_end` (what `torch.cuda.graph`, `make_graphed_callables` and torch.compile's
cudagraphs all call) are wrapped once, when dispatch is enabled in a CUDA process, and each
begin/end tells the listeners the context calls run in now (the sites module swaps every
site's map). Recordings may nest or overlap on several threads: the graph maps stay in
place until the last one ends.

A recording started some other way (raw stream capture) is not seen here; for it the rule
of `frames.Binding.resolve` still holds: a key not resolved before the recording runs the
original function, and resolved keys keep their eager choice.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

from fib_runtime.regimes import Context

log = logging.getLogger("fib_runtime.dispatch")

_lock = threading.Lock()
_depth = 0
_listeners: list[Callable[[Context], None]] = []
_installed = False


def context() -> Context:
    """The context calls run in now: "graph" while some CUDA graph recording seen by the
    hooks runs, else "eager"."""
    return "graph" if _depth > 0 else "eager"


def on_switch(listener: Callable[[Context], None]) -> None:
    """Call `listener("graph")` when the first recording begins, `listener("eager")` when
    the last one ends."""
    _listeners.append(listener)


def began() -> None:
    """A recording began (called by the wrapped capture_begin; tests may call it)."""
    global _depth
    with _lock:
        _depth += 1
        first = _depth == 1
    if first:
        _notify("graph")


def ended() -> None:
    """A recording ended, or failed to begin."""
    global _depth
    with _lock:
        if _depth == 0:
            return
        _depth -= 1
        last = _depth == 0
    if last:
        _notify("eager")


def _notify(now: Context) -> None:
    for listener in list(_listeners):
        try:
            listener(now)
        except Exception as exc:  # serving goes on; the maps may stay as they were
            log.warning("graph recording listener failed: %s", exc)


def install() -> bool:
    """Wrap CUDAGraph.capture_begin/capture_end once, in a process that has CUDA. Returns
    whether the hooks are in place."""
    global _installed
    if _installed:
        return True
    try:
        import torch

        if not torch.cuda.is_available():
            return False
        graph_class: Any = torch.cuda.CUDAGraph
    except Exception:
        return False
    with _lock:
        if _installed:
            return True
        follow_recordings(graph_class)
        _installed = True
    return True


def follow_recordings(graph_class: Any) -> None:
    """Make `graph_class.capture_begin/capture_end` (torch's names) report to this module."""
    begin, end = graph_class.capture_begin, graph_class.capture_end

    @functools.wraps(begin)
    def capture_begin(self: Any, *args: Any, **kwargs: Any) -> Any:
        began()
        try:
            return begin(self, *args, **kwargs)
        except BaseException:
            ended()
            raise

    @functools.wraps(end)
    def capture_end(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return end(self, *args, **kwargs)
        finally:
            ended()

    graph_class.capture_begin = capture_begin
    graph_class.capture_end = capture_end
