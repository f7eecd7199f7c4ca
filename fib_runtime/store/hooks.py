"""What the store tells the layers above it, and asks them, without importing them.

The store records; it decides nothing about what may run. `fib_runtime/__init__` registers
trust's side of each hook, so the store never imports the policy:

- Own writes: a solution or definition that this process's fib writes itself (not one
  copied from another database, not one it read) is announced to each listener (trust
  remembers it by digest). A listener must not raise (`remember` never does).
- Copies: before `merge` writes anything, each check sees the destination and the sources
  and may refuse the whole merge by raising (trust refuses one that would make code nobody
  trusted run in a folder trusted as such).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from fib_runtime.schema import Definition, Solution

OwnWritesListener = Callable[[Sequence[Solution], Sequence[Definition]], object]
CopyCheck = Callable[[Any, Sequence[Any]], None]  # (dest, sources): TraceDBs (store.db uses
# this module, so it is not imported here)
_listeners: list[OwnWritesListener] = []
_copy_checks: list[CopyCheck] = []


def listen_to_own_writes(listener: OwnWritesListener) -> None:
    """Call `listener(solutions, definitions)` for the records this process writes itself."""
    if listener not in _listeners:
        _listeners.append(listener)


def announce_own_writes(solutions: Iterable[Solution] = (),
                        definitions: Iterable[Definition] = ()) -> None:
    """Tell every listener that this process wrote these records itself (one call for all:
    a batch costs the listener one write)."""
    sols, defs = tuple(solutions), tuple(definitions)
    if sols or defs:
        for listener in tuple(_listeners):
            listener(sols, defs)


def check_copies_with(check: CopyCheck) -> None:
    """Call `check(dest, sources)` before a merge writes anything; it raises to refuse."""
    if check not in _copy_checks:
        _copy_checks.append(check)


def check_copies(dest: Any, sources: Sequence[Any]) -> None:
    """Run every registered check (the first refusal propagates; nothing is written)."""
    for check in tuple(_copy_checks):
        check(dest, sources)
