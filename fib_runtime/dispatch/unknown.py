"""Calls of a definition that no database holds: said once, counted.

A typo (`@fib.apply("rmsnorm_h4906")`) or a name the dispatch database lacks would
otherwise fall back to the decorated function forever without a word. Such a site forwards
through `counted`, which counts its calls (`fib.stats()`: fallbacks `unknown_definition`);
the first one logs one warning naming the database and the closest known names (the
database's and the built-in catalogue's), or, for a built-in definition the database lacks,
the command that adds it. Sites of known definitions never pass through here: the hit path
is unchanged.
"""

from __future__ import annotations

import difflib
import itertools
import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger("fib_runtime.dispatch")

REASON = "unknown_definition"
_calls: dict[str, itertools.count[int]] = {}
_said: set[tuple[str, str]] = set()  # (database, name) already warned about
_lock = threading.Lock()


def counted(name: str, target: Callable[..., Any],
            first: Callable[[], None] | None = None) -> Callable[..., Any]:
    """`target`, with each call counted under `name`'s unknown-definition fallbacks;
    `first` runs before the first call counted since dispatch was switched on."""
    with _lock:
        calls = _calls.setdefault(name, itertools.count())
    tick = calls.__next__

    def call(*args: Any, **kwargs: Any) -> Any:
        if not tick() and first is not None:  # atomic under the GIL: one call sees 0
            first()
        return target(*args, **kwargs)

    return call


def stats() -> dict[str, dict[str, Any]]:
    """fib.stats() entries of the unknown names called since dispatch was switched on."""
    entries = {}
    with _lock:
        counts = {name: int(repr(c)[6:-1]) for name, c in _calls.items()}  # "count(N)"
    for name, calls in counts.items():
        entries[name] = {"calls": calls, "hits": 0, "nearest": 0,
                         "fallbacks": {REASON: calls} if calls else {}, "errors": {},
                         "quarantined": [], "build_problems": {}}
    return entries


def forget() -> None:
    """Dispatch was switched off or to another database: the counts start again."""
    with _lock:
        _calls.clear()


def say_once(name: str, root: Path, known: Iterable[str], what: str) -> None:
    """Warn, once per (database, name), that `name` is not in `root`; `what` says what its
    calls do instead. Never raises (serving goes on)."""
    with _lock:
        if (str(root), name) in _said:
            return
        _said.add((str(root), name))
    try:
        log.warning("%s", message(name, root, known, what))
    except Exception as exc:  # the warning is a courtesy: serving never fails for it
        log.warning("fib.apply(%r): not in %s (%s)", name, root, exc)


def message(name: str, root: Path, known: Iterable[str], what: str) -> str:
    """The warning for `name`, absent from the database at `root` whose names are `known`."""
    from fib_runtime.catalogue import load_catalogue

    built_in = set(load_catalogue().definitions)
    head = f"fib.apply({name!r}): the database {root} holds no definition of that name; {what}"
    if name in built_in:
        return (f"{head}. It is a built-in definition: `fib catalogue install {root}` adds "
                "it (then capture and `fib retune` measure its solutions)")
    close = difflib.get_close_matches(name, sorted(set(known) | built_in), n=3, cutoff=0.6)
    hint = f"closest names: {', '.join(close)}" if close else "no known name is close to it"
    return f"{head}. A typo? {hint}"
