"""retune's trust gate: only trusted code is sent to the workers (decided here, in the driver,
so local workers and Ray workers see one decision; see fib_runtime.trust)."""

from __future__ import annotations

import logging
from dataclasses import replace

from fib_runtime.bench.item import WorkloadTask
from fib_runtime.store import TraceDB
from fib_runtime.trust import Trust

log = logging.getLogger("fib_runtime.bench")


def trusted_only(db: TraceDB, items: list[WorkloadTask]
                 ) -> tuple[list[WorkloadTask], list[str]]:
    """The items with their untrusted solutions removed, and without the workloads of a
    definition whose reference is untrusted (it would run as the correctness oracle);
    plus what was left out, one line each."""
    trust = Trust(db.root, db.definitions)  # its verdicts are kept per kind and content
    left_out: dict[str, None] = {}
    kept = []
    for item in items:
        definition = item.definition
        reference_runs = trust.definition(definition) is not None
        if not reference_runs:
            left_out[f"definition {definition.name} (its reference)"] = None
        solutions = []
        for solution in item.solutions:
            if trust.solution(solution) is not None:
                solutions.append(solution)
            else:
                left_out[f"solution {solution.name} (author {solution.author})"] = None
        if solutions and reference_runs:
            kept.append(replace(item, solutions=tuple(solutions)))
    if left_out:
        log.warning("%s: %d untrusted records are not run; `fib trust %s` trusts them",
                    db.root, len(left_out), db.root)
    return kept, list(left_out)
