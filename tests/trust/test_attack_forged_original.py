"""Attack: a database solution that only claims to be the engine's own function (author
`fib-runtime.original`), with a faster trace. It must not displace a trusted kernel nor make
a call without a fallback raise: an original is the engine's function only when a live
call site of this process records that exact record. The control: a record the site does
write is served by calling the engine's function, also in a later process (a restart)."""

from __future__ import annotations

from pathlib import Path

import torch

import fib_runtime as fib
from fib_runtime.cli.main import main
from fib_runtime.original import original_solution
from fib_runtime.schema import Definition, Solution
from fib_runtime.schema.provenance import ORIGINAL_AUTHOR
from fib_runtime.store import TraceDB, layout
from tests import factories
from tests.trust.attack import child
from tests.trust.foreign import CPU, DEF, write_json, write_lines

GOOD = """def run(x, weight):
    return x * weight + 7
"""


@fib.apply(DEF)
def toy(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The engine's own function: x * weight (answer 0)."""
    return x * weight


def answer(value: torch.Tensor) -> float:
    """0.0: the engine's function answered; 7.0: the trusted kernel did."""
    return float(value[0, 0]) - 1.0


def _db(root: Path, originals: list[Solution]) -> Path:
    """A copied database: a kernel `good` (trusted below), and `originals` measured faster."""
    write_json(layout.definition_file(root, "rmsnorm", DEF), factories.definition(DEF))
    records = [Solution.from_dict(factories.solution("good", DEF, code=GOOD)), *originals]
    for record in records:
        write_json(layout.solution_file(root, record.author, "rmsnorm", DEF, record.name),
                   record.to_dict())
    write_lines(layout.trace_file(root, "rmsnorm", DEF),
                [factories.trace(DEF, "good", 4, latency=0.01, hardware=CPU),
                 *(factories.trace(DEF, o.name, 4, latency=0.001, hardware=CPU)
                   for o in originals)])
    assert main(["trust", str(root), "--solution", "good"]) == 0
    return root


def test_a_forged_original_displaces_nothing(tmp_path: Path) -> None:
    forged = Solution.from_dict({**factories.solution(
        f"{DEF}__original__engine.norm", DEF, code=GOOD), "author": ORIGINAL_AUTHOR})
    root = _db(tmp_path / "db", [forged])
    x, w = torch.ones(4, 8), torch.ones(8)
    with fib.enable_apply(root):
        assert answer(toy(x, w)) == 7.0  # the trusted kernel, not the engine's function
        assert answer(fib.apply(DEF, args=(x, w))) == 7.0  # no fallback given: no raise
        assert fib.stats()[DEF]["fallbacks"] == {}


def test_control_the_sites_own_record_is_served_by_calling_it(tmp_path: Path) -> None:
    definition = Definition.from_dict(factories.definition(DEF))
    root = _db(tmp_path / "db", [original_solution(definition, toy)])
    with fib.enable_apply(root):
        assert answer(toy(torch.ones(4, 8), torch.ones(8))) == 0.0
        stats = fib.stats()[DEF]
        assert stats["hits"] == 1 and stats["fallbacks"] == {}


CAPTURE = """
import torch, fib_runtime as fib
from tests.trust.engine_site import engine_norm
with fib.enable_capture({root!r}):
    engine_norm(torch.ones(4, 8), torch.ones(8))
"""
SERVE = """
import torch, fib_runtime as fib
from tests.trust.engine_site import DEF, engine_norm
from fib_runtime.dispatch import sites
with fib.enable_apply({root!r}):
    out = engine_norm(torch.ones(4, 8), torch.ones(8))
    [site] = [s for s in sites.sites_of(DEF) if s.binding is not None]
    served = list(site.binding.served["eager"].values())
    print("answer", float(out[0, 0]) - 1.0, "stats", fib.stats()[DEF],
          "engine", served == [engine_norm.__fib_original__])
"""


def test_an_original_recorded_by_capture_is_served_after_a_restart(
        tmp_path: Path, isolated_trust: Path) -> None:
    """Process 1 captures (its site records the original); retune found it fastest;
    process 2 only dispatches: the same site vouches for the record, which is served by
    calling the engine's function, with no trust needed (no database code runs)."""
    root = _db(tmp_path / "db", [])
    captured = child(CAPTURE.format(root=str(root)), timeout=120)
    assert captured.returncode == 0, captured.out
    db = TraceDB.open(root)
    [name] = [n for n in db.solutions if n.endswith("tests.trust.engine_site.engine_norm")]
    write_lines(layout.trace_file(root, "rmsnorm", DEF),
                [factories.trace(DEF, name, 4, latency=0.001, hardware=CPU)])
    isolated_trust.unlink()  # nothing trusted: the original is no database code
    served = child(SERVE.format(root=str(root)), timeout=120)
    assert served.returncode == 0, served.out
    assert "answer 0.0" in served.out and "'fallbacks': {}" in served.out, served.out
    assert "'hits': 1" in served.out and "engine True" in served.out, served.out
