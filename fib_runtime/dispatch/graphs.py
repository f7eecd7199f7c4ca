"""When CUDA graphs are being captured: the switch between the eager and the graph maps.

Each call site serves from one of two maps (see `frames.Binding`): the choices of the
eager ranking, or those of the graph ranking. A call on the hit path reads whichever map
its site's global holds; it never asks CUDA whether a capture is running. Instead
`torch.cuda.CUDAGraph.capture_begin` / `capture_end` (what `torch.cuda.graph`,
`make_graphed_callables` and torch.compile's cudagraphs all call) are wrapped once, when
dispatch is enabled in a CUDA process, and each begin/end tells the listeners (the sites
module swaps every site's map). Captures may nest or overlap on several threads: the graph
maps stay in place until the last one ends.

A capture started some other way (raw stream capture) is not seen here; for it the rule
of `frames.Binding.resolve` still holds: a key not resolved before capture runs the
original function, and resolved keys keep their eager choice.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("fib_runtime.dispatch")

_lock = threading.Lock()
_depth = 0
_listeners: list[Callable[[bool], None]] = []
_installed = False


def capturing() -> bool:
    """Whether some CUDA graph capture seen by the hooks is running now."""
    return _depth > 0


def on_switch(listener: Callable[[bool], None]) -> None:
    """Call `listener(True)` when the first capture begins, `listener(False)` when the last
    one ends."""
    _listeners.append(listener)


def began() -> None:
    """A capture began (called by the wrapped capture_begin; tests may call it)."""
    global _depth
    with _lock:
        _depth += 1
        first = _depth == 1
    if first:
        _notify(True)


def ended() -> None:
    """A capture ended, or failed to begin."""
    global _depth
    with _lock:
        if _depth == 0:
            return
        _depth -= 1
        last = _depth == 0
    if last:
        _notify(False)


def _notify(flag: bool) -> None:
    for listener in list(_listeners):
        try:
            listener(flag)
        except Exception as exc:  # serving goes on; the maps may stay as they were
            log.warning("graph capture listener failed: %s", exc)


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
        wrap_capture(graph_class)
        _installed = True
    return True


def wrap_capture(graph_class: Any) -> None:
    """Make `graph_class.capture_begin/capture_end` report to this module."""
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
