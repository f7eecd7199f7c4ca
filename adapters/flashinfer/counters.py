"""Shared state of the FlashInfer adapter: its counters, its re-entry guard and FlashInfer's
own functions while they are replaced (used by __init__, norm.py, decode.py, originals.py)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

# (function, reason) -> calls that went to FlashInfer unchanged; "routed" counts the calls
# handed to fib-runtime (which counts hits and fallbacks itself, see fib.stats()).
unchanged: Counter[tuple[str, str]] = Counter()
routed: Counter[str] = Counter()
# (owner, attribute) -> FlashInfer's own function, while install() has replaced it
replaced: dict[tuple[Any, str], Any] = {}


def saved(owner: Any, name: str) -> Any:
    """FlashInfer's own `owner.<name>` while the adapter has replaced it, else None."""
    return replaced.get((owner, name))


class _Guard(threading.local):
    """Set while a routed call runs, so that a catalogue solution which itself calls the
    FlashInfer API (the flashinfer_* solutions) reaches FlashInfer, not fib-runtime again.
    A routed decode run sets it to its plan, which the site's fallback reads."""

    active: Any = False


guard = _Guard()


def stats() -> dict[str, Any]:
    """Calls routed to fib-runtime per function, and calls left to FlashInfer by reason."""
    out: dict[str, dict[str, int]] = {}
    for (function, reason), count in unchanged.items():
        out.setdefault(function, {})[reason] = count
    return {"routed": dict(routed), "unchanged": out}


def reset() -> None:
    unchanged.clear()
    routed.clear()
