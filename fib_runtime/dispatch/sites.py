"""Call sites of fib.apply and the process-wide switch that regenerates their paths.

A Site is one decorated function (or one function-form name/fallback pair). Its `call` is
one function object for the site's whole life (the decorated function returned to the
user); what it runs is swapped whenever dispatch or capture is switched on or off, or the
database changes: its code becomes a dispatching frame (reading the global DISPATCH), or a
one-line forward to TARGET (the original function, capture's recording path, or the first
call). Each new state is stored before the code that reads it is installed, and the two
globals never change kind, so a call running on another thread meanwhile stays consistent.
"""

from __future__ import annotations

import builtins
import functools
import logging
import threading
import types
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from fib_runtime.dispatch import graphs, unknown
from fib_runtime.dispatch.compile import register
from fib_runtime.dispatch.frames import Binding, recording_frame
from fib_runtime.dispatch.runtime import Runtime
from fib_runtime.errors import FibError
from fib_runtime.keys import Key
from fib_runtime.original import unwrapped, vouch
from fib_runtime.regimes import Context
from fib_runtime.schema import Definition

log = logging.getLogger("fib_runtime.dispatch")


class Recorder(Protocol):
    """Capture's per-definition hook: called with (key, args) on every call; never raises."""

    definition: Definition

    def __call__(self, key: Key, args: tuple[Any, ...]) -> None: ...


RecorderFactory = Callable[[str], Recorder | None]
OriginalSink = Callable[[str, Callable[..., Any]], None]  # (definition, the site's function)

_sites: weakref.WeakSet[Site] = weakref.WeakSet()
_lock = threading.RLock()
_runtime: Runtime | None = None
_recorders: RecorderFactory | None = None
_originals: OriginalSink | None = None
_first_call_hooks: list[Callable[[], None]] = []
_hooks_lock = threading.Lock()


class Site:
    """One place that calls a definition; `call(*args, **kwargs)` is its current path."""

    def __init__(self, name: str, fallback: Callable[..., Any] | None, *,
                 traceable: bool = False) -> None:
        self.name = name
        self.traceable = traceable  # a decorated function torch.compile may meet
        self.original = fallback  # the engine's own function (None: not given)
        self.fallback = fallback or _no_fallback(name)
        self.binding: Binding | None = None  # while dispatching
        # Every call would only reach the engine's function: nothing is captured, and dispatch
        # is off or serves that function at every key (adapters then call it themselves).
        self.direct = False
        # SITE keeps the site alive exactly as long as its function is.
        self._scope: dict[str, Any] = {"__builtins__": builtins, "TARGET": self._first_call,
                                       "DISPATCH": None, "SITE": self}
        self.call = types.FunctionType(_FORWARD, self._scope, "call")
        _sites.add(self)

    def forward_to(self, target: Callable[..., Any]) -> None:
        """Every call goes to `target` (one forwarding frame)."""
        self._scope["TARGET"] = target
        self.call.__code__ = _FORWARD
        self.direct = target is self.fallback

    def dispatch_through(self, binding: Binding) -> None:
        """Every call runs the binding's dispatching frame, as this function's own code."""
        self.direct = False
        self.binding = binding
        self._scope["DISPATCH"] = binding.state_for(graphs.context())
        self.call.__code__ = binding.code

    def serve_context(self, context: Context) -> None:
        """Swap the map this site serves from to that of `context`."""
        binding = self.binding
        if binding is not None:
            state = binding.state_for(context)
            binding.globals["DISPATCH"] = state
            self._scope["DISPATCH"] = state

    def _first_call(self, *args: Any, **kwargs: Any) -> Any:
        _run_first_call_hooks()
        refresh(self)
        return self.call(*args, **kwargs)

    def unbind(self) -> None:
        if self.binding is not None:
            self.binding.unbind()
            self.binding = None


def _forward_code() -> types.CodeType:
    namespace: dict[str, Any] = {}
    exec(compile("def call(*args, **kwargs):\n    return TARGET(*args, **kwargs)\n",
                 "<fib forward>", "exec"), namespace)
    return namespace["call"].__code__


