"""The one ranking rule: which measured solutions serve a workload key, fastest first.

Used by dispatch (its decision tables), `fib retune`'s report and `fib explain`, so the
winner a retune prints is the solution dispatch serves.

The rule, per definition, hardware key and timing regime (fib_runtime.regimes; each regime
ranks only its own traces):
- a trace counts for the solution content it measured: one stamped with another digest than
  the current solution's is stale and ignored (named as the reason only where the solution
  has no other trace at that key); one with no digest (flashinfer-bench's own) is bound by
  name only and counts unless a stamped trace of that (solution, workload) exists
  (`measures`);
- the latest counting trace of each (solution, workload) counts (a re-measured workload
  supersedes);
- a trace is usable when it PASSED with a positive latency, its solution is known, admitted
  by the policy and targets this hardware, its workload carries every variable axis, and its
  errors are within the policy's tolerance;
- a solution is a candidate for a key when every latest trace of it at that key is usable;
  its latency there is the median of those traces' `latency_ms`, its spread the largest of
  their spreads (`fib-runtime.spread`, the relative half-IQR of the samples; 0 when unknown);
- a trace that `fib verify` stamped rejected (`fib-runtime.gate`) makes its solution no
  candidate at that key in that regime (the step it runs in was slower with it);
- candidates are ordered by that median, then by name; then the noise rule settles the
  first place. The noise between the fastest candidate F and another C is
  `max(floor, spread(F) + spread(C))`, the floor being the policy's `noise_floor` when it
  sets one (a host noisier than usual), else the regime's (`regimes.noise_floor`); C is
  *tied* with F when `median(C) <= median(F) * (1 + noise)`. Among the tied candidates the
  engine's own function (an original) serves if it is one of them: nothing displaces the
  engine's path unless it is faster by more than the noise. Otherwise the other keys
  speak (`pooled`): over the n measured keys where the tied candidates are all measured,
  only those whose median excess over the fastest of them is within noise/sqrt(n) of the
  lowest stay tied (a difference within one key's noise but the same at most keys is
  real). Then, in every regime but device, where every tied candidate has device traces,
  only those tied in device time too with the one of lowest device time stay tied (device
  time is the most reproducible measurement); of the candidates still tied, the first by
  name serves: which of them a process measured fastest is noise, so two retunes serve
  the same one. `Ranking.note` says when the rule moved a candidate first.
"""

from __future__ import annotations

import contextlib
import math
import statistics
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from fib_runtime import regimes
from fib_runtime.hardware import target_matches
from fib_runtime.keys import Key, axes_to_key
from fib_runtime.original import is_original
from fib_runtime.schema import Definition, Solution, Status, Trace
from fib_runtime.schema.provenance import (
    GATE_REJECTED,
    content_digest,
    digest_of,
    gate_of,
    spread_of,
    timing_of,
)

DEVICE = regimes.DEVICE.name  # the tie-break regime: the most reproducible measurement


class Policy(Protocol):
    """Which solutions and errors a ranking accepts, and the least difference that counts
    as faster (None: the regime's noise floor); a dispatch DefinitionConfig is one."""

    noise_floor: float | None

    def admits(self, solution: str) -> bool: ...

    def within_tolerance(self, abs_error: float, rel_error: float) -> bool: ...


class AcceptAll:
    """The default policy: every solution, any error that the trace itself called PASSED."""

    noise_floor: float | None = None

    def admits(self, solution: str) -> bool:
        return True

    def within_tolerance(self, abs_error: float, rel_error: float) -> bool:
        return True


@dataclass(frozen=True)
class Ranking:
    """Candidates for one key, the one that serves first (see the noise rule), with their
    median latency in ms, their spreads, which are the engine's own functions, and why the
    first is not the fastest (empty when it is)."""

    names: tuple[str, ...]
    latencies_ms: tuple[float, ...]
    spreads: tuple[float, ...] = ()
    originals: frozenset[str] = frozenset()
    note: str = ""

    def spread(self, index: int) -> float:
        return self.spreads[index] if index < len(self.spreads) else 0.0


@dataclass(frozen=True)
class Candidate:
    """One solution's measurements at one key."""

    name: str
    median: float
    spread: float
    original: bool
    device: float | None = None  # its device-time median and spread at the key (tie-break)
    device_spread: float = 0.0


def noise(timing: str, spread_a: float, spread_b: float, floor: float | None = None) -> float:
    """The relative difference two medians must exceed to count as faster (module doc)."""
    if floor is None:
        floor = regimes.noise_floor(timing)
    return max(floor, spread_a + spread_b)


