"""The trace of one evaluation: a worker's answer, in one timing regime, on one device."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from fib_runtime.bench.pool import DeviceInfo
from fib_runtime.ranking import DEVICE
from fib_runtime.schema import (
    Correctness,
    Environment,
    Evaluation,
    Performance,
    Status,
    Trace,
)
from fib_runtime.schema.provenance import stamped


def make_trace(definition: str, workload: Trace, solution: str, result: dict[str, Any],
               reference_ms: float | Mapping[str, float], info: DeviceInfo,
               timing: str = DEVICE, *, digest: str | None = None) -> Trace:
    """The trace of one evaluation (a worker's answer) in one timing regime on the device
    `info` describes. A regime other than `device` and the digest of the solution content
    measured are stamped into the environment."""
    status = Status(result["status"])
    if isinstance(reference_ms, Mapping):  # the reference timed in each regime
        reference_ms = float(reference_ms.get(timing, reference_ms.get(DEVICE, 0.0)))
    correctness = performance = None
    raw = result.get("correctness")
    if raw is not None:
        correctness = Correctness(raw["max_relative_error"], raw["max_absolute_error"],
                                  raw.get("extra"))
    if status is Status.PASSED:
        latency = float((result.get("latencies_ms") or {}).get(timing, result.get("latency_ms")))
        performance = Performance(latency, reference_ms,
                                  reference_ms / latency if latency > 0 else 0.0)
    spread = (result.get("spreads") or {}).get(timing) if performance is not None else None
    environment = Environment(info.name, info.libs, {"hardware_key": info.key})
    if timing != DEVICE or digest is not None or spread is not None:
        environment = stamped(environment, timing=None if timing == DEVICE else timing,
                              digest=digest, spread=spread)
    evaluation = Evaluation(status, environment, datetime.now(timezone.utc).isoformat(),
                            result.get("log") or None, correctness, performance)
    return Trace(definition, workload.workload, solution, evaluation)
