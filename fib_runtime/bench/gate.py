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
    trust = Trust(db.root, db.definitions)
    decided: dict[str, bool] = {}
    left_out: dict[str, None] = {}
    kept = []
    for item in items:
        definition = item.definition
        if definition.name not in decided:
            decided[definition.name] = trust.definition(definition) is not None
        if not decided[definition.name]:
            left_out[f"definition {definition.name} (its reference)"] = None
        solutions = []
        for solution in item.solutions:
            key = f"solution {solution.name} (author {solution.author})"
            if key not in decided:
                decided[key] = trust.solution(solution) is not None
            if decided[key]:
                solutions.append(solution)
            else:
                left_out[key] = None
        if solutions and decided[definition.name]:
            kept.append(replace(item, solutions=tuple(solutions)))
    if left_out:
        log.warning("%s: %d untrusted records are not run; `fib trust %s` trusts them",
                    db.root, len(left_out), db.root)
    return kept, list(left_out)
