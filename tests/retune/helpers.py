"""A small database of tiny python solutions for the retune tests."""

from __future__ import annotations

from pathlib import Path

from fib_runtime.schema import Definition, Solution, Trace
from fib_runtime.store import TraceDB
from tests import factories

DEF = "toy_norm_h8"
_NORM = """
    xf = x.float()
    y = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float())
"""


def _body(tail: str, head: str = "", signature: str = "x, weight") -> str:
    return f"import torch\n{head}\n\ndef run({signature}):{_NORM}{tail}\n"


# name -> (source, destination-passing style)
SOLUTIONS: dict[str, tuple[str, bool]] = {
    "good": (factories.RMSNORM_REFERENCE, False),
    "good_dps": (_body("    out.copy_(y)", signature="x, weight, out"), True),
    "wrong_shape": (_body("    return y[:, :4]"), False),
    "wrong_dtype": (_body("    return y.double()"), False),
    "wrong_value": (_body("    return y * 1.01"), False),
    "nan": (_body("    y[0, 0] = float('nan')\n    return y"), False),
    "raises": (_body("    raise ValueError('boom from the solution')"), False),
    "no_import": (_body("    return y", head="import not_a_module_fib_test"), False),
    "aborts": (_body("    os.abort()", head="import os"), False),
    "hangs": (_body("    time.sleep(3600)", head="import time"), False),
    "oom": (_body("    return y + torch.empty(1 << 62, dtype=torch.uint8).sum()"), False),
    "caches": (_body("    global CACHED\n    if CACHED is None:\n        CACHED = y\n"
                     "    return CACHED", head="CACHED = None"), False),
}


def make_db(root: Path, solutions: dict[str, tuple[str, bool]], *, batches: tuple[int, ...] = (4,),
            hardware: tuple[str, ...] = ("any",)) -> TraceDB:
    """A database with the toy definition, the given solutions and one workload per batch."""
    db = TraceDB.open(root, create=True)
    db.add_definition(Definition.from_dict(factories.definition(DEF)))
    for name, (code, dps) in solutions.items():
        db.add_solution(Solution.from_dict(
            factories.solution(name, DEF, code=code, dps=dps, hardware=hardware)))
    db.append_workloads(Trace.from_dict(factories.workload(DEF, batch)) for batch in batches)
    return db


def latest_status(db: TraceDB) -> dict[str, Trace]:
    """The last trace of each solution, read back from disk."""
    fresh = TraceDB.open(db.root, strict=True)
    return {t.solution: t for t in fresh.traces_for(DEF) if t.solution}
