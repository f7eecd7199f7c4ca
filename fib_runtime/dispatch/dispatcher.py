"""One definition's dispatch: its rankings (one per timing regime), the decision per regime,
key and convention, its counters and its quarantine. Call sites are generated frames bound
to it (see `frames`)."""

from __future__ import annotations

import itertools
import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fib_runtime.build import Built, destination_passing, value_returning
from fib_runtime.dispatch.config import DefinitionConfig
from fib_runtime.dispatch.table import DefinitionTable
from fib_runtime.errors import BuildError, FibError
from fib_runtime.keys import Key, key_expression
from fib_runtime.ranking import DEVICE, Ranking, best_overall, interpolated, nearest_key
from fib_runtime.schema import Definition
from fib_runtime.trust import Untrusted

log = logging.getLogger("fib_runtime.dispatch")

# A call's convention is its argument count: the inputs alone (value-returning), or the
# inputs followed by the outputs (destination-passing).
VALUE, DESTINATION = "value", "destination"
Builder = Callable[[str], "Built | BuildError"]


@dataclass
class Counters:
    """What happened to the calls of one definition (fib.stats())."""

    calls: itertools.count[int] = field(default_factory=itertools.count)  # every call
    nearest: int = 0  # keys resolved to a nearby measured key
    fallbacks: Counter[str] = field(default_factory=Counter)  # calls, by reason
    errors: Counter[str] = field(default_factory=Counter)  # by solution
    quarantined: set[str] = field(default_factory=set)
    # solution -> why it cannot be built here, or why it was built outside the build cache
    build_problems: dict[str, str] = field(default_factory=dict)
    shadow: Counter[str] = field(default_factory=Counter)  # checked / mismatched (shadow.py)

    def as_dict(self) -> dict[str, Any]:
        calls = int(repr(self.calls)[6:-1])  # "count(N)": read without advancing it
        return {"calls": calls, "hits": calls - sum(self.fallbacks.values()),
                "nearest": self.nearest, "fallbacks": dict(self.fallbacks),
                "errors": dict(self.errors), "quarantined": sorted(self.quarantined),
                "build_problems": dict(self.build_problems), "shadow": dict(self.shadow)}


@dataclass(frozen=True)
class Decision:
    """How one key of one definition is served in one convention."""

    solution: str | None  # None: the fallback (the decorated function)
    reason: str  # measured | inherited | interpolated | nearest | best_overall | miss | ...
    via_key: Key | None = None  # the measured key the ranking came from
    call: Callable[..., Any] | None = None  # the solution in the caller's convention
    original: bool = False  # the engine's own function (vouched for by a live site) is `call`
    built: Built | None = None  # the solution `call` runs (where it may run)


