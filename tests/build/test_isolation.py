"""Each solution imports its own sibling modules: two solutions that both ship a `helper.py`
never see each other's (once, through retune, a wrong solution imported the right one's
helper, was certified PASSED and was then served)."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

import fib_runtime as fib
from fib_runtime.build import BuildCache, Built, value_returning
from fib_runtime.hardware import CPU_KEY
from fib_runtime.retuning import retune
from fib_runtime.schema import Definition, Solution, Status, Trace
from fib_runtime.store import TraceDB
from tests import factories

DEF = "toy_norm_h8"
TAG_MAIN = "import torch\nfrom helper import tag\n\ndef run(x, weight):\n" \
           "    return x * weight + tag()\n"
RELATIVE_MAIN = TAG_MAIN.replace("from helper import", "from .helper import")
PACKAGE_MAIN = "import torch\nfrom pkg.util import tag\n\ndef run(x, weight):\n" \
               "    return x * weight + tag()\n"


def with_helper(name: str, tag: float, main: str = TAG_MAIN, helper: str = "helper.py",
                language: str = "python") -> Solution:
    data = factories.solution(name, DEF, code=main)
    data["spec"]["language"] = language
    data["sources"].append({"path": helper, "content": f"def tag():\n    return {tag}\n"})
    return Solution.from_dict(data)


def tag_of(built: Built | Exception) -> float:
    assert isinstance(built, Built), built
    call = value_returning(built, Definition.from_dict(factories.definition(DEF)))
    return float(call(torch.ones(2, 8), torch.ones(8))[0, 0]) - 1.0


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))


@pytest.mark.parametrize(("main", "helper"), [(TAG_MAIN, "helper.py"),
                                              (RELATIVE_MAIN, "helper.py"),
                                              (PACKAGE_MAIN, "pkg/util.py")],
                         ids=["absolute", "relative", "package"])
def test_two_solutions_with_the_same_helper_name_each_get_their_own(main: str,
                                                                    helper: str) -> None:
    cache = BuildCache()
    one = cache.get(with_helper(f"iso_one_{len(main)}", 1.0, main, helper))
    two = cache.get(with_helper(f"iso_two_{len(main)}", 2.0, main, helper))
    assert (tag_of(one), tag_of(two)) == (1.0, 2.0)
    # Nothing the solutions shipped stays importable under its plain name.
    assert not {"helper", "pkg", "pkg.util", "main"} & set(sys.modules)


def test_the_applications_own_module_of_that_name_is_left_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    mine = types.ModuleType("helper")
    mine.tag = lambda: 99.0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "helper", mine)
    built = BuildCache().get(with_helper("iso_app", 3.0))
    assert tag_of(built) == 3.0
    assert sys.modules["helper"] is mine


def test_a_changed_solution_under_the_same_name_is_rebuilt() -> None:
    cache = BuildCache()
    assert tag_of(cache.get(with_helper("iso_same", 1.0))) == 1.0
    assert tag_of(cache.get(with_helper("iso_same", 5.0))) == 5.0


def test_a_changed_entry_point_under_the_same_name_and_sources_is_rebuilt() -> None:
    """A user who points a solution at another function of the same file (or flips its
    calling convention) gets that function after a reload, not the one built before."""
    code = TAG_MAIN + "\n\ndef other(x, weight):\n    return x * weight + 7.0\n"
    first = with_helper("iso_entry", 1.0, code)
    data = first.to_dict()
    data["spec"]["entry_point"] = "main.py::other"
    cache = BuildCache()
    assert tag_of(cache.get(first)) == 1.0
    assert tag_of(cache.get(Solution.from_dict(data))) == 7.0
    data["spec"]["destination_passing_style"] = True
    assert cache.get(Solution.from_dict(data)).dps  # type: ignore[union-attr]


def test_dispatch_serves_each_solution_with_its_own_helper(tmp_path: Path) -> None:
    db = TraceDB.open(tmp_path / "db", create=True)
    db.add_definition(Definition.from_dict(factories.definition(DEF)))
    db.add_solution(with_helper("first", 1.0))
    db.add_solution(with_helper("second", 2.0))
    db.append_traces(Trace.from_dict(factories.trace(DEF, name, batch, hardware="cpu"))
                     for name, batch in (("first", 4), ("second", 8)))

    @fib.apply(DEF)
    def toy(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x * weight

    with fib.enable_apply(db.root):
        got = [float(toy(torch.ones(b, 8), torch.ones(8))[0, 0]) for b in (4, 8, 4, 8)]
        assert fib.stats()[DEF]["hits"] == 4
    assert got == [2.0, 3.0, 2.0, 3.0]


# The norm itself lives in helper.py: the wrong one is 1 % off.
NORM_HELPER = """import torch

