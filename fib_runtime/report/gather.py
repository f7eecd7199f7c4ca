"""What `fib report` shows, gathered from a database without drawing anything.

One panel per (definition, hardware key, timing regime): every solution's median latency at
each measured workload key and the dispatched choice there -- what `fib_runtime.ranking`
ranks first when fed the traces of that regime only, the rule dispatch serves by. Solutions
whose author is `ORIGINAL_AUTHOR` stand for the engine's own function ("the original").

Each point's spread is what its traces say of their samples: the relative half-width of the
interquartile range of the runs (or eager rounds) whose median the trace's `latency_ms` is,
read from `evaluation.environment.libs["fib-runtime.spread"]` (provenance.spread_of, stamped
by retune); a trace without it has no spread, and none is drawn.

The x axis of a panel's plot is its one variable axis; with several, the one taking the most
distinct values across the measured keys (ties: the first in the definition's order). Each
combination of the other variable axes is drawn as its own subplot (the most measured
first, at most `MAX_GROUPS`); the table always lists every key.
"""

from __future__ import annotations

import inspect
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from fib_runtime import regimes
from fib_runtime.errors import FibError
from fib_runtime.keys import Key, axes_to_key
from fib_runtime.original import untimeable_reason
from fib_runtime.ranking import rank
from fib_runtime.report.held_out import HeldOutPoint
from fib_runtime.schema import Definition, Solution, Trace
from fib_runtime.schema.provenance import ORIGINAL_AUTHOR, spread_of, timing_of
from fib_runtime.schema.trace import Status
from fib_runtime.store import TraceDB

MAX_GROUPS = 6  # subplots per panel (combinations of the non-x variable axes)
Axes = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Row:
    """One measured workload key of a panel: the dispatched choice and the original."""

    axes: Axes
    dispatched: str | None
    latency_ms: float | None
    original: str | None  # the fastest original measured here (None: none ranked)
    original_ms: float | None
    original_note: str  # why the original has no latency here ("" when it has one)
    candidates: int
    not_ranked: tuple[tuple[str, str], ...]  # (solution, why)

    @property
    def speedup(self) -> float | None:
        """The original's latency over the dispatched one's (>1: dispatch is faster)."""
        if self.original_ms is None or not self.latency_ms:
            return None
        return self.original_ms / self.latency_ms


@dataclass(frozen=True)
class Group:
    """The keys of one subplot: the non-x variable axes fixed at `fixed`."""

    fixed: Axes
    keys: tuple[Key, ...]


@dataclass(frozen=True)
class HeldOutRow:
    """One held-out size: the dispatched call against the fastest solution timed there."""

    axes: Axes
    dispatched: str | None
    dispatched_ms: float | None
    fastest: str
    fastest_ms: float

    @property
    def ratio(self) -> float | None:
        """Dispatched latency over the fastest (1.0: dispatch picked the fastest)."""
        return None if self.dispatched_ms is None else self.dispatched_ms / self.fastest_ms


