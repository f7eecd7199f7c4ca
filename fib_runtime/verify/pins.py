"""Pin a definition's choice at a key to the engine's original, in the FlashInfer Trace format.

A pin is a trace per candidate that ranked ahead of the original at the key, stamped
`fib-runtime.gate: rejected` (fib_runtime.schema.provenance), in the regime whose ranking
served the step: the ranking rule then refuses those candidates there (ranking._problem),
so the original serves (or, where the original has no trace of its own at the key, the
site's own function as the fallback). Each pin trace is the candidate's own measurement at
that key, copied (status, correctness, latency, digest), with the gate's reason as its log;
flashinfer-bench loads it as an ordinary trace. Where the key was not measured (served from
interpolated or nearest rankings), the pin goes on a workload of its own with the key's
axes, and the latency is the ranking's estimate there (the log says so); that workload is
only in the trace file, so retune does not measure it. `fib retune --force` measures the
candidates again and so lifts a pin: run the gate again after it.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from fib_runtime.dispatch.dispatcher import Dispatcher
from fib_runtime.dispatch.explain import traces_at
from fib_runtime.dispatch.runtime import Runtime
from fib_runtime.keys import Key, key_to_axes
from fib_runtime.regimes import DEVICE
from fib_runtime.schema import Environment, Evaluation, Performance, Status, Trace
from fib_runtime.schema.provenance import GATE_REJECTED, content_digest, stamped
from fib_runtime.schema.trace import RANDOM, Workload


def pin_traces(runtime: Runtime, dispatcher: Dispatcher, key: Key, timing: str,
               reason: str) -> list[Trace]:
    """The traces that pin `key` of this definition to its original in `timing` (the regime
    of the calls; the traces go in the regime whose ranking served them)."""
    regime = dispatcher.effective(timing)
    ranking, _, how = dispatcher.ranking(key, regime)
    if ranking is None:
        return []
    ahead = []
    for name in ranking.names:
        if name in ranking.originals:
            break  # the original and what ranks after it are not in its way
        ahead.append(name)
    if not ahead:
        return []
    definition = dispatcher.definition
    measured = _measured_traces(runtime, definition.name, key, regime) if how == "measured" \
        else {}
    estimate = "" if how == "measured" else \
        f"; latency is the {how} estimate from the measured keys around it"
    workload = None
    traces = []
    for name in ahead:
        source = measured.get(name)
        if source is not None and source.evaluation is not None:
            traces.append(_rejected(source, f"{reason}{estimate}"))
            continue
        if workload is None:
            workload = Workload(str(uuid.uuid4()), key_to_axes(definition, key),
                                {n: RANDOM for n in definition.inputs})
        latency = ranking.latencies_ms[ranking.names.index(name)]
        traces.append(_fresh(runtime, definition.name, workload, name, latency, regime,
                             f"{reason}{estimate}"))
    return traces


def _measured_traces(runtime: Runtime, definition: str, key: Key, regime: str
                     ) -> dict[str, Trace]:
    """The latest trace in `regime` of each solution at `key` on this hardware."""
    return {trace.solution: trace for trace in traces_at(runtime, definition, key, regime)
            if trace.solution is not None}


def _rejected(source: Trace, log: str) -> Trace:
    evaluation = source.evaluation
    assert evaluation is not None
    environment = stamped(evaluation.environment, gate=GATE_REJECTED)
    return Trace(source.definition, source.workload, source.solution,
                 Evaluation(evaluation.status, environment, _now(), log,
                            evaluation.correctness, evaluation.performance))


def _fresh(runtime: Runtime, definition: str, workload: Workload, solution: str,
           latency: float, regime: str, log: str) -> Trace:
    hardware = runtime.hardware
    environment = Environment(hardware.name, dict(hardware.libs), {"hardware_key": hardware.key})
    known = runtime.db.solutions.get(solution)
    environment = stamped(environment, timing=None if regime == DEVICE.name else regime,
                          digest=content_digest(known) if known is not None else None,
                          gate=GATE_REJECTED)
    performance = Performance(latency, latency, 1.0)
    return Trace(definition, workload, solution,
                 Evaluation(Status.PASSED, environment, _now(), log, None, performance))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()

