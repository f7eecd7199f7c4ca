"""The bridge from an engine adapter to fib-runtime, what every adapter shares: the on/off
switch, whether a definition is served, one `fib.apply` wrapper per (engine, definition,
fallback), eager call sites and importable originals. ("Routing" is what an adapter does
with a call; this module is the bridge it routes over.)

An adapter routes a call only when every constant of the engine op (size, eps, dtype) matches
a shipped definition (`fib_runtime.engine_ops.definition_for`), and only when fib-runtime
serves that definition in this process (its `torch.ops.fib.<name>` custom op exists once
dispatch or capture is on with a database that holds it). Everything else keeps the engine's
own code, untouched.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from fib_runtime.config_fields import env_flag

if TYPE_CHECKING:
    from fib_runtime.dispatch.sites import Site

log = logging.getLogger("fib_runtime.adapters")

ENV_VARS = ("FIB_ENABLE_APPLY", "FIB_ENABLE_TRACING")
_wrappers: dict[tuple[str, str], Callable[..., Any]] = {}
_eager_sites: dict[tuple[str, Any, Any], Site] = {}
_lock = threading.RLock()
_started = False


def enabled() -> bool:
    """True when the user turned fib-runtime on (FIB_ENABLE_APPLY or FIB_ENABLE_TRACING)."""
    return any(env_flag(name) for name in ENV_VARS)


def wrapper(engine: str, name: str, fallback: Callable[..., Any]) -> Callable[..., Any]:
    """The `fib.apply(name)` wrapper of `fallback` for this engine (made once).

    Under torch.compile every such wrapper of a definition becomes the one custom op
    `torch.ops.fib.<name>`, whose eager implementation is the path (and fallback) of the
    wrapper registered first; so an engine makes one traceable wrapper per definition, for
    the path torch.compile sees (forward_native), and `eager_wrapper`s for the others.
    """
    key = (engine, name)
    fn = _wrappers.get(key)
    if fn is None:
        import fib_runtime as fib

        with _lock:
            fn = _wrappers.setdefault(key, fib.apply(name)(fallback))
    return fn


def eager_site(name: str, fallback: Callable[..., Any],
               original: Callable[..., Any] | None = None) -> Site:
    """A call site of `name` of its own (never traced by torch.compile; callers check
    is_compiling): `site.call` is the site's generated dispatch frame itself, so a routed
    eager call pays no wrapper frame and no per-call lookup of the site; `site.direct` says
    when every call would only reach `fallback` (nothing dispatched, nothing captured), so
    an adapter may call the engine's own function itself. `fallback` answers
    what dispatch does not serve and is the engine's path dispatch calls directly where it is
    the fastest; `original`, when given, is what capture records in its place as the
    importable candidate retune times (the same computation, e.g. one that plans for itself
    where the fallback runs the engine's planned state)."""
    from fib_runtime.dispatch.sites import Site

    key = (name, fallback, original)
    site = _eager_sites.get(key)
    if site is None:  # one site per (definition, fallback), kept for the process's life
        site = Site(name, fallback)
        if original is not None:
            site.original = original
        with _lock:
            site = _eager_sites.setdefault(key, site)
    return site


def module_originals(module: str, make: Callable[[str], Callable[..., Any] | None]
                     ) -> Callable[[str], Callable[..., Any]]:
    """A module `__getattr__` that makes, on first access, one module-level function per
    definition name (`make(name)`, None for names it does not know) and keeps it in the
    module: `<module>.<definition>` is then an importable function in any process, which is
    what makes an adapter's fallback a timeable original (fib_runtime.original)."""

    def __getattr__(attr: str) -> Callable[..., Any]:
        fn = None
        if not attr.startswith("_"):
            try:
                fn = make(attr)
            except (KeyError, ValueError, ImportError) as exc:
                raise AttributeError(f"module {module!r}: no original {attr!r}: {exc}") \
                    from None
        if fn is None:
            raise AttributeError(f"module {module!r} has no attribute {attr!r}")
        fn.__module__, fn.__name__, fn.__qualname__ = module, attr, attr
        return vars(sys.modules[module]).setdefault(attr, fn)

    return __getattr__


def start(wrappers: Iterable[Callable[..., Any]] = ()) -> None:
    """Switch fib-runtime on from the environment, once, after the wrappers exist.

    Dispatch and capture generate their per-call paths (and register the `torch.ops.fib`
    custom ops torch.compile needs) for the wrappers that exist when they are switched on;
    when the user switched them on before the adapter made its wrappers, one reload
    regenerates them. Never raises: serving goes on with the engine's code.
    """
    global _started
    del wrappers  # made by the caller before this call; named for the reader
    with _lock:
        if _started:
            return
        _started = True
        import fib_runtime as fib

        try:
            already = False
            if env_flag("FIB_ENABLE_APPLY"):
                if fib.dispatch_enabled():
                    already = True
                else:
                    fib.enable_apply()
            if env_flag("FIB_ENABLE_TRACING"):
                if fib.capture_stats()["active"]:
                    already = True
                else:
                    fib.enable_capture()
            if already:
                fib.reload()
        except Exception as exc:  # serving goes on with the engine's own code
            log.error("fib-runtime could not start from the environment: %s", exc)


def served(name: str) -> bool:
    """True when fib-runtime serves `name` in this process: dispatch is on with a database
    that defines it (its best solutions are then built here, ahead of any CUDA-graph
    capture), or capture is on (which records catalogue definitions too)."""
    import fib_runtime as fib

    if fib.serves(name):
        with contextlib.suppress(fib.FibError):  # switched off since: the site falls back
            fib.warmup([name])
        return True
    try:
        return bool(fib.capture_stats()["active"])
    except Exception:
        return False


def reset_for_tests() -> None:
    """Forget that the environment was read (tests switch the variables)."""
    global _started
    with _lock:
        _started = False
