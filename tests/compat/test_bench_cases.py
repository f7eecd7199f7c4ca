"""Each input of flashinfer-bench's schema tests gets its verdict here too (or a stated reason)."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import orjson
import pytest

from fib_runtime.errors import FibError, SchemaError
from fib_runtime.schema import Definition, Solution, Trace
from tests.compat.bench_cases import CASES, DIFFERS, REFUSED_FIELD, Case

OURS = {"definition": Definition, "solution": Solution, "trace": Trace}


def ours_accepts(case: Case) -> bool:
    try:
        record = OURS[case.kind].from_dict(case.data())
    except FibError:
        return False
    # What we accept we write back, and that must load here again.
    OURS[case.kind].from_dict(orjson.loads(orjson.dumps(record.to_dict())))
    return True


def theirs_accepts(data: ModuleType, case: Case) -> bool:
    model = {"definition": data.Definition, "solution": data.Solution, "trace": data.Trace}
    try:
        model[case.kind].model_validate(case.data())
    except ValueError:  # pydantic's ValidationError is a ValueError
        return False
    return True


def test_the_table_covers_every_test_of_its_schema_modules() -> None:
    sources = {c.source.split("::")[0] for c in CASES}
    assert sources == {"test_definition.py", "test_solution.py", "test_trace.py",
                       "test_load_dump_schema.py", "test_read_traces.py", "test_trace_set.py"}
    assert len({c.id for c in CASES}) == len(CASES)
    assert set(DIFFERS) <= {c.id for c in CASES}
    assert set(REFUSED_FIELD) == {c.id for c in CASES if not c.accepts}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_our_verdict_is_theirs(case: Case) -> None:
    expected = case.accepts if case.id not in DIFFERS else not case.accepts
    assert ours_accepts(case) is expected, DIFFERS.get(case.id, case.source)


@pytest.mark.parametrize("case", [c for c in CASES if not c.accepts], ids=lambda c: c.id)
def test_refused_for_the_reason_its_test_means(case: Case) -> None:
    with pytest.raises(SchemaError) as info:
        OURS[case.kind].from_dict(case.data())
    assert info.value.field == REFUSED_FIELD[case.id]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_their_models_give_the_tabled_verdict(bench_data: ModuleType, case: Case) -> None:
    assert theirs_accepts(bench_data, case) is case.accepts, case.source


def _case(case_id: str) -> dict[str, Any]:
    return next(c for c in CASES if c.id == case_id).data()


def test_axes_without_type_resolve_as_theirs() -> None:
    definition = Definition.from_dict(_case("saved_definition_axes_without_type"))
    assert definition.var_axes == ("M",) and definition.const_axes == {"N": 4}
    assert definition.to_dict()["axes"] == {"M": {"type": "var"},
                                            "N": {"type": "const", "value": 4}}


def test_empty_metric_objects_take_their_defaults() -> None:
    evaluation = Trace.from_dict(_case("passed_with_empty_metric_objects")).evaluation
    assert evaluation is not None and evaluation.correctness and evaluation.performance
    assert (evaluation.correctness.max_relative_error, evaluation.performance.latency_ms) == (0, 0)


def test_non_finite_errors_read_and_written_as_strings() -> None:
    trace = Trace.from_dict(_case("correctness_lowercase_infinity_nan"))
    correctness = trace.evaluation.correctness  # type: ignore[union-attr]
    assert math.isinf(correctness.max_relative_error)
    assert math.isnan(correctness.max_absolute_error)
    written = orjson.loads(orjson.dumps(trace.to_dict()))["evaluation"]["correctness"]
    assert written == {"max_relative_error": "Infinity", "max_absolute_error": "NaN"}


def test_their_dump_of_non_finite_errors_is_ours(bench_data: ModuleType) -> None:
    theirs = bench_data.Correctness(max_relative_error=float("inf"),
                                    max_absolute_error=float("nan"))
    dumped = orjson.loads(theirs.model_dump_json())
    assert dumped == {"max_relative_error": "Infinity", "max_absolute_error": "NaN",
                      "extra": None}


def test_shapes_and_axes_values_as_theirs() -> None:
    definition = Definition.from_dict(_case("scalar_input_definition"))
    assert definition.input_shapes({"M": 8}) == {"A": (8, 4), "scale": None, "B": (8,)}
    same = Definition.from_dict(_case("axes_values_definition"))

    class T:
        def __init__(self, *shape: int) -> None:
            self.shape = shape

    assert same.axes_from_inputs([T(8, 4), T(8)]) == {"M": 8, "N": 4}
    with pytest.raises(FibError):
        same.axes_from_inputs([T(8, 4), T(10)])
    assert definition.axes_from_inputs([T(5, 4), 2.0, T(5)])["M"] == 5
