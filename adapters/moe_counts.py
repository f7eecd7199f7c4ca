"""What the engine adapters count of the MoE layers' expert calls: calls routed to
fib-runtime per (engine, definition), and calls left to the engine per (engine, reason).

A routed call is counted again by fib-runtime itself (hits, fallbacks: `fib.stats()`); a call
left to the engine never reaches fib-runtime, so this is the only place it shows. An expert
call is milliseconds of GPU work: a Counter increment per call is noise next to it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

routed: Counter[tuple[str, str]] = Counter()  # (engine, definition) -> calls routed
unchanged: Counter[tuple[str, str]] = Counter()  # (engine, reason) -> calls left to the engine


def stats() -> dict[str, Any]:
    """{"routed": {engine: {definition: n}}, "unchanged": {engine: {reason: n}}}."""
    out: dict[str, Any] = {"routed": {}, "unchanged": {}}
    for kind, counter in (("routed", routed), ("unchanged", unchanged)):
        for (engine, key), count in sorted(counter.items()):
            out[kind].setdefault(engine, {})[key] = count
    return out


def reset() -> None:
    routed.clear()
    unchanged.clear()
