"""Call sites of fib.apply and the per-call paths generated for them (the hot path).

A Site is one decorated function (or one function-form name/fallback pair). Its `call`
attribute is the whole per-call path, regenerated whenever dispatch or capture is switched
on or off, or the database changes: with both off it is the original function itself.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from fib_runtime.dispatch.compile import register
from fib_runtime.dispatch.keys import Key, make_key_extractor
from fib_runtime.dispatch.runtime import Decision, Op, Runtime
from fib_runtime.errors import FibError
from fib_runtime.schema import Definition
from fib_runtime.tensors import allocate_outputs

log = logging.getLogger("fib_runtime.dispatch")


class Recorder(Protocol):
    """Capture's per-definition hook: called with (key, args) on every call; never raises."""

    definition: Definition

    def __call__(self, key: Key, args: tuple[Any, ...]) -> None: ...


RecorderFactory = Callable[[str], Recorder | None]

_sites: weakref.WeakSet[Site] = weakref.WeakSet()
_state_lock = threading.RLock()
_runtime: Runtime | None = None
_recorders: RecorderFactory | None = None
_autostarted = False


class Site:
    """One place that calls a definition; `call(*args, **kwargs)` is its current path."""

    def __init__(self, name: str, fallback: Callable[..., Any] | None, *,
                 traceable: bool = False) -> None:
        self.name = name
        self.traceable = traceable  # a decorated function torch.compile may meet
        self.fallback = fallback or _no_fallback(name)
        self.decisions: dict[tuple[bool, Key], Decision] = {}
        self.resolve: Callable[[Key, tuple[Any, ...]], Callable[..., Any]] | None = None
        self.call: Callable[..., Any] = self._first_call
        _sites.add(self)

    def _first_call(self, *args: Any, **kwargs: Any) -> Any:
        autostart()
        refresh(self)
        return self.call(*args, **kwargs)


def _no_fallback(name: str) -> Callable[..., Any]:
    def missing(*args: Any, **kwargs: Any) -> Any:
        raise FibError(f"{name}: no solution serves this call and no fallback was given")
    return missing


# -- global state -------------------------------------------------------------------------

def autostart() -> None:
    """Once per process: FIB_ENABLE_APPLY / FIB_ENABLE_TRACING switch things on by themselves."""
    global _autostarted
    with _state_lock:
        if _autostarted:
            return
        _autostarted = True
        try:
            if _truthy("FIB_ENABLE_APPLY") and _runtime is None:
                from fib_runtime.dispatch.api import enable_apply

                enable_apply()
            if _truthy("FIB_ENABLE_TRACING") and _recorders is None:
                from fib_runtime.capture import enable_capture

                enable_capture()
        except Exception as exc:  # serving goes on with the original functions
            log.error("fib-runtime could not start from the environment: %s", exc)


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def set_runtime(runtime: Runtime | None) -> None:
    global _runtime
    with _state_lock:
        _runtime = runtime
        if runtime is not None:
            runtime.on_reload(refresh_all)
    refresh_all()


def current_runtime() -> Runtime | None:
    return _runtime


def set_recorder_factory(factory: RecorderFactory | None) -> None:
    """Capture on (factory) / off (None): every site rebuilds its per-call path."""
    global _recorders
    with _state_lock:
        _recorders = factory
    refresh_all()


def refresh_all() -> None:
    with _state_lock:
        for site in list(_sites):
            refresh(site)


def refresh(site: Site) -> None:
    """Generate the per-call path of a site for the current runtime and recorder."""
    with _state_lock:
        runtime = _runtime
        op = runtime.op(site.name) if runtime is not None else None
        recorder = None
        if _recorders is not None:
            try:
                recorder = _recorders(site.name)
            except Exception as exc:
                log.warning("capture of %s is off: %s", site.name, exc)
        site.decisions = {}
        site.resolve = None
        definition = op.definition if op is not None else getattr(recorder, "definition", None)
        if site.traceable and definition is not None:
            _register_custom_op(site, definition)
        if op is not None and runtime is not None:
            site.call = _dispatching(site, runtime, op, recorder)
        elif recorder is not None:
            site.call = _recording(site, recorder)
        else:
            site.call = site.fallback


