"""What a retune did, and per definition the winner of each workload bucket."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from fib_runtime.schema import Definition, Status, Trace


@dataclass(frozen=True)
class Outcome:
    """One evaluation made by this run."""

    definition: str
    workload: str
    solution: str
    status: str
    latency_ms: float | None
    device: str


@dataclass(frozen=True)
class Unusable:
    """A workload that could not be materialised (or whose reference failed): no traces."""

    definition: str
    workload: str
    reason: str


@dataclass(frozen=True)
class Bucket:
    """One workload bucket (values of the variable axes) of a definition, on one device."""

    axes: tuple[tuple[str, int], ...]
    winner: str | None
    latency_ms: float | None
    speedup_vs_reference: float | None
    speedup_vs_runner_up: float | None
    failures: tuple[tuple[str, str], ...]


@dataclass
class RetuneReport:
    """Counts of what ran and the buckets' winners (from every trace of this hardware)."""

    hardware: list[str] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: int = 0
    unusable: list[Unusable] = field(default_factory=list)
    buckets: dict[str, list[Bucket]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Evaluations of this run by status."""
        return dict(Counter(o.status for o in self.outcomes))

    def table(self) -> str:
        """A text table per definition, then one line of totals."""
        lines = []
        for name, buckets in self.buckets.items():
            lines.append(f"{name} on {', '.join(self.hardware)}")
            rows = [[_axes_text(b.axes), b.winner or "-", _num(b.latency_ms, "ms"),
                     _num(b.speedup_vs_reference, "x"), _num(b.speedup_vs_runner_up, "x"),
                     ", ".join(f"{s}: {st}" for s, st in b.failures) or "-"]
                    for b in buckets]
            lines.extend(_render(["workload", "winner", "latency", "vs reference",
                                  "vs runner-up", "failures"], rows))
            lines.append("")
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts().items())) or "none"
        lines.append(f"evaluated: {len(self.outcomes)} ({counts}); already measured: "
                     f"{self.skipped}; workloads unusable: {len(self.unusable)}")
        return "\n".join(lines)


def summarise(definition: Definition, traces: list[Trace], workloads: set[str],
              solutions: set[str]) -> list[Bucket]:
    """Buckets of a definition from its traces on one hardware key.

    The last trace of each (solution, workload) counts; a solution wins a bucket on its mean
    latency over the bucket's workloads, and only if it passed on all of them.
    """
    latest: dict[tuple[str, str], Trace] = {}
    for trace in traces:
        if trace.solution is not None and trace.solution in solutions \
                and trace.workload.uuid in workloads:
            latest[(trace.solution, trace.workload.uuid)] = trace
    grouped: dict[tuple[tuple[str, int], ...], dict[str, list[Trace]]] = defaultdict(
        lambda: defaultdict(list))
    for (solution, _uuid), trace in latest.items():
        axes = tuple((a, trace.workload.axes.get(a, 0)) for a in definition.var_axes)
        grouped[axes][solution].append(trace)
    return [_bucket(axes, per_solution) for axes, per_solution in sorted(grouped.items())]


def _bucket(axes: tuple[tuple[str, int], ...], per_solution: dict[str, list[Trace]]) -> Bucket:
    passed: dict[str, tuple[float, float]] = {}
    failures = []
    for solution, traces in sorted(per_solution.items()):
        evaluations = [t.evaluation for t in traces if t.evaluation is not None]
        bad = [e for e in evaluations if e.status is not Status.PASSED]
        if bad:
            failures.append((solution, bad[0].status.value))
            continue
        perf = [e.performance for e in evaluations if e.performance is not None]
        passed[solution] = (statistics.mean(p.latency_ms for p in perf),
                            statistics.mean(p.reference_latency_ms for p in perf))
    ranked = sorted(passed.items(), key=lambda item: item[1][0])
    if not ranked:
        return Bucket(axes, None, None, None, None, tuple(failures))
    winner, (latency, reference) = ranked[0]
    runner_up = ranked[1][1][0] / latency if len(ranked) > 1 and latency > 0 else None
    return Bucket(axes, winner, latency, reference / latency if latency > 0 else None,
                  runner_up, tuple(failures))


def _axes_text(axes: tuple[tuple[str, int], ...]) -> str:
    return " ".join(f"{a}={v}" for a, v in axes) or "(no var axes)"


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.4g} ms" if unit == "ms" else f"{value:.2f}x"


def _render(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    out = ["  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    out += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return out
