"""A database in which chosen catalogue solutions are measured on this machine, so that
dispatch serves exactly them here (Triton ones through the interpreter on a CPU)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

import fib_runtime as fib
from fib_runtime import ranking
from fib_runtime.catalogue import load_catalogue
from fib_runtime.schema import AxisVar, Definition, Trace
from fib_runtime.store import TraceDB
from tests.factories import trace


def forced_db(root: Path, solutions: Iterable[str], *, batches: Iterable[int] = (1, 4, 16),
              definitions: Iterable[Definition] = ()) -> TraceDB:
    """Each named solution (`<definition>__<variant>`) with its definition, measured PASSED on
    this device at every variable axis set to each of `batches`. `definitions` adds
    definitions the built-in catalogue does not ship (family-generated ones)."""
    catalogue = load_catalogue(generated=definitions)
    by_name = {s.name: s for s in catalogue.solutions}
    db = TraceDB.open(root, create=True)
    hardware = fib.current_hardware().name
    traces = []
    for name in solutions:
        solution = by_name[name]
        definition = catalogue.definitions[solution.definition]
        if solution.definition not in db.definitions:
            db.add_definition(definition)
        if solution.name not in db.solutions:
            db.add_solution(solution)
        for batch in batches:
            data = trace(definition.name, solution.name, batch, hardware=hardware)
            data["workload"]["inputs"] = {i: {"type": "random"} for i in definition.inputs}
            data["workload"]["axes"] = {a: batch for a, axis in definition.axes.items()
                                        if isinstance(axis, AxisVar)}
            traces.append(Trace.from_dict(data))
    db.append_traces(traces)
    return db


@pytest.fixture
def interpreted_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank Triton solutions on this machine whatever their target_hardware says: without a
    GPU they run in Triton's interpreter (TRITON_INTERPRET=1, set by conftest)."""
    matches = ranking.target_matches
    monkeypatch.setattr(ranking, "target_matches", lambda targets, key: True if any(
        t == "nvidia" for t in targets) else matches(targets, key))