def _register_custom_op(site: Site, definition: Definition) -> None:
    try:
        register(definition, lambda *args: site.call(*args))
    except Exception as exc:  # compile support is optional; dispatch must go on
        log.warning("%s: no torch.compile support: %s", definition.name, exc)


# -- generated per-call paths ---------------------------------------------------------------

def _recording(site: Site, recorder: Recorder) -> Callable[..., Any]:
    """Capture only: record the key, then run the original function."""
    fallback = site.fallback
    try:
        extract = make_key_extractor(recorder.definition)
    except FibError as exc:
        log.warning("capture of %s is off: %s", site.name, exc)
        return fallback
    names = (*recorder.definition.inputs, *recorder.definition.outputs)

    def call(*args: Any, **kwargs: Any) -> Any:
        if kwargs:
            positional = _positional(names, args, kwargs)
            if positional is None:
                return fallback(*args, **kwargs)
            args = positional
        try:
            key = extract(args)
        except Exception:
            return fallback(*args)
        recorder(key, args)
        return fallback(*args)

    return call


# The whole hit path in one generated frame: the key read inline, one dict lookup, the call.
_DISPATCH_TEMPLATE = """
def call(*args, **kwargs):
    if kwargs:
        return positional(call, args, kwargs)
    try:
        key = {key}
    except Exception:
        return fallback(*args)
    {record}
    fn = (by_value_get if len(args) == n_in else by_destination_get)(key)
    if fn is None:
        fn = resolve(key, args)
    next(hits)
    try:
        return fn(*args)
    except Exception as exc:
        return failed(fn, key, args, exc)
"""


def _dispatching(site: Site, runtime: Runtime, op: Op,
                 recorder: Recorder | None) -> Callable[..., Any]:
    """Dispatch (and capture): key, one dict lookup, call; everything else once per key."""
    fallback = site.fallback
    n_in = op.n_inputs
    by_value: dict[Key, Callable[..., Any]] = {}
    by_destination: dict[Key, Callable[..., Any]] = {}
    owners: dict[Callable[..., Any], str] = {}
    hits = itertools.count()
    op.hit_counters.append(hits)
    # The dicts are cleared, never replaced, so their bound lookups stay valid.
    by_value_get, by_destination_get = by_value.get, by_destination.get
    slow = _Slow(site, runtime, op, by_value, by_destination, owners, hits)
    resolve, failed, positional = slow.resolve, slow.failed, slow.positional
    site.resolve = resolve

    namespace = {
        "positional": positional, "fallback": fallback, "recorder": recorder,
        "by_value_get": by_value_get, "by_destination_get": by_destination_get,
        "n_in": n_in, "resolve": resolve, "hits": hits, "failed": failed,
    }
    source = _DISPATCH_TEMPLATE.format(
        key=op.key_source,
        record="recorder(key, args)" if recorder is not None else "pass")
    exec(compile(source, f"<fib dispatch {op.definition.name}>", "exec"), namespace)
    call: Callable[..., Any] = namespace["call"]
    return call


