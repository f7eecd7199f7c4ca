"""Timing regimes, the one registry of their names: how a latency was measured, and which
calls its ranking decides.

A regime is measured by the timer of the same name (`fib_runtime.measure.timing`), stamped on
each trace (`fib_runtime.schema.provenance.TIMING_KEY`) and ranked on its own
(`fib_runtime.ranking`). Under `timing: auto` a call is served the ranking of the regime that
serves its call context; a definition pinned to a regime (`DefinitionConfig.timing`) is served
that regime's ranking in every context. A regime that serves no context is used only when
pinned; `device` is also the ranking every context falls back to when its own has no traces.

Adding a regime is one `register` call here (or in the user's code) and one timer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fib_runtime.errors import FibError

# Where a call runs, as dispatch tells them apart: eagerly, or while a CUDA graph records it.
Context = Literal["eager", "graph"]
CONTEXTS: tuple[Context, ...] = ("eager", "graph")
AUTO = "auto"


@dataclass(frozen=True)
class Regime:
    """A timing regime: its `name` (the trace stamp and the config value), whether it can
    only be measured on a GPU, and the call context whose choices its ranking decides under
    `timing: auto` (None: only when pinned), and its noise floor: the least relative
    difference between two medians that counts as faster (`fib_runtime.ranking.noise`)."""

    name: str
    gpu_only: bool
    serves: Context | None
    description: str
    noise_floor: float = 0.03


REGIMES: dict[str, Regime] = {}


def register(regime: Regime) -> Regime:
    """Add a regime; a name registered twice, or a context served twice, is an error."""
    if regime.name in REGIMES or regime.name == AUTO:
        raise FibError(f"timing regime {regime.name!r} is already registered")
    if regime.serves is not None:
        if regime.serves not in CONTEXTS:
            raise FibError(f"timing regime {regime.name!r}: unknown call context "
                           f"{regime.serves!r} (one of {', '.join(CONTEXTS)})")
        taken = serving(regime.serves)
        if taken is not None:
            raise FibError(f"timing regime {regime.name!r}: context {regime.serves!r} is "
                           f"already served by {taken.name!r}")
    REGIMES[regime.name] = regime
    return regime


def unregister(name: str) -> None:
    """Remove a regime registered in the user's code (a test's teardown); the shipped three
    stay."""
    if name in (DEVICE.name, EAGER.name, GRAPH.name):
        raise FibError(f"timing regime {name!r} is shipped and cannot be removed")
    if REGIMES.pop(name, None) is None:
        raise FibError(f"timing regime {name!r} is not registered")


def names() -> tuple[str, ...]:
    """Every registered regime, in registration order (`device` first)."""
    return tuple(REGIMES)


def choices() -> tuple[str, ...]:
    """What a definition's `timing` may say: `auto` or a regime."""
    return (AUTO, *REGIMES)


def serving(context: Context) -> Regime | None:
    """The regime whose ranking serves calls in `context` under `timing: auto`."""
    return next((r for r in REGIMES.values() if r.serves == context), None)


def for_context(timing: str, context: Context) -> str:
    """The regime whose ranking serves a call in `context` for a definition whose `timing`
    setting is `timing`: the pinned regime in every context, or under `auto` the regime
    serving `context` (device when none does)."""
    if timing != AUTO:
        return timing
    regime = serving(context)
    return DEVICE.name if regime is None else regime.name


def noise_floor(name: str) -> float:
    """A regime's noise floor; an unknown name gets the default (`Regime.noise_floor`)."""
    regime = REGIMES.get(name)
    return Regime.noise_floor if regime is None else regime.noise_floor


def order(name: str) -> tuple[int, str]:
    """A sort key: registered regimes in registration order, then unknown names by name."""
    known = names()
    return (known.index(name) if name in known else len(known), name)


DEVICE = register(Regime(
    "device", gpu_only=False, serves=None,
    description="the kernel alone: CUDA events around one call, L2 flushed, inputs re-filled",
    noise_floor=0.01))
EAGER = register(Regime(
    "eager", gpu_only=False, serves="eager",
    description="back-to-back calls with no sync, the host's launch path included",
    noise_floor=0.03))  # eager times of host-bound calls wander by a few per cent
GRAPH = register(Regime(
    "graph", gpu_only=True, serves="graph",
    description="one call recorded in a CUDA graph and replayed, L2 flushed before each",
    noise_floor=0.01))