_FORWARD = _forward_code()


def _no_fallback(name: str) -> Callable[..., Any]:
    def missing(*args: Any, **kwargs: Any) -> Any:
        raise FibError(f"{name}: no solution serves this call and no fallback was given")
    return missing


def on_first_call(hook: Callable[[], None]) -> None:
    """Run `hook` once, before the first call of any site (the environment autostart)."""
    _first_call_hooks.append(hook)


def _run_first_call_hooks() -> None:
    """Other threads' first calls wait here until the hooks have run (outside `_lock`, so a
    hook may switch dispatch or capture on)."""
    with _hooks_lock:
        while _first_call_hooks:
            hook = _first_call_hooks.pop(0)
            try:
                hook()
            except Exception as exc:  # serving goes on with the original functions
                log.error("fib-runtime could not start: %s", exc)


def set_runtime(runtime: Runtime | None) -> None:
    global _runtime
    with _lock:
        _runtime = runtime
        unknown.forget()
        if runtime is not None:
            runtime.on_reload(refresh_all)
            graphs.install()  # a CUDA process: graph recording swaps the maps sites serve
    refresh_all()


def _on_switch(context: Context) -> None:
    """The first CUDA graph recording began ("graph") or the last ended ("eager")."""
    with _lock:
        for site in list(_sites):
            site.serve_context(context)


graphs.on_switch(_on_switch)


def current_runtime() -> Runtime | None:
    return _runtime


def set_recorder_factory(factory: RecorderFactory | None,
                         originals: OriginalSink | None = None) -> None:
    """Capture on (factory) / off (None): every site rebuilds its per-call path. `originals`
    is told each captured site's own function (capture records it as a candidate)."""
    global _recorders, _originals
    with _lock:
        _recorders = factory
        _originals = originals if factory is not None else None
    refresh_all()


def sites_of(name: str) -> list[Site]:
    return [site for site in list(_sites) if site.name == name]


def refresh_all() -> None:
    with _lock:
        for site in list(_sites):
            refresh(site)


def refresh(site: Site) -> None:
    """Generate the per-call path of a site for the current runtime and recorder."""
    with _lock:
        dispatcher = _runtime.dispatcher(site.name) if _runtime is not None else None
        recorder = None
        if _recorders is not None:
            try:
                recorder = _recorders(site.name)
            except Exception as exc:
                log.warning("capture of %s is off: %s", site.name, exc)
        if recorder is not None and _originals is not None and site.original is not None:
            try:
                _originals(site.name, site.original)
            except Exception as exc:
                log.warning("%s: the original function is not recorded: %s", site.name, exc)
        site.unbind()
        definition = dispatcher.definition if dispatcher is not None else \
            getattr(recorder, "definition", None)
        vouched = None
        if definition is not None and site.original is not None:
            vouched = vouch(definition, site.original)  # its record is the engine's function
        if site.traceable and definition is not None:
            _register_custom_op(site, definition)
        if dispatcher is not None:
            original = unwrapped(site.original) if site.original is not None else None
            site.dispatch_through(Binding(dispatcher, site.fallback, recorder, original))
            # Where the database serves the engine's own function at every key, an adapter
            # may call it as the engine does, without the site (not counted as hits).
            site.direct = recorder is None and vouched is not None and \
                dispatcher.serves_only(vouched.name)
            return
        target = site.fallback if recorder is None else \
            recording_frame(recorder.definition, site.fallback, recorder)
        runtime = _runtime
        if runtime is not None and site.name not in runtime.db.definitions:
            # With capture on, capture writes a known definition in (and says an unknown one).
            say = None if recorder is not None else functools.partial(
                unknown.say_once, site.name, runtime.root, list(runtime.db.definitions),
                "its calls run the function it decorates")
            target = unknown.counted(site.name, target, say)
        site.forward_to(target)


def _register_custom_op(site: Site, definition: Definition) -> None:
    try:
        register(definition, lambda *args: site.call(*args))
    except Exception as exc:  # compile support is optional; dispatch must go on
        log.warning("%s: no torch.compile support: %s", definition.name, exc)