class Dispatcher:
    """Per-definition dispatch state inside a runtime; survives reloads of the database."""

    def __init__(self, definition: Definition, table: DefinitionTable,
                 policy: DefinitionConfig, build: Builder) -> None:
        self.definition = definition
        self.key_source = key_expression(definition, "args")  # ShapeError if not readable
        self.n_inputs = len(definition.inputs)
        self.n_outputs = len(definition.outputs)
        self.names = (*definition.inputs, *definition.outputs)
        self.lock = threading.RLock()
        self.counters = Counters()
        self._build = build
        self.table = table
        self.policy = policy
        self.decisions: dict[tuple[str, str, Key], Decision] = {}
        self._via: dict[tuple[str, Key], Key | None] = {}
        self._listeners: list[Callable[[], None]] = []  # bound sites: forget cached choices
        self.generation = 0  # bumped whenever cached choices are forgotten

    # -- state changes ----------------------------------------------------------------------

    def on_change(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` whenever cached choices become stale; returns an unsubscriber."""
        with self.lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self.lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def update(self, table: DefinitionTable, policy: DefinitionConfig) -> None:
        """New measurements (a reload): forget every decision, keep the counters."""
        with self.lock:
            self.table, self.policy = table, policy
            self._forget()

    def _forget(self) -> None:
        self.generation += 1
        self.decisions.clear()
        self._via.clear()
        for listener in list(self._listeners):
            listener()

    # -- decisions --------------------------------------------------------------------------

    def convention(self, n_args: int) -> str | None:
        """The convention of a call with `n_args` positional arguments (None: neither)."""
        if n_args == self.n_inputs:
            return VALUE
        if self.n_outputs and n_args == self.n_inputs + self.n_outputs:
            return DESTINATION
        return None

    def ranking(self, key: Key, timing: str = DEVICE) -> tuple[Ranking | None, Key | None, str]:
        """The ranking that serves `key` in a timing regime, the measured key it came from,
        and why."""
        timing = self.effective(timing)
        rankings = self.table.for_timing(timing)
        if key in rankings:
            inherited = self.table.inherited.get(timing)
            return rankings[key], key, "inherited" if inherited and key in inherited \
                else "measured"
        if not rankings:
            return None, None, "no_traces"
        if self.policy.miss in ("nearest", "interpolate"):
            with self.lock:
                if (timing, key) not in self._via:
                    self._via[(timing, key)] = nearest_key(rankings, key)
                    self.counters.nearest += 1
                via = self._via[(timing, key)]
            if self.policy.miss == "interpolate":
                between = interpolated(rankings, key, timing, self.policy.noise_floor)
                if between is not None:
                    return between, via, "interpolated"
            return rankings[via] if via is not None else None, via, "nearest"
        if self.policy.miss == "best_overall":
            return best_overall(rankings), None, "best_overall"
        return None, None, "miss"

    def serves_only(self, solution: str) -> bool:
        """Every ranking of every regime serves `solution` first, so every key does (measured,
        nearest or interpolated), and a call it refuses has no other candidate either."""
        rankings = [r for by_key in self.table.rankings.values() for r in by_key.values()]
        return bool(rankings) and all(r.names[:1] == (solution,) for r in rankings)

    def effective(self, timing: str) -> str:
        """The regime whose ranking serves `timing`: itself, or device time when it has no
        traces for this definition."""
        return timing if timing in self.table.rankings else DEVICE

    def decide(self, key: Key, convention: str, timing: str = DEVICE) -> Decision:
        """The decision for a key in a convention and a timing regime, made once and kept
        until a change."""
        timing = self.effective(timing)
        decision = self.decisions.get((timing, convention, key))
        if decision is None:
            with self.lock:
                decision = self.decisions.get((timing, convention, key))
                if decision is None:
                    try:
                        decision = self._choose(key, convention, timing=timing)
                    except Exception as exc:  # our own fault: serve with the fallback
                        log.error("%s: no decision for %s (%s-style): %s: %s",
                                  self.definition.name, key, convention,
                                  type(exc).__name__, exc)
                        decision = Decision(None, "internal_error")
                    self.decisions[(timing, convention, key)] = decision
        return decision

    def _choose(self, key: Key, convention: str, exclude: str | None = None,
                timing: str = DEVICE) -> Decision:
        ranking, via, reason = self.ranking(key, timing)
        if ranking is None:
            return Decision(None, reason, via)
        untrusted = False
        for name in ranking.names:
            if name in self.counters.quarantined or name == exclude:
                continue
            built = self._build(name)
            if isinstance(built, BuildError):
                refused = isinstance(built, Untrusted)  # never imported: `fib trust` runs it
                untrusted = untrusted or refused
                self.counters.build_problems[name] = \
                    ("untrusted: " if refused else "unavailable: ") + str(built).partition("\n")[0]
                continue
            if built.original:  # a live site's own function: called as the engine calls it
                return Decision(name, reason, via, self._convention(built, convention),
                                original=True, built=built)
            if built.note is not None:
                self.counters.build_problems[name] = built.note
            try:
                call = self._adapt(built, convention)
            except FibError as exc:  # e.g. scalar outputs cannot be pre-allocated
                log.warning("%s: %s cannot serve %s-style calls: %s", self.definition.name,
                            name, convention, exc)
                continue
            return Decision(name, reason, via, call, built=built)
        if untrusted:  # a candidate was measured but nobody trusted its code
            return Decision(None, "untrusted", via)
        return Decision(None, "unavailable" if ranking.names else "no_passing_solution", via)

    def _convention(self, built: Built, convention: str) -> Callable[..., Any]:
        return (value_returning if convention == VALUE else destination_passing)(
            built, self.definition)

    def _adapt(self, built: Built, convention: str) -> Callable[..., Any]:
        call = self._convention(built, convention)
        if self.policy.validate_outputs:
            from fib_runtime.dispatch.validate import validated

            call = validated(call, self.definition, convention == DESTINATION)
        return call

    # -- failures ---------------------------------------------------------------------------

    def quarantine(self, solution: str) -> None:
        """Stop serving `solution` for this definition (a shadow check found it wrong)."""
        with self.lock:
            if solution not in self.counters.quarantined:
                self.counters.quarantined.add(solution)
                self._forget()

    def failed(self, solution: str, key: Key, convention: str, args: tuple[Any, ...],
               exc: BaseException, timing: str = DEVICE) -> tuple[bool, Any]:
        """A solution raised on a call: count it, quarantine it after enough errors, and
        answer with the next candidate. Returns (answered, result); not answered means the
        caller falls back. Strict mode re-raises.

        Any exception counts, SystemExit and KeyboardInterrupt included: serving never
        fails because of a solution. A Ctrl-C that lands while a solution runs cannot be
        told from one the solution raised, so it is absorbed like a solution error (the
        call is answered by the fallback); the next one reaches the application."""
        if self.policy.strict:
            raise exc
        with self.lock:
            self.counters.errors[solution] += 1
            if self.counters.errors[solution] >= self.policy.quarantine_after and \
                    solution not in self.counters.quarantined:
                self.counters.quarantined.add(solution)
                log.warning("%s: solution %s quarantined after %d errors (last: %s: %s)",
                            self.definition.name, solution, self.counters.errors[solution],
                            type(exc).__name__, exc)
                self._forget()
            try:
                alternative = self._choose(key, convention, exclude=solution, timing=timing)
            except Exception:  # logged by decide() when it happens there too
                alternative = Decision(None, "internal_error")
        if alternative.call is None:
            return False, None
        try:
            return True, alternative.call(*args)
        except BaseException:
            with self.lock:
                self.counters.errors[alternative.solution or ""] += 1
            return False, None

    def stats(self) -> dict[str, Any]:
        return self.counters.as_dict()
