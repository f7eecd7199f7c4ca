"""Why a call with given axes is served the way it is (`fib explain`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fib_runtime.dispatch import sites
from fib_runtime.dispatch.keys import axes_to_key, key_to_axes
from fib_runtime.dispatch.runtime import Runtime
from fib_runtime.errors import FibError


@dataclass(frozen=True)
class Explanation:
    definition: str
    hardware_key: str
    axes: dict[str, int]
    measured_axes: dict[str, int] | None  # the measured workload the ranking comes from
    candidates: list[tuple[str, float, str]]  # (solution, latency ms, status here)
    decision: str  # solution name or "fallback"
    reason: str

    def __str__(self) -> str:
        lines = [f"definition:  {self.definition}", f"hardware:    {self.hardware_key}",
                 f"axes:        {self.axes}"]
        if self.measured_axes is not None and self.measured_axes != self.axes:
            lines.append(f"measured:    {self.measured_axes} (nearest)")
        for name, latency, status in self.candidates:
            lines.append(f"  {latency:10.4f} ms  {name}  [{status}]")
        if not self.candidates:
            lines.append("  no usable traces for this hardware")
        lines.append(f"decision:    {self.decision} ({self.reason})")
        return "\n".join(lines)


def explain(definition: str, axes: Mapping[str, int],
            runtime: Runtime | None = None) -> Explanation:
    """The candidates and the decision for one definition and workload on this hardware."""
    runtime = runtime or sites.current_runtime()
    if runtime is None:
        raise FibError("fib explain: dispatch is not enabled (enable_apply or pass a runtime)")
    op = runtime.op(definition)
    if op is None:
        raise FibError(f"definition '{definition}' is not in {runtime.root}")
    try:
        key = axes_to_key(op.definition, dict(axes))
    except KeyError as exc:
        raise FibError(f"{definition}: missing axis {exc}; variable axes are "
                       f"{', '.join(op.definition.var_axes)}") from None
    ranking, via, _ = op.ranking(key)
    candidates = []
    if ranking is not None:
        for name, latency in zip(ranking.names, ranking.latencies_ms, strict=True):
            if name in op.stats.quarantined:
                status = "quarantined"
            else:
                status = "unavailable" if isinstance(runtime.build(name), Exception) else "ok"
            candidates.append((name, latency, status))
    decision, _ = runtime.decide(op, key, dps=False)
    return Explanation(definition, runtime.hardware.key, key_to_axes(op.definition, key),
                       None if via is None else key_to_axes(op.definition, via),
                       candidates, decision.solution or "fallback", decision.reason)