Across = Mapping[Key, Mapping[str, tuple[float, float]]]  # key -> name -> (median, spread)


def settle(candidates: list[Candidate], timing: str, floor: float | None = None,
           across: Across | None = None) -> Ranking:
    """Order candidates by median, then apply the noise rule to the first place; `across`
    (the definition's measured keys in this regime: name -> (median, spread)) lets a
    difference within one key's noise but the same at most keys settle a tie (`pooled`)."""
    ordered = sorted(candidates, key=lambda c: (c.median, c.name))
    note = ""
    if ordered:
        best = ordered[0]
        tied = [c for c in ordered
                if c.median <= best.median * (1.0 + noise(timing, best.spread, c.spread, floor))]
        pick = next((c for c in tied if c.original), None)
        why = "the engine's own function"
        if pick is None:
            why = "the first by name of those tied"
            if across and len(tied) > 1:
                tied, keys = pooled(tied, across, timing, floor)
                if len(tied) == 1:
                    why = f"the fastest over the {keys} keys where they are measured"
            if timing != DEVICE and len(tied) > 1 and all(c.device is not None for c in tied):
                lowest = min(tied, key=lambda c: (c.device, c.name))
                tied = [c for c in tied if c.device <= lowest.device * (  # type: ignore[operator]
                    1.0 + noise(DEVICE, lowest.device_spread, c.device_spread, floor))]
                why += " in device time too"
            pick = min(tied, key=lambda c: c.name)
        if pick is not best:
            margin = noise(timing, best.spread, pick.spread, floor)
            note = (f"kept {pick.name} ({why}): {best.name} is faster by only "
                    f"{pick.median / best.median - 1:.1%}, within the noise {margin:.1%}")
            ordered.remove(pick)
            ordered.insert(0, pick)
    return Ranking(tuple(c.name for c in ordered), tuple(c.median for c in ordered),
                   tuple(c.spread for c in ordered),
                   frozenset(c.name for c in ordered if c.original), note)


def pooled(tied: list[Candidate], across: Across, timing: str, floor: float | None = None
           ) -> tuple[list[Candidate], int]:
    """Of candidates tied at one key, those whose median over the n measured keys where all
    of them are measured, of how far each is above the fastest of them there (in log
    latency), is within the noise of a mean of n measurements (the noise over sqrt(n)) of
    the lowest; and n. A per-call difference smaller than one key's noise (a host-bound
    launch path) shows at most keys; the median is not moved by a few keys where one of
    them is far faster (another regime of sizes)."""
    names = [c.name for c in tied]
    keys = [medians for medians in across.values() if all(n in medians for n in names)]
    if len(keys) < 2:
        return tied, len(keys)
    above: dict[str, list[float]] = {n: [] for n in names}
    for medians in keys:
        fastest = min(medians[n][0] for n in names)
        for n in names:
            above[n].append(math.log(medians[n][0] / fastest))
    score = {n: statistics.median(values) for n, values in above.items()}
    first = min(tied, key=lambda c: (score[c.name], c.name))
    bound = math.sqrt(len(keys))
    return [c for c in tied if score[c.name] - score[first.name] <= math.log1p(
        noise(timing, first.spread, c.spread, floor)) / bound], len(keys)


@dataclass(frozen=True)
class KeyResult:
    """One key's ranking and the solutions measured there that are not candidates."""

    ranking: Ranking
    rejected: dict[str, str]  # solution -> why (a status, or the rule it broke)


def rank(definition: Definition, traces: Iterable[Trace], solutions: Mapping[str, Solution],
         hardware_key: str, policy: Policy | None = None,
         timing: str = DEVICE) -> dict[Key, KeyResult]:
    """Rank the solutions of `definition` measured on `hardware_key` in one timing regime
    (only its traces count; see the module doc)."""
    policy = policy or AcceptAll()
    traces = list(traces)
    by_key, rejected = _measured(definition, traces, solutions, hardware_key, policy, timing)
    device = _measured(definition, traces, solutions, hardware_key, policy, DEVICE)[0] \
        if timing != DEVICE else by_key
    candidates: dict[Key, list[Candidate]] = {}
    for key in by_key.keys() | rejected.keys():
        candidates[key] = []
        for name, samples in by_key[key].items():
            if name in rejected[key]:
                continue
            on_device = device.get(key, {}).get(name)
            candidates[key].append(Candidate(
                name, statistics.median(lat for lat, _ in samples),
                max(spread for _, spread in samples), is_original(solutions.get(name)),
                statistics.median(lat for lat, _ in on_device) if on_device else None,
                max(spread for _, spread in on_device) if on_device else 0.0))
    across = {key: {c.name: (c.median, c.spread) for c in found}
              for key, found in candidates.items()}
    return {key: KeyResult(settle(found, timing, policy.noise_floor, across),
                           dict(rejected[key]))
            for key, found in candidates.items()}