def norm(x, weight):
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()
    return (y * {scale}).to(x.dtype)
"""
NORM_MAIN = "from helper import norm\n\ndef run(x, weight):\n    return norm(x, weight)\n"


def norm_solution(name: str, scale: float) -> dict[str, Any]:
    data = factories.solution(name, DEF, code=NORM_MAIN)
    data["sources"].append({"path": "helper.py", "content": NORM_HELPER.format(scale=scale)})
    return data


def test_retune_measures_each_solution_with_its_own_helper(tmp_path: Path) -> None:
    db = TraceDB.open(tmp_path / "db", create=True)
    db.add_definition(Definition.from_dict(factories.definition(DEF)))
    # Evaluated in name order in one worker: "b_wrong" would import "a_right"'s helper.
    db.add_solution(Solution.from_dict(norm_solution("a_right", 1.0)))
    db.add_solution(Solution.from_dict(norm_solution("b_wrong", 1.01)))
    db.append_workloads([Trace.from_dict(factories.workload(DEF, 4))])
    retune(db, warmup=1, iters=3, progress=False, devices="cpu", timeout=60.0)
    traces = {t.solution: t.evaluation for t in TraceDB.open(db.root).traces_for(DEF, CPU_KEY)}
    assert traces["a_right"].status is Status.PASSED
    assert traces["b_wrong"].status is Status.INCORRECT_NUMERICAL
    assert 0.009 < traces["b_wrong"].correctness.max_relative_error < 0.011

    @fib.apply(DEF)
    def norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the fallback should not run")

    x, weight = torch.randn(4, 8), torch.randn(8)
    with fib.enable_apply(db.root):
        torch.testing.assert_close(norm(x, weight), _reference(x, weight))
        assert fib.explain(DEF, {"batch_size": 4}).decision == "a_right"


def _reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    namespace: dict[str, Any] = {}
    exec(factories.RMSNORM_REFERENCE, namespace)
    return namespace["run"](x, weight)


# Triton solutions go through the same loader (CI runs Triton in the interpreter).
TRITON_HELPER = """import torch
import triton
import triton.language as tl


@triton.jit
def _add(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    tl.store(out_ptr + offsets, tl.load(x_ptr + offsets, mask=mask) + {tag}, mask=mask)


def tag_added(y):
    out = torch.empty_like(y)
    _add[(triton.cdiv(y.numel(), 64),)](y, out, y.numel(), BLOCK=64)
    return out
"""
TRITON_MAIN = "from helper import tag_added\n\ndef run(x, weight):\n" \
              "    return tag_added((x * weight).contiguous())\n"


def test_triton_solutions_with_the_same_helper_name_each_get_their_own() -> None:
    pytest.importorskip("triton")
    device = "cuda" if torch.cuda.is_available() else "cpu"

    def solution(name: str, tag: float) -> Solution:
        data = factories.solution(name, DEF, code=TRITON_MAIN)
        data["spec"]["language"] = "triton"
        data["sources"].append({"path": "helper.py",
                                "content": TRITON_HELPER.replace("{tag}", str(tag))})
        return Solution.from_dict(data)

    cache = BuildCache()
    definition = Definition.from_dict(factories.definition(DEF))
    results = []
    for name, tag in (("tri_one", 1.0), ("tri_two", 2.0)):
        built = cache.get(solution(name, tag))
        assert isinstance(built, Built), built
        out = value_returning(built, definition)(torch.ones(2, 8, device=device),
                                                 torch.ones(8, device=device))
        results.append(float(out[0, 0]) - 1.0)
    assert results == [1.0, 2.0]
    assert "helper" not in sys.modules
