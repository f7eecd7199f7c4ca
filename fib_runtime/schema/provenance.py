"""How a benchmark trace was measured: its timing regime and the digest of the solution it ran.

Both are kept in `evaluation.environment.libs`, the format's `{name: version}` map, which
flashinfer-bench loads and writes back unchanged. A trace without them is a device-time trace
of unknown content (what flashinfer-bench itself writes).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from fib_runtime.schema.solution import Solution
    from fib_runtime.schema.trace import Environment, Evaluation

TIMING_KEY = "fib-runtime.timing"
DIGEST_KEY = "fib-runtime.solution-digest"
DEVICE = "device"
TIMINGS = (DEVICE, "eager", "graph")
# The author of a solution that stands for the engine's own (decorated) function.
ORIGINAL_AUTHOR = "fib-runtime.original"


def timing_of(evaluation: Evaluation) -> str:
    """The regime a trace was timed in; `device` when it does not say."""
    return evaluation.environment.libs.get(TIMING_KEY, DEVICE)


def digest_of(evaluation: Evaluation) -> str | None:
    """The digest of the solution content a trace measured, or None when it does not say."""
    return evaluation.environment.libs.get(DIGEST_KEY)


def solution_digest(solution: Solution) -> str:
    """sha256 over the solution's definition, spec and sources (path and content)."""
    body = {
        "definition": solution.definition,
        "spec": solution.spec.to_dict(),
        "sources": sorted((s.path, s.content) for s in solution.sources),
    }
    return "sha256:" + hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def stamped(environment: Environment, *, timing: str | None = None,
            digest: str | None = None) -> Environment:
    """A copy of `environment` whose libs also name the regime and/or the solution digest."""
    from fib_runtime.schema.trace import Environment

    libs = dict(environment.libs)
    if timing is not None:
        libs[TIMING_KEY] = timing
    if digest is not None:
        libs[DIGEST_KEY] = digest
    return Environment(environment.hardware, libs, environment.extra)