Samples = dict[Key, dict[str, list[tuple[float, float]]]]


def _measured(definition: Definition, traces: list[Trace], solutions: Mapping[str, Solution],
              hardware_key: str, policy: Policy, timing: str
              ) -> tuple[Samples, dict[Key, dict[str, str]]]:
    """Per key: each usable solution's (latency, spread) per latest trace in one regime, and
    the solutions measured there that are not candidates, with why."""
    latest, stale = _latest((t for t in traces if in_regime(t, timing)), solutions)
    by_key: Samples = defaultdict(lambda: defaultdict(list))
    rejected: dict[Key, dict[str, str]] = defaultdict(dict)
    for (name, _), trace in latest.items():
        try:
            key = axes_to_key(definition, trace.workload.axes)
        except (KeyError, TypeError, ValueError):
            continue  # a workload without every variable axis has no key
        problem = _problem(trace, solutions.get(name), hardware_key, policy)
        evaluation = trace.evaluation
        if problem is None and evaluation is not None and evaluation.performance is not None:
            by_key[key][name].append((evaluation.performance.latency_ms,
                                      spread_of(evaluation) or 0.0))
        else:
            rejected[key].setdefault(name, problem or "no latency")
    for (name, _), trace in stale.items():  # said only where nothing else is known of it
        with contextlib.suppress(KeyError, TypeError, ValueError):
            key = axes_to_key(definition, trace.workload.axes)
            if name not in by_key.get(key, {}):
                rejected[key].setdefault(name, "stale: its traces measured other content "
                                         "under this name")
    return by_key, rejected




def measures(digests: Collection[str | None], current: str) -> bool:
    """Do traces stamped with `digests` (None: no digest) of one (solution, workload) measure
    the solution's current content? Yes when one is stamped with it, or when none is stamped
    at all (a name-bound trace); a stamp of other content makes the unstamped ones stale too."""
    return current in digests or all(d is None for d in digests)


def _latest(traces: Iterable[Trace], solutions: Mapping[str, Solution]
            ) -> tuple[dict[tuple[str, str], Trace], dict[tuple[str, str], Trace]]:
    """Per (solution, workload): the latest trace that measures the current content, and
    the pairs measured only with other content (stale)."""
    current: dict[str, str | None] = {}
    bound: dict[tuple[str, str], Trace] = {}
    unbound: dict[tuple[str, str], Trace] = {}
    other: dict[tuple[str, str], Trace] = {}
    for trace in traces:
        name = trace.solution
        if name is None:
            continue
        if name not in current:
            solution = solutions.get(name)
            current[name] = None if solution is None else content_digest(solution)
        pair = (name, trace.workload.uuid)
        digest = None if trace.evaluation is None else digest_of(trace.evaluation)
        if digest is None or current[name] is None:  # unknown solutions are refused later
            unbound[pair] = trace
        elif digest == current[name]:
            bound[pair] = trace
        else:
            other[pair] = trace
    latest = {p: t for p, t in unbound.items() if p not in other}
    latest.update(bound)
    return latest, {p: t for p, t in other.items() if p not in latest}
def in_regime(trace: Trace, timing: str) -> bool:
    """Whether a trace was timed in `timing` (a trace that does not say is device time)."""
    return (timing_of(trace.evaluation) if trace.evaluation is not None else DEVICE) == timing


def timings_in(traces: Iterable[Trace]) -> set[str]:
    """The timing regimes that some trace was measured in."""
    return {timing_of(t.evaluation) for t in traces if t.evaluation is not None}