class _Slow:
    """The once-per-key and failure paths of one site's dispatcher."""

    def __init__(self, site: Site, runtime: Runtime, op: Op,
                 by_value: dict[Key, Callable[..., Any]],
                 by_destination: dict[Key, Callable[..., Any]],
                 owners: dict[Callable[..., Any], str], hits: itertools.count[int]) -> None:
        self.site, self.runtime, self.op = site, runtime, op
        self.hits = hits
        self.tables = {False: by_value, True: by_destination}
        self.owners = owners
        self._fallbacks: dict[str, Callable[..., Any]] = {}
        op.clear_hooks.append(self.clear)

    def clear(self) -> None:
        for table in self.tables.values():
            table.clear()
        self.owners.clear()
        self.site.decisions.clear()

    def positional(self, call: Callable[..., Any], args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> Any:
        """A call with keywords: reorder into the definition's positional order."""
        ordered = _positional(self.op.names, args, kwargs)
        if ordered is None:
            next(self.hits)
            return self.fallback_for("keywords")(*args, **kwargs)
        return call(*ordered)

    def fallback_for(self, reason: str) -> Callable[..., Any]:
        """The original function, counting the calls it answers for this reason."""
        counted = self._fallbacks.get(reason)
        if counted is None:
            fallbacks, original = self.op.stats.fallbacks, self.site.fallback

            def counted(*args: Any, **kwargs: Any) -> Any:
                fallbacks[reason] += 1
                return original(*args, **kwargs)

            self._fallbacks[reason] = counted
        return counted

    def resolve(self, key: Key, args: tuple[Any, ...]) -> Callable[..., Any]:
        op = self.op
        dps = len(args) == op.n_inputs + op.n_outputs and op.n_outputs > 0
        if not dps and len(args) != op.n_inputs:
            return self.fallback_for("arguments")
        if _capturing_graph():
            return self.fallback_for("graph_capture")  # not cached: warm up keys ahead
        with op.lock:
            table = self.tables[dps]
            fn = table.get(key)
            if fn is not None:
                return fn
            decision, chosen = self.runtime.decide(op, key, dps)
            if chosen is None:
                fn = self.fallback_for(decision.reason)
            else:
                fn = _validated(chosen, op.definition, dps) if op.policy.validate_outputs \
                    else chosen
                self.owners[fn] = decision.solution or ""
            self.site.decisions[(dps, key)] = decision
            table[key] = fn
            return fn

    def failed(self, fn: Callable[..., Any], key: Key, args: tuple[Any, ...],
               exc: Exception) -> Any:
        """A solution raised: count, maybe quarantine, answer with the next one or fallback."""
        name = self.owners.get(fn)
        op = self.op
        if name is None or op.policy.strict:
            raise exc
        with op.lock:
            op.stats.errors[name] += 1
            if op.stats.errors[name] >= op.policy.quarantine_after and \
                    name not in op.stats.quarantined:
                op.stats.quarantined.add(name)
                log.warning("%s: solution %s quarantined after %d errors (last: %s: %s)",
                            op.definition.name, name, op.stats.errors[name],
                            type(exc).__name__, exc)
                for clear in op.clear_hooks:
                    clear()
        dps = len(args) != op.n_inputs
        decision, alternative = self.runtime.decide(op, key, dps, exclude=name)
        if alternative is not None:
            try:
                return alternative(*args)
            except Exception:
                op.stats.errors[decision.solution or ""] += 1
        return self.fallback_for("error")(*args)


def _positional(names: tuple[str, ...], args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
    """Arguments in definition order, or None when keywords do not map onto it."""
    ordered = list(args)
    for name in names[len(args):]:
        if name not in kwargs:
            break
        ordered.append(kwargs[name])
    if len(ordered) - len(args) != len(kwargs):
        return None
    return tuple(ordered)


def _capturing_graph() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_initialized() and \
        torch.cuda.is_current_stream_capturing()


def _validated(fn: Callable[..., Any], definition: Definition, dps: bool) -> Callable[..., Any]:
    """Debug mode: check every result's shapes and dtypes against the definition."""
    n_in = len(definition.inputs)

    def call(*args: Any) -> Any:
        result = fn(*args)
        expected = allocate_outputs(definition, args[:n_in])
        produced = args[n_in:] if dps else (result if isinstance(result, tuple) else (result,))
        if len(produced) != len(expected) or any(
                tuple(p.shape) != tuple(e.shape) or p.dtype != e.dtype
                for p, e in zip(produced, expected, strict=False)):
            raise FibError(f"{definition.name}: outputs "
                           f"{[(tuple(p.shape), p.dtype) for p in produced]} do not match "
                           f"{[(tuple(e.shape), e.dtype) for e in expected]}")
        return result

    return call
