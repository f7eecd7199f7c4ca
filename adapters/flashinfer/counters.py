"""Shared state of the FlashInfer adapter: its counters, its re-entry guard and FlashInfer's
own functions while they are replaced (used by __init__, norm.py, decode.py, originals.py)."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from typing import Any

FUNCTIONS = ("rmsnorm", "fused_add_rmsnorm", "silu_and_mul", "decode.run",
             "prefill.paged.run", "prefill.ragged.run", "mla.run",
             "top_k_sampling_from_probs", "top_k_top_p_sampling_from_probs",
             "top_p_sampling_from_probs")
# (function, reason) -> calls that went to FlashInfer unchanged; `routed` counts the calls
# handed to fib-runtime per function (which counts hits and fallbacks itself, see
# fib.stats()): `next(routed[name])` on the routed path, cheaper than a Counter's `+=`.
unchanged: Counter[tuple[str, str]] = Counter()
routed: dict[str, itertools.count[int]] = {name: itertools.count() for name in FUNCTIONS}
# (owner, attribute) -> FlashInfer's own function, while install() has replaced it
replaced: dict[tuple[Any, str], Any] = {}


def saved(owner: Any, name: str) -> Any:
    """FlashInfer's own `owner.<name>` while the adapter has replaced it, else None."""
    return replaced.get((owner, name))


# Set while a routed norm or activation call runs, for the same reason as `guard` below: a
# plain flag (one list item) rather than a thread-local, as it is read on every call. Another
# thread's call made meanwhile goes to FlashInfer's own function (the same result, unrouted).
norm_busy = [False]


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
    counts = {name: int(repr(count)[6:-1]) for name, count in routed.items()}  # "count(N)"
    return {"routed": {name: n for name, n in counts.items() if n}, "unchanged": out}


def reset() -> None:
    unchanged.clear()
    for name in FUNCTIONS:
        routed[name] = itertools.count()
