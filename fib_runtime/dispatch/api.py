"""The public dispatch API: fib.apply, enable_apply / disable_apply, reload, warmup, stats,
and the queries adapters ask (dispatch_enabled, serves)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar, overload

from fib_runtime.dispatch import sites, unknown
from fib_runtime.dispatch.compile import make_traceable
from fib_runtime.dispatch.config import DispatchConfig
from fib_runtime.dispatch.ranks import RankGroup
from fib_runtime.dispatch.runtime import Runtime
from fib_runtime.errors import FibError, StoreError
from fib_runtime.keys import axes_to_key
from fib_runtime.paths import default_db_path
from fib_runtime.regimes import DEVICE
from fib_runtime.schema import Definition
from fib_runtime.store import TraceDB

F = TypeVar("F", bound=Callable[..., Any])
Resolver = Callable[..., str | None]

_stack: list[Runtime | None] = []
_stack_lock = threading.Lock()
_function_sites: dict[tuple[str, Callable[..., Any] | None], sites.Site] = {}
_FUNCTION_SITES_MAX = 4096


@overload
def apply(name: str) -> Callable[[F], F]: ...
@overload
def apply(name: Resolver) -> Callable[[F], F]: ...
@overload
def apply(name: str, *, args: Iterable[Any] = ..., kwargs: Mapping[str, Any] | None = ...,
          fallback: Callable[..., Any] | None = ...) -> Any: ...


def apply(name: str | Resolver, *, args: Iterable[Any] | None = None,
          kwargs: Mapping[str, Any] | None = None,
          fallback: Callable[..., Any] | None = None) -> Any:
    """Dispatch an op to the fastest measured solution for its definition on this GPU.

    `@apply("rmsnorm_h4096")` or `@apply(resolver)` (resolver(*args, **kwargs) -> name) wrap a
    function, which stays the fallback; `apply(name, args=..., kwargs=..., fallback=...)`
    makes one call. Arguments follow the definition's input order; passing the outputs too
    (destination-passing style) is detected from the argument count.
    """
    if args is not None or kwargs is not None:
        if not isinstance(name, str):
            raise FibError("fib.apply(name, args=...): name must be a definition name")
        return _function_site(name, fallback).call(*(args or ()), **(kwargs or {}))
    if isinstance(name, str):
        return functools.partial(_decorate_named, name)
    if callable(name):
        return functools.partial(_decorate_resolved, name)
    raise FibError(f"fib.apply: expected a definition name or a resolver, got {name!r}")


def _decorate_named(name: str, fn: F) -> F:
    """The site's own function, carrying `fn`'s name, docstring and `__wrapped__`."""
    site = sites.Site(name, fn, traceable=True)
    wrapper = functools.update_wrapper(site.call, fn)
    wrapper.__fib_original__ = fn  # type: ignore[attr-defined]  # see fib_runtime.original
    make_traceable(wrapper, name, fn)
    return wrapper  # type: ignore[return-value]


def _decorate_resolved(resolver: Resolver, fn: F) -> F:
    by_name: dict[str, sites.Site] = {}

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        name = resolver(*args, **kwargs)
        if name is None:
            return fn(*args, **kwargs)
        site = by_name.get(name)
        if site is None:
            site = by_name.setdefault(name, sites.Site(name, fn))
        return site.call(*args, **kwargs)

    wrapper.__fib_original__ = fn  # type: ignore[attr-defined]  # see fib_runtime.original
    return wrapper  # type: ignore[return-value]


def _function_site(name: str, fallback: Callable[..., Any] | None) -> sites.Site:
    key = (name, fallback)
    site = _function_sites.get(key)
    if site is None:
        if len(_function_sites) >= _FUNCTION_SITES_MAX:  # fallbacks made per call
            _function_sites.clear()
        site = _function_sites.setdefault(key, sites.Site(name, fallback))
    return site


class ApplySession:
    """An enabled dispatch runtime; a context manager that restores the previous one."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def __enter__(self) -> ApplySession:
        return self

    def __exit__(self, *exc: object) -> None:
        disable_apply(self)

    def stats(self) -> dict[str, dict[str, Any]]:
        if self.runtime is sites.current_runtime():
            return {**unknown.stats(), **self.runtime.stats()}
        return self.runtime.stats()

    def reload(self) -> None:
        self.runtime.reload()


