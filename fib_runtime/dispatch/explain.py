"""Why a call with given axes is served the way it is (`fib explain`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from fib_runtime.dispatch import sites
from fib_runtime.dispatch.dispatcher import VALUE, Dispatcher
from fib_runtime.dispatch.runtime import Runtime
from fib_runtime.errors import FibError
from fib_runtime.keys import Key, axes_to_key, key_to_axes
from fib_runtime.original import is_original, untimeable_reason
from fib_runtime.regimes import DEVICE
from fib_runtime.schema import Trace
from fib_runtime.schema.provenance import GATE_REJECTED, digest_of, gate_of, timing_of
from fib_runtime.trust import Untrusted

ORIGINAL_SERVED = ("the engine's own (decorated) function is the fastest candidate measured "
                   "here, so dispatch calls it directly")


@dataclass(frozen=True)
class Explanation:
    definition: str
    hardware_key: str
    axes: dict[str, int]
    measured_axes: dict[str, int] | None  # the measured workload the ranking comes from
    candidates: list[tuple[str, float, str]]  # (solution, latency ms, status here)
    decision: str  # solution name or "fallback"
    reason: str
    timing: str = DEVICE.name  # the regime whose ranking decided
    notes: tuple[str, ...] = ()
    unbound: tuple[str, ...] = ()  # candidates ranked on traces that carry no digest

    def __str__(self) -> str:
        lines = [f"definition:  {self.definition}", f"hardware:    {self.hardware_key}",
                 f"axes:        {self.axes}", f"timing:      {self.timing}"]
        if self.measured_axes is not None and self.measured_axes != self.axes:
            how = "; latencies interpolated between the measured keys around it" \
                if self.reason == "interpolated" else ""
            lines.append(f"measured:    {self.measured_axes} (nearest{how})")
        for name, latency, status in self.candidates:
            lines.append(f"  {latency:10.4f} ms  {name}  [{status}]")
        if not self.candidates:
            lines.append("  no usable traces for this hardware")
        if self.unbound:
            lines.append(f"unbound:     {', '.join(self.unbound)} (ranked on traces that do "
                         "not name the content they measured)")
        lines.append(f"decision:    {self.decision} ({self.reason})")
        lines.extend(f"note:        {note}" for note in self.notes)
        return "\n".join(lines)


def unbound_solutions(runtime: Runtime, definition: str) -> set[str]:
    """Solutions with traces on this hardware that do not name the content they measured
    (flashinfer-bench's own traces): ranked by name only."""
    traces = runtime.measured().traces_for(definition, runtime.hardware.key)
    return {t.solution for t in traces
            if t.solution is not None and t.evaluation is not None
            and digest_of(t.evaluation) is None}


def traces_at(runtime: Runtime, definition: str, key: tuple[int, ...],
              regime: str) -> Iterator[Trace]:
    """The solution traces of `definition` at `key` in timing `regime` on this hardware."""
    spec = runtime.db.definitions[definition]
    for trace in runtime.measured().traces_for(definition, runtime.hardware.key):
        if trace.solution is None or trace.evaluation is None or \
                timing_of(trace.evaluation) != regime:
            continue
        try:
            if axes_to_key(spec, dict(trace.workload.axes)) == key:
                yield trace
        except (KeyError, TypeError, ValueError):
            continue


def gate_notes(runtime: Runtime, definition: str, key: tuple[int, ...],
               regime: str) -> list[str]:
    """Why `fib verify` pinned this key to the original: one line per rejected solution."""
    notes = {}
    for trace in traces_at(runtime, definition, key, regime):
        evaluation = trace.evaluation
        if evaluation is not None and gate_of(evaluation) == GATE_REJECTED:
            notes[trace.solution] = (f"{trace.solution} is not served here: rejected by the "
                                     f"step gate: {evaluation.log or ''}")
    return list(notes.values())


def inherited_from(dispatcher: Dispatcher, via: Key | None, timing: str) -> str | None:
    """The GPU model whose ranking serves the measured key `via`, None when it is this one's."""
    if via is None:
        return None
    return dispatcher.table.inherited.get(dispatcher.effective(timing), {}).get(via)


def explain(definition: str, axes: Mapping[str, int],
            runtime: Runtime | None = None, timing: str | None = None) -> Explanation:
    """The candidates and the decision for a value-returning call of one definition with
    the given axes on this hardware, in a timing regime (default: the one an eager call
    uses): the dispatcher's own decision, made now if it was not."""
    runtime = runtime or sites.current_runtime()
    if runtime is None:
        raise FibError("fib explain: dispatch is not enabled (enable_apply or pass a runtime)")
    dispatcher = runtime.dispatcher(definition)
    if dispatcher is None:
        raise FibError(f"definition '{definition}' is not in {runtime.root}")
    try:
        key = axes_to_key(dispatcher.definition, dict(axes))
    except KeyError as exc:
        raise FibError(f"{definition}: missing axis {exc}; variable axes are "
                       f"{', '.join(dispatcher.definition.var_axes)}") from None
    timing = timing or dispatcher.policy.regime("eager")
    decision = dispatcher.decide(key, VALUE, timing)
    ranking, _, _ = dispatcher.ranking(key, timing)
    if dispatcher.effective(timing) != timing:
        timing = f"{timing} (no {timing} traces: device time)"
    candidates = []
    if ranking is not None:
        for name, latency in zip(ranking.names, ranking.latencies_ms, strict=True):
            built = None if name in dispatcher.counters.quarantined else runtime.build(name)
            if built is None:
                status = "quarantined"
            elif isinstance(built, Untrusted):
                status = "untrusted"  # never imported: `fib trust` runs it
            else:
                status = "unavailable" if isinstance(built, Exception) else "ok"
            candidates.append((name, latency, status))
    via = decision.via_key
    unbound = unbound_solutions(runtime, definition)
    notes = [ORIGINAL_SERVED] if decision.original else []
    sibling = inherited_from(dispatcher, via, timing.partition(" ")[0])
    if sibling is not None:
        notes.append(f"ranking inherited from {sibling}: {runtime.hardware.key} has no "
                     f"traces at {'this key' if via == key else 'the key it came from'} yet "
                     "(the inherit policy); fib retune here replaces it")
    if ranking is not None and ranking.note:
        notes.append(f"noise rule: {ranking.note}")
    notes.extend(gate_notes(runtime, definition, key, dispatcher.effective(
        timing.partition(" ")[0])))
    for solution in runtime.db.solutions_for(definition):
        why = untimeable_reason(solution)
        if why is not None:
            notes.append(f"the original {solution.name} is not a candidate: it cannot be "
                         f"timed: {why}")
        elif is_original(solution) and solution.name not in {c[0] for c in candidates}:
            notes.append(f"the original {solution.name} has no usable trace here yet "
                         "(run fib retune)")
    return Explanation(definition, runtime.hardware.key, key_to_axes(dispatcher.definition, key),
                       None if via is None else key_to_axes(dispatcher.definition, via),
                       candidates, decision.solution or "fallback", decision.reason, timing,
                       tuple(notes), tuple(n for n, _, _ in candidates if n in unbound))
