"""Solution builders by language: one registry entry per language says how its solutions are
built and whether they run on CPU tensors whatever their targets say."""

from __future__ import annotations

from pathlib import Path

import pytest

from fib_runtime.build import Built, build_solution
from fib_runtime.build.loader import LANGUAGES, Language
from fib_runtime.dispatch.contract import runs_on
from fib_runtime.errors import BuildError
from fib_runtime.schema import Solution
from tests import factories

GPU_ONLY = ["NVIDIA H100 80GB HBM3"]


def solution_in(language: str) -> Solution:
    data = factories.solution("lang_" + language, code="def run(x, weight):\n    return x\n")
    data["spec"]["language"] = language
    return Solution.from_dict(data)


def test_a_language_without_a_builder_is_a_build_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"language 'cuda' cannot be built here "
                                         r"\(python and triton can\)"):
        build_solution(solution_in("cuda"), tmp_path)


def test_python_and_triton_build_by_import(tmp_path: Path) -> None:
    for language in ("python", "Triton"):
        built = build_solution(solution_in(language), tmp_path)
        assert built.language == language.lower() and built.fn.__name__ == "run"


def test_a_new_language_is_one_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []

    def build(solution: Solution, cache: Path) -> Built:
        made.append(solution.name)
        return Built(solution.name, lambda x, weight: x, dps=False, language="toy")

    monkeypatch.setitem(LANGUAGES, "toy", Language(build, on_cpu=lambda: True))
    built = build_solution(solution_in("toy"), tmp_path)
    assert made == ["lang_toy"] and built.language == "toy"
    assert runs_on(GPU_ONLY, "toy", -1)  # its entry says it runs on CPU tensors too


def test_where_a_gpu_only_solution_runs_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not runs_on(GPU_ONLY, "triton", -1) and not runs_on(GPU_ONLY, "python", -1)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert runs_on(GPU_ONLY, "triton", -1)  # in Triton's interpreter
    assert not runs_on(GPU_ONLY, "python", -1) and not runs_on(GPU_ONLY, "cuda", -1)
    assert runs_on(["cpu"], "python", -1)