def _problem(trace: Trace, solution: Solution | None, hardware_key: str,
             policy: Policy) -> str | None:
    """Why a trace cannot rank its solution (None: usable)."""
    evaluation = trace.evaluation
    if evaluation is None:
        return "no evaluation"
    if gate_of(evaluation) == GATE_REJECTED:
        return "rejected by the step gate: " + (evaluation.log or "the step was slower with it")
    if evaluation.status is not Status.PASSED:
        return evaluation.status.value
    if evaluation.performance is None or not evaluation.performance.latency_ms > 0:
        return "no latency"
    if solution is None:
        return "solution not in the database"
    if not policy.admits(solution.name):
        return "not allowed by the dispatch config"
    if not target_matches(solution.spec.target_hardware, hardware_key):
        return f"does not target {hardware_key}"
    correctness = evaluation.correctness
    if correctness is not None and not policy.within_tolerance(
            correctness.max_absolute_error, correctness.max_relative_error):
        return "error above the dispatch tolerance"
    return None


def nearest_key(measured: Iterable[Key], key: Key) -> Key | None:
    """The measured key closest to `key` in log2 space over the axes; ties go to the larger."""
    best: tuple[float, tuple[float, ...]] | None = None
    chosen = None
    logs = [math.log2(max(v, 1)) for v in key]
    for candidate in measured:
        distance = math.fsum((math.log2(max(c, 1)) - v) ** 2
                             for c, v in zip(candidate, logs, strict=True))
        order = (distance, tuple(-c for c in candidate))  # smaller distance, then larger key
        if best is None or order < best:
            best, chosen = order, candidate
    return chosen


def interpolated(rankings: Mapping[Key, Ranking], key: Key, timing: str = DEVICE,
                 floor: float | None = None, pool: bool = True) -> Ranking | None:
    """For a definition with one variable axis and a key between two measured keys: the
    candidates measured at both, ordered by their latency interpolated linearly in
    log(latency) over log(axis). None outside the measured range or with several axes
    (then the nearest key serves). A winner that changes between two measured sizes is
    then chosen by where the key lies between them, not by which one is nearer. Ties are
    settled over `rankings` (`pooled`) unless `pool` is off (a benchmark's old rule)."""
    if len(key) != 1:
        return None
    value = key[0]
    lower = max((k for k in rankings if k[0] < value), default=None)
    upper = min((k for k in rankings if k[0] > value), default=None)
    if lower is None or upper is None:
        return None
    below, above = rankings[lower], rankings[upper]
    low = dict(zip(below.names, below.latencies_ms, strict=True))
    high = dict(zip(above.names, above.latencies_ms, strict=True))
    both = [n for n in low if n in high and low[n] > 0 and high[n] > 0]
    if not both:
        return None
    span = math.log(upper[0]) - math.log(max(lower[0], 1))
    t = (math.log(value) - math.log(max(lower[0], 1))) / span if span > 0 else 0.0
    originals = below.originals | above.originals
    return settle([Candidate(n, math.exp((1 - t) * math.log(low[n]) + t * math.log(high[n])),
                              max(below.spread(below.names.index(n)),
                                  above.spread(above.names.index(n))), n in originals)
                   for n in both], timing, floor, _RankedAcross(rankings) if pool else None)


class _RankedAcross(Mapping[Key, Mapping[str, tuple[float, float]]]):
    """`Across` read from rankings, one key at a time when read: only a tie reads it, so a
    dispatch miss without one does not convert every measured key."""

    def __init__(self, rankings: Mapping[Key, Ranking]) -> None:
        self._rankings = rankings

    def __getitem__(self, key: Key) -> Mapping[str, tuple[float, float]]:
        r = self._rankings[key]
        return {n: (lat, r.spread(i))
                for i, (n, lat) in enumerate(zip(r.names, r.latencies_ms, strict=True))}

    def __iter__(self) -> Iterator[Key]:
        return iter(self._rankings)

    def __len__(self) -> int:
        return len(self._rankings)


def best_overall(rankings: Mapping[Key, Ranking]) -> Ranking | None:
    """Solutions ordered by how many keys they win, then by geometric-mean slowdown."""
    if not rankings:
        return None
    wins: dict[str, int] = defaultdict(int)
    slowdowns: dict[str, list[float]] = defaultdict(list)
    for ranking in rankings.values():
        if not ranking.names:
            continue
        wins[ranking.names[0]] += 1
        best = ranking.latencies_ms[0]
        for name, latency in zip(ranking.names, ranking.latencies_ms, strict=True):
            slowdowns[name].append(math.log(latency / best) if best > 0 else 0.0)
    order = sorted(slowdowns, key=lambda n: (-wins[n], statistics.fmean(slowdowns[n])))
    return Ranking(tuple(order), tuple(math.nan for _ in order))