@dataclass
class Panel:
    """One definition on one hardware key in one timing regime."""

    definition: Definition
    hardware: str
    regime: str
    rows: list[Row]
    latencies: dict[str, dict[Key, float]]  # solution -> key -> median latency (ms)
    originals: frozenset[str]
    # solution -> key -> relative spread of the samples (only where the traces say it)
    spreads: dict[str, dict[Key, float]] = field(default_factory=dict)
    held_out: list[HeldOutPoint] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.definition.name} on {self.hardware}, {self.regime} timing"

    @property
    def var_axes(self) -> tuple[str, ...]:
        return self.definition.var_axes

    def keys(self) -> list[Key]:
        return [tuple(v for _, v in row.axes) for row in self.rows]

    def dispatched(self) -> dict[Key, str]:
        """The dispatched solution at every key where one is ranked."""
        return {key: row.dispatched for key, row in zip(self.keys(), self.rows, strict=True)
                if row.dispatched is not None}

    def x_axis(self) -> str | None:
        """The variable axis on the x axis (see the module doc); None without any."""
        if not self.var_axes:
            return None
        distinct = [len({key[i] for key in self.keys()}) for i in range(len(self.var_axes))]
        return self.var_axes[max(range(len(distinct)), key=lambda i: (distinct[i], -i))]

    def groups(self) -> list[Group]:
        """Every combination of the non-x variable axes, the most measured first."""
        x = self.x_axis()
        if x is None:
            return []
        others = [i for i, a in enumerate(self.var_axes) if a != x]
        by_fixed: dict[Axes, list[Key]] = defaultdict(list)
        for key in self.keys():
            by_fixed[tuple((self.var_axes[i], key[i]) for i in others)].append(key)
        order = sorted(by_fixed, key=lambda f: (-len(by_fixed[f]), f))
        return [Group(fixed, tuple(by_fixed[fixed])) for fixed in order]

    def plot_problem(self) -> str | None:
        """Why this panel cannot be drawn (None: it can)."""
        if not self.var_axes:
            return "no variable axis, nothing to plot against (see the table)"
        if not self.latencies:
            failures = Counter(why for row in self.rows for _, why in row.not_ranked)
            return "only failures: " + ", ".join(f"{why} x{n}" for why, n in
                                                 sorted(failures.items()))
        return None

    def held_out_rows(self) -> list[HeldOutRow]:
        """Per held-out size, the dispatched call against the fastest solution timed."""
        by_axes: dict[Axes, list[HeldOutPoint]] = defaultdict(list)
        for point in self.held_out:
            by_axes[point.axes].append(point)
        rows = []
        for axes, points in sorted(by_axes.items()):
            fastest = min(points, key=lambda p: (p.latency_ms, p.solution))
            chosen = next((p for p in points if p.dispatched), None)
            rows.append(HeldOutRow(axes, chosen.solution if chosen else None,
                                   chosen.latency_ms if chosen else None,
                                   fastest.solution, fastest.latency_ms))
        return rows


@dataclass(frozen=True)
class Skipped:
    """Something that could not be plotted, and why."""

    definition: str
    hardware: str | None
    regime: str | None
    reason: str

    @property
    def where(self) -> str:
        parts = [self.definition, self.hardware and f"on {self.hardware}",
                 self.regime and f"{self.regime} timing"]
        return " ".join(p for p in parts if p)


@dataclass
class Overview:
    """Every panel of a database, and what could not be shown."""

    panels: list[Panel] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    traces: int = 0  # benchmark traces looked at


def gather(db: TraceDB, definitions: Sequence[str] | None = None,
           held_out: Iterable[HeldOutPoint] = ()) -> Overview:
    """The panels of `definitions` (default: every definition of the database)."""
    unknown = [n for n in definitions or () if n not in db.definitions]
    if unknown:
        raise FibError(f"{db.root}: unknown definition(s): {', '.join(unknown)}")
    names = list(dict.fromkeys(definitions)) if definitions else sorted(db.definitions)
    points: dict[tuple[str, str, str], list[HeldOutPoint]] = defaultdict(list)
    for point in held_out:
        points[(point.definition, point.hardware, point.timing)].append(point)
    overview = Overview()
    found: dict[str, tuple[list[Panel], list[Skipped]]] = {}
    wanted = set(names)
    for name in db.each_definition():  # one definition's traces in memory at a time
        if name in wanted:
            found[name] = _definition_panels(db, name, points, overview)
    for name in names:
        panels, skipped = found.get(name, ([], [Skipped(name, None, None, _NO_TRACES)]))
        overview.panels.extend(panels)
        overview.skipped.extend(skipped)
    for (name, key, regime), rest in sorted(points.items()):
        if name not in db.definitions and not definitions:
            overview.skipped.append(Skipped(name, key, regime, f"{len(rest)} held-out points "
                                            "of a definition not in the database"))
        elif name in names:
            overview.skipped.append(Skipped(name, key, regime, f"{len(rest)} held-out points "
                                            "but no traces of this hardware and regime"))
    return overview


_NO_TRACES = "no traces (run `fib retune` first)"


