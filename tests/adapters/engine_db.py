"""A database of catalogue definitions with measured traces for this machine, so that
dispatch serves them here (CPU: the catalogue's torch solutions), for the adapter tests."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import fib_runtime as fib
from fib_runtime.catalogue import load_catalogue
from fib_runtime.schema import AxisVar, Trace
from fib_runtime.store import TraceDB
from tests.factories import trace

ENGINE_DEFINITIONS = ("rmsnorm_h4096", "fused_add_rmsnorm_residual_h4096", "silu_and_mul_i14336")


def engine_db(root: Path, names: Iterable[str] = ENGINE_DEFINITIONS, *,
              variant: str = "torch", batches: Iterable[int] = (1, 4, 16)) -> TraceDB:
    """Definitions `names` with their `variant` solution measured on this device."""
    catalogue = load_catalogue()
    db = TraceDB.open(root, create=True)
    hardware = fib.current_hardware().name
    traces = []
    for name in names:
        db.add_definition(catalogue.definitions[name])
        solution = next(s for s in catalogue.solutions if s.name == f"{name}__{variant}")
        db.add_solution(solution)
        definition = catalogue.definitions[name]
        for batch in batches:
            data = trace(name, solution.name, batch, hardware=hardware)
            data["workload"]["inputs"] = {i: {"type": "random"} for i in definition.inputs}
            data["workload"]["axes"] = {a: batch for a, axis in definition.axes.items()
                                        if isinstance(axis, AxisVar)}
            traces.append(Trace.from_dict(data))
    db.append_traces(traces)
    return db
