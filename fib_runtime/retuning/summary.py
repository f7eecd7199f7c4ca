"""What a retune did, and per definition the winner of each workload bucket (its summary,
printed by `fib retune`; `fib report` is the separate overview of a database)."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from fib_runtime.keys import Key, axes_to_key
from fib_runtime.original import is_original
from fib_runtime.ranking import in_regime, rank
from fib_runtime.render import render_table
from fib_runtime.schema import Definition, Solution, Trace
from fib_runtime.store import TraceDB


@dataclass(frozen=True)
class Outcome:
    """One evaluation made by this run."""

    definition: str
    workload: str
    solution: str
    status: str
    latency_ms: float | None
    device: str
    timing: str = "device"


@dataclass(frozen=True)
class Unusable:
    """A workload that could not be materialised (or whose reference failed): no traces."""

    definition: str
    workload: str
    reason: str


@dataclass(frozen=True)
class Bucket:
    """One workload key (values of the variable axes) of a definition, on one hardware key:
    the winner by the ranking rule dispatch uses (fib_runtime.ranking)."""

    hardware: str
    axes: tuple[tuple[str, int], ...]
    winner: str | None
    latency_ms: float | None
    speedup_vs_reference: float | None
    speedup_vs_runner_up: float | None
    failures: tuple[tuple[str, str], ...]
    timing: str = "device"


@dataclass
class RetuneSummary:
    """Counts of what ran and the buckets' winners (from every trace of this hardware)."""

    hardware: list[str] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: int = 0
    unusable: list[Unusable] = field(default_factory=list)
    buckets: dict[str, list[Bucket]] = field(default_factory=dict)
    untrusted: list[str] = field(default_factory=list)  # not run: nobody trusted their code
    notes: list[str] = field(default_factory=list)  # regimes or originals not measured
    deferred: int = 0  # evaluations left for the next retune (the budget was spent)
    traffic: tuple[int, int] | None = None  # (captured calls of keys measured here, all)

    def counts(self) -> dict[str, int]:
        """Evaluations of this run by status."""
        return dict(Counter(o.status for o in self.outcomes))

    def table(self) -> str:
        """A text table per definition, then one line of totals."""
        lines = []
        for name, buckets in self.buckets.items():
            lines.append(f"{name} on {', '.join(self.hardware)}")
            rows = [[b.hardware, b.timing, _axes_text(b.axes), b.winner or "-",
                     _num(b.latency_ms, "ms"),
                     _num(b.speedup_vs_reference, "x"), _num(b.speedup_vs_runner_up, "x"),
                     ", ".join(f"{s}: {st}" for s, st in b.failures) or "-"]
                    for b in buckets]
            lines.append(render_table(["hardware", "timing", "workload", "winner", "latency",
                                       "vs reference", "vs runner-up", "not ranked"], rows,
                                      indent=2))
            lines.append("")
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts().items())) or "none"
        lines.append(f"evaluated: {len(self.outcomes)} ({counts}); already measured: "
                     f"{self.skipped}; workloads unusable: {len(self.unusable)}")
        if self.deferred:
            lines.append(f"left for the next retune (budget spent): {self.deferred} "
                         "evaluations")
        if self.traffic is not None and self.traffic[1]:
            covered, calls = self.traffic
            lines.append(f"captured calls whose key is measured here: {covered / calls:.1%} "
                         f"({covered} of {calls})")
        if self.untrusted:
            lines.append(f"not run, untrusted: {len(self.untrusted)} "
                         f"({', '.join(self.untrusted)}); `fib trust DB` (or --author, "
                         "--solution) trusts them")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


def fill_buckets(summary: RetuneSummary, db: TraceDB, definitions: Iterable[str],
                 hardware_keys: Collection[str], timings: Sequence[str]) -> None:
    """The summary's buckets of each definition, from every trace of these hardware keys
    (read one definition and key at a time when the database was opened without traces)."""
    record_files = None if db.traces_loaded else db.record_files()
    for name in dict.fromkeys(definitions):
        definition = db.definitions[name]
        summary.buckets[name] = []
        for key in sorted(hardware_keys):
            traces = db.stored_traces(name, key, record_files)
            summary.buckets[name].extend(
                bucket for timing in timings
                for bucket in summarise(definition, traces, db.solutions, key, timing))


def summarise(definition: Definition, traces: Sequence[Trace],
              solutions: Mapping[str, Solution], hardware_key: str,
              timing: str = "device") -> list[Bucket]:
    """The buckets of a definition from its traces on one hardware key in one timing regime,
    ranked as dispatch ranks them (its default policy)."""
    buckets = []
    results = rank(definition, traces, solutions, hardware_key, timing=timing)
    references = _reference_latencies(definition, [t for t in traces if in_regime(t, timing)])
    for key, result in sorted(results.items()):
        axes = tuple(zip(definition.var_axes, key, strict=True))
        failures = tuple(sorted(result.rejected.items()))
        ranking = result.ranking
        if not ranking.names:
            buckets.append(Bucket(hardware_key, axes, None, None, None, None, failures, timing))
            continue
        latency = ranking.latencies_ms[0]
        reference = references.get(key)
        runner_up = ranking.latencies_ms[1] / latency if len(ranking.names) > 1 and \
            latency > 0 else None
        buckets.append(Bucket(hardware_key, axes, ranking.names[0], latency,
                              reference / latency if reference and latency > 0 else None,
                              runner_up, failures, timing))
    return buckets


def _reference_latencies(definition: Definition, traces: Sequence[Trace]) -> dict[Key, float]:
    """Per key, the median reference latency recorded by its PASSED traces."""
    found: dict[Key, list[float]] = {}
    for trace in traces:
        performance = trace.evaluation.performance if trace.evaluation else None
        if performance is None or not all(a in trace.workload.axes for a in definition.var_axes):
            continue
        found.setdefault(axes_to_key(definition, trace.workload.axes), []).append(
            performance.reference_latency_ms)
    return {key: statistics.median(values) for key, values in found.items()}


def _axes_text(axes: tuple[tuple[str, int], ...]) -> str:
    return " ".join(f"{a}={v}" for a, v in axes) or "(no var axes)"


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.4g} ms" if unit == "ms" else f"{value:.2f}x"


def nothing_to_compare(db: TraceDB, definitions: Iterable[str] | None) -> list[str]:
    """A note per definition with captured workloads and no solution but the original (a
    database captured into without the catalogue), saying what to run."""
    names = sorted(db.definitions) if definitions is None else list(dict.fromkeys(definitions))
    lacking = [n for n in names if db.workloads_for(n)
               and all(is_original(s) for s in db.solutions_for(n))]
    if not lacking:
        return []
    from fib_runtime.catalogue import load_catalogue
    from fib_runtime.families import family_of

    generated = [db.definitions[n] for n in lacking if family_of(db.definitions[n])]
    shipped = {s.definition for s in load_catalogue(generated=generated).solutions}
    notes = []
    for name in lacking:
        held = "no solution for it but the original, so retune has nothing to compare it " \
            "with" if db.solutions_for(name) else "no solution for it"
        todo = f"`fib catalogue install {db.root}` adds the shipped solutions" \
            if name in shipped else \
            "and the built-in catalogue has none: add one (`TraceDB.add_solution`)"
        notes.append(f"{name}: {db.root} holds {held}{':' if name in shipped else ','} {todo}; "
                     "then retune again")
    return notes