def _definition_panels(db: TraceDB, name: str,
                       points: dict[tuple[str, str, str], list[HeldOutPoint]],
                       overview: Overview) -> tuple[list[Panel], list[Skipped]]:
    """The panels of one definition (its traces loaded), and what could not be drawn;
    its held-out points are taken from `points`."""
    definition = db.definitions[name]
    hardware = sorted(db.hardware_keys(name))
    panels: list[Panel] = []
    skipped = [] if hardware else [Skipped(name, None, None, _NO_TRACES)]
    for key in hardware:
        traces = db.traces_for(name, key)
        overview.traces += len(traces)
        by_regime: dict[str, list[Trace]] = defaultdict(list)
        for trace in traces:
            by_regime[timing_of(trace.evaluation)].append(trace)  # type: ignore[arg-type]
        for regime in sorted(by_regime, key=regimes.order):
            panel = _panel(definition, key, regime, by_regime[regime], db.solutions)
            if panel is None:
                skipped.append(Skipped(
                    name, key, regime, f"{len(by_regime[regime])} traces, none with "
                    f"every variable axis ({', '.join(definition.var_axes)})"))
                continue
            panel.held_out = points.pop((name, key, regime), [])
            panels.append(panel)
    return panels, skipped


def regime_argument(regime: str) -> dict[str, str]:
    """`timing=regime` where `rank` selects the traces of one regime itself (the regime work
    adds that argument, defaulting to device); nothing where it ranks whatever it is given."""
    return {"timing": regime} if "timing" in inspect.signature(rank).parameters else {}


def _panel(definition: Definition, hardware: str, regime: str, traces: list[Trace],
           solutions: dict[str, Solution]) -> Panel | None:
    """The panel of one regime's traces (None: no trace gives a workload key)."""
    results = rank(definition, traces, solutions, hardware, **regime_argument(regime))
    if not results:
        return None
    originals = frozenset(s.name for s in solutions.values()
                          if s.definition == definition.name and s.author == ORIGINAL_AUTHOR)
    latencies: dict[str, dict[Key, float]] = defaultdict(dict)
    rows = []
    for key, result in sorted(results.items()):
        ranking = result.ranking
        for name, latency in zip(ranking.names, ranking.latencies_ms, strict=True):
            latencies[name][key] = latency
        ranked_originals = [n for n in ranking.names if n in originals]
        original = ranked_originals[0] if ranked_originals else None
        note = "" if original is not None else _why_no_original(
            originals, result.rejected, solutions, regime)
        rows.append(Row(
            axes=tuple(zip(definition.var_axes, key, strict=True)),
            dispatched=ranking.names[0] if ranking.names else None,
            latency_ms=ranking.latencies_ms[0] if ranking.names else None,
            original=original,
            original_ms=latencies[original][key] if original else None,
            original_note=note, candidates=len(ranking.names),
            not_ranked=tuple(sorted(result.rejected.items()))))
    return Panel(definition, hardware, regime, rows, dict(latencies), originals,
                 spreads=_spreads(definition, traces, latencies))


def _why_no_original(originals: frozenset[str], rejected: dict[str, str],
                     solutions: dict[str, Solution], regime: str) -> str:
    """Why no original has a latency at a key: refused there, never timeable, or no trace."""
    if not originals:
        return "no original"
    reasons = []
    for name in sorted(originals):
        untimeable = untimeable_reason(solutions[name])
        if name in rejected:
            reasons.append(f"{name}: {rejected[name]}")
        elif untimeable is not None:
            reasons.append(f"{name} is not timed: {untimeable}")
        else:
            reasons.append(f"{name}: no {regime}-timing trace here; `fib retune --timing "
                           f"{regime}` measures it")
    return "; ".join(reasons)


def _spreads(definition: Definition, traces: list[Trace],
             latencies: dict[str, dict[Key, float]]) -> dict[str, dict[Key, float]]:
    """Per ranked (solution, key): the median spread of its passed traces that carry one."""
    found: dict[tuple[str, Key], list[float]] = defaultdict(list)
    for trace in traces:
        evaluation = trace.evaluation
        if evaluation is None or trace.solution not in latencies or \
                evaluation.status is not Status.PASSED:
            continue
        spread = spread_of(evaluation)
        if spread is None:
            continue
        try:
            key = axes_to_key(definition, trace.workload.axes)
        except (KeyError, TypeError, ValueError):
            continue
        if key in latencies[trace.solution]:
            found[(trace.solution, key)].append(spread)
    spreads: dict[str, dict[Key, float]] = defaultdict(dict)
    for (name, key), values in found.items():
        spreads[name][key] = statistics.median(values)
    return dict(spreads)