def enable_apply(db: TraceDB | str | Path | None = None,
                 config: DispatchConfig | Mapping[str, Any] | None = None, *,
                 ranks: RankGroup | None = None) -> ApplySession:
    """Start dispatching from `db` (default: $FIB_DATASET_PATH or ~/.cache/fib_runtime/db).
    With `ranks` (dispatch/ranks.py, made on every rank) the ranks of a tensor-parallel
    group serve one table, and reload only at `fib.sync()`.

    The database must exist: a path that does not is a StoreError (dispatching from an empty
    folder would serve nothing, silently). FIB_ENABLE_APPLY=1 logs that error and leaves
    dispatch off; capture (`fib.enable_capture`) is what creates a database.
    """
    if not isinstance(db, TraceDB):
        root = Path(db).expanduser() if db is not None else default_db_path()
        if not root.is_dir():
            what = "not a database folder (a file is there)" if root.exists() else \
                "no such database folder"
            raise StoreError(f"{root}: {what}; dispatch serves from an existing database "
                             f"(`fib catalogue install {root}` makes one, capture fills it)")
        db = root
    if isinstance(config, Mapping):
        config = DispatchConfig.from_dict(dict(config))
    runtime = Runtime(db, config, ranks=ranks)
    with _stack_lock:
        _stack.append(sites.current_runtime())
        sites.set_runtime(runtime)
    return ApplySession(runtime)


def disable_apply(session: ApplySession | None = None) -> None:
    """Stop the current (or the given) runtime and restore the one active before it."""
    with _stack_lock:
        current = sites.current_runtime()
        if current is None or (session is not None and session.runtime is not current):
            if session is not None:
                session.runtime.close()
            return
        current.close()
        sites.set_runtime(_stack.pop() if _stack else None)


def reload() -> None:
    """Re-read the database now (a background check also does it every few seconds). With
    a rank group the load is collective: every rank of the group calls it, or `sync()`."""
    runtime = sites.current_runtime()
    if runtime is not None:
        runtime.reload()


def sync() -> bool:
    """Reload if the database changed; with a rank group, if any rank's did, every rank
    calling this at the same point of its loop (the agreed point of a hot reload). Whether
    it reloaded."""
    runtime = sites.current_runtime()
    return runtime.sync() if runtime is not None else False


def dispatch_enabled() -> bool:
    """Whether dispatch is on in this process (`enable_apply`; FIB_ENABLE_APPLY switches it
    on at the first call of a decorated function)."""
    return sites.current_runtime() is not None


def serves(name: str) -> bool:
    """Whether dispatch is on and its loaded database defines `name`, so that calls of that
    definition are dispatched (a reload re-reads the database). Nothing is built or warmed."""
    runtime = sites.current_runtime()
    return runtime is not None and runtime.dispatcher(name) is not None


def stats() -> dict[str, dict[str, Any]]:
    """Per definition: hits, nearest-resolved keys, fallbacks by reason, errors, quarantined."""
    runtime = sites.current_runtime()
    return {**unknown.stats(), **runtime.stats()} if runtime is not None else {}


def warmup(definitions: Iterable[str] | None = None,
           axes: Mapping[str, Iterable[Mapping[str, int]]] | None = None, *,
           top: int = 1) -> dict[str, list[str]]:
    """Build ahead of time the `top` solutions of every measured key, and resolve the given
    keys (`{definition: [{axis: value}, ...]}`) on every call site, e.g. before recording
    CUDA graphs. Returns the solutions built per definition."""
    runtime = sites.current_runtime()
    if runtime is None:
        raise FibError("fib.warmup: dispatch is not enabled")
    names = list(definitions or runtime.db.definitions)
    built: dict[str, list[str]] = {}
    for name in names:
        dispatcher = runtime.dispatcher(name)
        if dispatcher is None:
            continue
        wanted = {n for r in dispatcher.table.for_timing(DEVICE.name).values()
                  for n in r.names[:top]}
        built[name] = sorted(n for n in wanted if not isinstance(runtime.build(n), Exception))
        for values in (axes or {}).get(name, ()):
            key = axes_to_key(dispatcher.definition, dict(values))
            for site in sites.sites_of(name):
                if site.binding is not None:
                    site.binding.warm(key)
    return built


def find_definition(name: str) -> Definition | None:
    """A definition from the active runtime's database, else the built-in catalogue."""
    runtime = sites.current_runtime()
    if runtime is not None and name in runtime.db.definitions:
        return runtime.db.definitions[name]
    from fib_runtime.catalogue import load_catalogue

    return load_catalogue().definitions.get(name)
