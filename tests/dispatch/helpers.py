"""A small database of python solutions with measured traces, for dispatch tests."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from fib_runtime.schema import Definition, Solution, Trace
from fib_runtime.store import TraceDB
from tests.factories import definition, solution, trace

# Each solution tags its output so a test can tell which one ran.
SCALE_CODE = """import torch

def run(x, weight):
    return x * weight + {tag}
"""
DPS_CODE = """def run(x, weight, y):
    y.copy_(x * weight + {tag})
"""
RAISING_CODE = """def run(x, weight):
    raise RuntimeError("kernel exploded")
"""
BROKEN_IMPORT_CODE = """import no_such_module_anywhere

def run(x, weight):
    return x
"""

H100 = "NVIDIA H100 80GB HBM3"


def reference_output(x, weight, tag: float):  # type: ignore[no-untyped-def]
    return x * weight + tag


def make_db(root: Path, solutions: dict[str, str],
            timings: Iterable[tuple[str, int, float, str]], *, dps: Iterable[str] = ()
            ) -> TraceDB:
    """solutions: name -> code; timings: (solution, batch, latency_ms, hardware name)."""
    db = TraceDB.open(root, create=True)
    db.add_definition(Definition.from_dict(definition()))
    for name, code in solutions.items():
        db.add_solution(Solution.from_dict(solution(name, code=code, dps=name in set(dps))))
    db.append_traces([Trace.from_dict(trace(solution=s, batch=b, latency=lat, hardware=hw))
                      for s, b, lat, hw in timings])
    return db
