"""The engine's own function as a candidate: recorded by capture, timed by retune, served
directly when fastest, and explained; one that cannot be imported is said to be so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import fib_runtime as fib
from fib_runtime.cli.main import main
from fib_runtime.dispatch import sites
from fib_runtime.dispatch.explain import ORIGINAL_SERVED, explain
from fib_runtime.dispatch.runtime import Runtime
from fib_runtime.original import (
    is_original,
    original_problem,
    original_solution,
    untimeable_reason,
)
from fib_runtime.retuning import RetuneConfig, retune
from fib_runtime.schema import Definition, Solution, Status
from fib_runtime.schema.provenance import ORIGINAL_AUTHOR
from fib_runtime.store import TraceDB
from tests import factories
from tests.retune.helpers import DEF, make_db

FAST = {"warmup": 1, "iters": 5, "progress": False, "devices": "cpu"}
SLOW = factories.RMSNORM_REFERENCE.replace("import torch", "import time\nimport torch").replace(
    "    xf = x.float()", "    time.sleep(0.004)\n    xf = x.float()")


@fib.apply(DEF)
def engine_norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The engine's code: what the definition computes, faster than the slow solution."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(
        x.dtype)


class Engine:
    @staticmethod
    def static_norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x * weight

    def method_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x * weight


def captured(root: Path, fn: Any) -> TraceDB:
    """A database with the slow solution, after capturing calls of `fn` at batch 4."""
    db = make_db(root, {"slow": (SLOW, False)}, batches=())
    with fib.enable_capture(db):
        fn(torch.randn(4, 8), torch.randn(8))
    return TraceDB.open(root)


def test_importable_functions_are_timeable_others_say_why() -> None:
    assert original_problem(engine_norm) is None  # the decorated function: its original
    assert original_problem(Engine.static_norm) is None
    assert "lambda" in (original_problem(lambda x, w: x) or "")

    def local(x: torch.Tensor) -> torch.Tensor:
        return x

    assert "closure" in (original_problem(local) or "")
    assert "bound method" in (original_problem(Engine().method_norm) or "")
    assert "self" in (original_problem(Engine.method_norm) or "")
    main_fn = type(local)(local.__code__, {"__name__": "__main__"}, "f")
    main_fn.__qualname__ = "f"
    assert "__main__" in (original_problem(main_fn) or "")


def test_the_original_solution_is_a_flashinfer_trace_solution() -> None:
    definition = Definition.from_dict(factories.definition(DEF))
    solution = original_solution(definition, engine_norm)
    assert solution.author == ORIGINAL_AUTHOR and is_original(solution)
    assert solution.spec.language == "python" and not solution.spec.dps
    assert Solution.from_dict(solution.to_dict()) == solution  # valid in the format
    assert "tests.dispatch.test_original" in solution.sources[0].content
    assert untimeable_reason(solution) is None
    lam = original_solution(definition, lambda x, w: x)
    assert untimeable_reason(lam) == "it is a lambda"


def test_a_faster_original_is_served_and_explained(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    db = captured(tmp_path / "db", engine_norm)
    # Capture records the original of every site of a captured definition (other test
    # modules' sites included): this one's is named after its module and function.
    [name] = [s.name for s in db.solutions_for(DEF) if is_original(s)
              and s.name.endswith("tests.dispatch.test_original.engine_norm")]
    summary = retune(db, config=RetuneConfig(timings=("device", "eager")), **FAST)
    assert {(o.solution, o.status) for o in summary.outcomes} >= {(name, "PASSED"),
                                                                  ("slow", "PASSED")}
    assert all(b.winner == name for b in summary.buckets[DEF])
    with fib.enable_apply(tmp_path / "db"):
        out = engine_norm(torch.randn(4, 8), torch.randn(8))
        assert out.shape == (4, 8)
        assert fib.stats()[DEF]["hits"] == 1 and fib.stats()[DEF]["fallbacks"] == {}
        site = next(s for s in sites.sites_of(DEF) if s.original is engine_norm.__fib_original__)
        assert site.binding is not None
        # The served callable is the engine's function itself, not a build of the database.
        assert list(site.binding.served["eager"].values()) == [engine_norm.__fib_original__]
        explanation = explain(DEF, {"batch_size": 4})
        assert explanation.decision == name and ORIGINAL_SERVED in str(explanation)
    assert main(["explain", DEF, "--axes", "batch_size=4", "--db", str(tmp_path / "db")]) == 0
    assert "calls it directly" in capsys.readouterr().out


def test_an_untimeable_original_is_noted_by_retune_and_explain(tmp_path: Path) -> None:
    @fib.apply(DEF)
    def closure_norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x * weight

    db = captured(tmp_path / "db", closure_norm)
    [original] = [s for s in db.solutions_for(DEF) if "closure_norm" in s.name]
    assert "closure" in (untimeable_reason(original) or "")
    summary = retune(db, **FAST)
    assert original.name not in {o.solution for o in summary.outcomes}  # never run
    assert any("closure" in note and original.name in note for note in summary.notes)
    text = str(explain(DEF, {"batch_size": 4}, Runtime(tmp_path / "db", watch=False)))
    assert "cannot be timed: it is a closure" in text
    assert "cannot be timed" in text


def test_a_failing_original_is_not_served(tmp_path: Path) -> None:
    """An original that computes something else fails the reference check like any
    solution, so dispatch never serves it."""
    db = captured(tmp_path / "db", fib.apply(DEF)(Engine.static_norm))
    summary = retune(db, **FAST)
    statuses = {o.solution: o.status for o in summary.outcomes}
    assert statuses["slow"] == "PASSED"
    [name] = [n for n in statuses if n.endswith("Engine.static_norm")]
    assert statuses[name] == Status.INCORRECT_NUMERICAL.value
