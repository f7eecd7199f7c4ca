"""Why a call with given axes is served the way it is (`fib explain`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fib_runtime.dispatch import sites
from fib_runtime.dispatch.dispatcher import VALUE
from fib_runtime.dispatch.runtime import Runtime
from fib_runtime.errors import FibError
from fib_runtime.keys import axes_to_key, key_to_axes
from fib_runtime.schema.provenance import digest_of


@dataclass(frozen=True)
class Explanation:
    definition: str
    hardware_key: str
    axes: dict[str, int]
    measured_axes: dict[str, int] | None  # the measured workload the ranking comes from
    candidates: list[tuple[str, float, str]]  # (solution, latency ms, status here)
    decision: str  # solution name or "fallback"
    reason: str
    unbound: tuple[str, ...] = ()  # candidates ranked on traces that carry no digest

    def __str__(self) -> str:
        lines = [f"definition:  {self.definition}", f"hardware:    {self.hardware_key}",
                 f"axes:        {self.axes}"]
        if self.measured_axes is not None and self.measured_axes != self.axes:
            lines.append(f"measured:    {self.measured_axes} (nearest)")
        for name, latency, status in self.candidates:
            lines.append(f"  {latency:10.4f} ms  {name}  [{status}]")
        if not self.candidates:
            lines.append("  no usable traces for this hardware")
        if self.unbound:
            lines.append(f"unbound:     {', '.join(self.unbound)} (ranked on traces that do "
                         "not name the content they measured)")
        lines.append(f"decision:    {self.decision} ({self.reason})")
        return "\n".join(lines)


def unbound_solutions(runtime: Runtime, definition: str) -> set[str]:
    """Solutions with traces on this hardware that do not name the content they measured
    (flashinfer-bench's own traces): ranked by name only."""
    return {t.solution for t in runtime.db.traces_for(definition, runtime.hardware.key)
            if t.solution is not None and t.evaluation is not None
            and digest_of(t.evaluation) is None}


def explain(definition: str, axes: Mapping[str, int],
            runtime: Runtime | None = None) -> Explanation:
    """The candidates and the decision for a value-returning call of one definition with
    the given axes on this hardware: the dispatcher's own decision, made now if it was not."""
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
    decision = dispatcher.decide(key, VALUE)
    ranking, _, _ = dispatcher.ranking(key)
    candidates = []
    if ranking is not None:
        for name, latency in zip(ranking.names, ranking.latencies_ms, strict=True):
            if name in dispatcher.counters.quarantined:
                status = "quarantined"
            elif not runtime.is_trusted(name):  # not imported: `fib trust` runs it
                status = "untrusted"
            else:
                status = "unavailable" if isinstance(runtime.build(name), Exception) else "ok"
            candidates.append((name, latency, status))
    via = decision.via_key
    unbound = unbound_solutions(runtime, definition)
    return Explanation(definition, runtime.hardware.key, key_to_axes(dispatcher.definition, key),
                       None if via is None else key_to_axes(dispatcher.definition, via),
                       candidates, decision.solution or "fallback", decision.reason,
                       tuple(n for n, _, _ in candidates if n in unbound))
