"""How a benchmark trace was measured: its timing regime, the digest of the solution it ran,
the spread of its samples, and a step gate's verdict.

All are kept in `evaluation.environment.libs`, the format's `{name: version}` map of strings,
which flashinfer-bench loads and writes back unchanged. A trace without them is a
device-time trace of unknown content and unknown spread (what flashinfer-bench writes).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import orjson

from fib_runtime import regimes

if TYPE_CHECKING:
    from fib_runtime.schema.solution import Solution
    from fib_runtime.schema.trace import Environment, Evaluation

TIMING_KEY = "fib-runtime.timing"
DIGEST_KEY = "fib-runtime.solution-digest"
# The relative half-width of the interquartile range of the samples whose median is
# `latency_ms` (a decimal string, e.g. "0.0123"); see fib_runtime.measure.timing.
SPREAD_KEY = "fib-runtime.spread"
# Set by `fib verify` (fib_runtime.gate): this solution must not serve at this workload's key
# in this regime, because the step it runs in was slower with it; the trace's log says why.
GATE_KEY = "fib-runtime.gate"
GATE_REJECTED = "rejected"
# The author of a solution that stands for the engine's own (decorated) function.
ORIGINAL_AUTHOR = "fib-runtime.original"


def timing_of(evaluation: Evaluation) -> str:
    """The regime a trace was timed in (see fib_runtime.regimes); `device` when it does not
    say."""
    return evaluation.environment.libs.get(TIMING_KEY, regimes.DEVICE.name)


def digest_of(evaluation: Evaluation) -> str | None:
    """The digest of the solution content a trace measured, or None when it does not say."""
    return evaluation.environment.libs.get(DIGEST_KEY)


def spread_of(evaluation: Evaluation) -> float | None:
    """The spread a trace was measured with, or None when it does not say (or is unreadable)."""
    raw = evaluation.environment.libs.get(SPREAD_KEY)
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        return None
    return value if value is not None and 0.0 <= value < float("inf") else None


def gate_of(evaluation: Evaluation) -> str | None:
    """A step gate's verdict on this trace's (solution, workload, regime), or None."""
    return evaluation.environment.libs.get(GATE_KEY)


def content_digest(solution: Solution) -> str:
    """The content a trace measured and trust vouches for: sha256 over the solution's
    definition, spec and sources (path and content); its name, author and description do
    not count. The one solution digest with this meaning (merge compares whole records with
    its own `_record_digest`; the loader names modules by `_import_key`)."""
    body = {
        "definition": solution.definition,
        "spec": solution.spec.to_dict(),
        "sources": sorted((s.path, s.content) for s in solution.sources),
    }
    return "sha256:" + hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def stamped(environment: Environment, *, timing: str | None = None,
            digest: str | None = None, spread: float | None = None,
            gate: str | None = None) -> Environment:
    """A copy of `environment` whose libs also name the regime, the solution digest, the
    spread and/or a gate verdict (each only when given)."""
    from fib_runtime.schema.trace import Environment

    libs = dict(environment.libs)
    if timing is not None:
        libs[TIMING_KEY] = timing
    if digest is not None:
        libs[DIGEST_KEY] = digest
    if spread is not None:
        libs[SPREAD_KEY] = f"{spread:.4g}"
    if gate is not None:
        libs[GATE_KEY] = gate
    return Environment(environment.hardware, libs, environment.extra)
