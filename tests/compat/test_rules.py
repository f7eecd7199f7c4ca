"""What flashinfer-bench refuses we refuse too, naming the field; what we write it can load."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest

from fib_runtime.errors import SchemaError
from fib_runtime.schema import (
    Correctness,
    Definition,
    Environment,
    Evaluation,
    Performance,
    Solution,
    Status,
    Trace,
)
from fib_runtime.store import TraceDB
from tests.factories import definition, solution, trace, workload


def _set(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    return data


REFUSED = [
    ("definition", "axes.hidden_size.value", -1, "axes.hidden_size.value"),
    ("definition", "tags", [""], "tags[0]"),
    ("definition", "name", "", "name"),
    ("definition", "axes.batch_size", {"type": None}, "axes.batch_size.type"),
    ("solution", "spec.target_hardware", [], "spec.target_hardware"),
    ("solution", "author", "", "author"),
    ("workload", "workload.axes.batch_size", -4, "workload.axes.batch_size"),
    ("workload", "workload.uuid", "", "workload.uuid"),
    ("workload", "workload.inputs.x", {"type": None}, "workload.inputs.x.type"),
    ("trace", "evaluation.correctness.max_relative_error", -1.0,
     "evaluation.correctness.max_relative_error"),
    ("trace", "evaluation.correctness.max_absolute_error", "-Infinity",
     "evaluation.correctness.max_absolute_error"),
    ("trace", "evaluation.performance.latency_ms", -0.5, "evaluation.performance.latency_ms"),
    ("trace", "evaluation.performance.latency_ms", "NaN", "evaluation.performance.latency_ms"),
    ("trace", "evaluation.performance.speedup_factor", None,
     "evaluation.performance.speedup_factor"),
    ("trace", "evaluation.environment.hardware", "", "evaluation.environment.hardware"),
    ("trace", "evaluation.timestamp", "", "evaluation.timestamp"),
    # null where it has a default (the field may be left out, not nulled)
    ("definition", "tags", None, "tags"),
    ("definition", "constraints", None, "constraints"),
    ("solution", "spec.dependencies", None, "spec.dependencies"),
    ("solution", "spec.destination_passing_style", None, "spec.destination_passing_style"),
    ("trace", "evaluation.log", None, "evaluation.log"),
    ("trace", "evaluation.environment.libs", None, "evaluation.environment.libs"),
]
PARSE = {"definition": Definition.from_dict, "solution": Solution.from_dict,
         "workload": Trace.from_dict, "trace": Trace.from_dict}
MAKE = {"definition": definition, "solution": solution, "workload": workload, "trace": trace}


@pytest.mark.parametrize(("kind", "path", "value", "field"), REFUSED,
                         ids=[f"{r[1]}={r[2]!r}" for r in REFUSED])
def test_refused_with_the_field_named(kind: str, path: str, value: Any, field: str) -> None:
    with pytest.raises(SchemaError) as info:
        PARSE[kind](_set(MAKE[kind](), path, value))
    assert info.value.field == field


@pytest.mark.parametrize(("kind", "path", "value", "field"), REFUSED,
                         ids=[f"{r[1]}={r[2]!r}" for r in REFUSED])
def test_flashinfer_bench_refuses_them_too(bench_data: ModuleType, kind: str, path: str,
                                           value: Any, field: str) -> None:
    model = bench_data.Definition if kind == "definition" else \
        bench_data.Solution if kind == "solution" else bench_data.Trace
    with pytest.raises(ValueError):
        model.model_validate(_set(MAKE[kind](), path, value))


def test_a_refused_line_is_reported_with_file_line_and_field(tmp_path: Path) -> None:
    db = TraceDB.open(tmp_path, create=True)
    db.add_definition(Definition.from_dict(definition()))
    lines = [trace(), _set(trace(), "evaluation.performance.latency_ms", -1.0), trace()]
    target = tmp_path / "traces" / "rmsnorm" / "toy_norm_h8.jsonl"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    again = TraceDB.open(tmp_path)
    assert len(again.traces_for("toy_norm_h8")) == 2
    [problem] = again.load_errors
    assert (problem.file, problem.line, problem.field) == (
        "traces/rmsnorm/toy_norm_h8.jsonl", 2, "evaluation.performance.latency_ms")


def test_infinite_latency_round_trips_as_a_string() -> None:
    data = _set(trace(), "evaluation.performance.reference_latency_ms", "Infinity")
    parsed = Trace.from_dict(data)
    assert math.isinf(parsed.evaluation.performance.reference_latency_ms)  # type: ignore[union-attr]
    assert parsed.to_dict()["evaluation"]["performance"]["reference_latency_ms"] == "Infinity"


# -- where we deliberately differ (inputs outside its tests) --------------------------------

# Without "type", pydantic tries each kind and keeps one that validates, so a malformed record
# silently becomes another kind. We read the fields as what they say and refuse a bad value.
DIFFERENT = [
    ("definition", "axes.hidden_size", {"value": -1}, "axes.hidden_size.value"),
    ("definition", "axes.hidden_size", {"value": "8"}, "axes.hidden_size.value"),
    ("workload", "workload.inputs.x", {"path": "blob/x.safetensors"}, "workload.inputs.x"),
]


@pytest.mark.parametrize(("kind", "path", "value", "field"), DIFFERENT,
                         ids=[f"{r[1]}={r[2]!r}" for r in DIFFERENT])
def test_untyped_records_with_bad_fields_are_refused(kind: str, path: str, value: Any,
                                                     field: str) -> None:
    with pytest.raises(SchemaError) as info:
        PARSE[kind](_set(MAKE[kind](), path, value))
    assert info.value.field.startswith(field)  # type: ignore[union-attr]


@pytest.mark.parametrize(("kind", "path", "value", "field"), DIFFERENT,
                         ids=[f"{r[1]}={r[2]!r}" for r in DIFFERENT])
def test_flashinfer_bench_turns_them_into_another_kind(bench_data: ModuleType, kind: str,
                                                       path: str, value: Any, field: str) -> None:
    model = bench_data.Definition if kind == "definition" else bench_data.Trace
    model.model_validate(_set(MAKE[kind](), path, value))  # accepted there


def test_untyped_inputs_resolve_by_their_fields() -> None:
    data = workload(x={}, weight={"value": 2})
    parsed = Trace.from_dict(data).workload.inputs
    assert parsed["x"].to_dict() == {"type": "random"}
    assert parsed["weight"].to_dict() == {"type": "scalar", "value": 2}
    both = workload(x={"path": "blob/a.safetensors", "tensor_key": "x"})
    assert Trace.from_dict(both).workload.inputs["x"].to_dict()["type"] == "safetensors"


# -- writers --------------------------------------------------------------------------------

def _db(root: Path) -> TraceDB:
    db = TraceDB.open(root, create=True)
    db.add_definition(Definition.from_dict(definition()))
    return db


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.json*"))


@pytest.mark.parametrize(("change", "field"), [
    (lambda d: d["inputs"]["x"].update(dtype="uint8"), "inputs.x.dtype"),
])
def test_definition_writer_refuses_what_flashinfer_bench_refuses(tmp_path: Path, change: Any,
                                                                 field: str) -> None:
    db = TraceDB.open(tmp_path, create=True)
    data = definition()
    change(data)
    record = Definition.from_dict(data)  # we read it ...
    with pytest.raises(SchemaError) as info:  # ... but never write it
        db.add_definition(record)
    assert info.value.field == field and info.value.file == "definitions/rmsnorm/toy_norm_h8.json"
    assert _files(tmp_path) == []


@pytest.mark.parametrize(("spec", "field"), [
    ({"language": "cute_dsl"}, "spec.language"), ({"binding": "pybind"}, "spec.binding"),
])
def test_solution_writer_refuses_what_flashinfer_bench_refuses(tmp_path: Path,
                                                               spec: dict[str, Any],
                                                               field: str) -> None:
    db = _db(tmp_path)
    data = solution()
    data["spec"].update(spec)
    with pytest.raises(SchemaError) as info:
        db.add_solution(Solution.from_dict(data))
    assert info.value.field == field
    assert _files(tmp_path) == ["definitions/rmsnorm/toy_norm_h8.json"]


def _evaluation(**over: Any) -> Evaluation:
    values: dict[str, Any] = dict(status=Status.PASSED, environment=Environment("cpu"),
                                  timestamp="t", correctness=Correctness(0.0, 0.0),
                                  performance=Performance(1.0, 1.0, 1.0))
    values.update(over)
    return Evaluation(**values)


@pytest.mark.parametrize(("evaluation", "field"), [
    (lambda: _evaluation(performance=Performance(float("nan"), 1.0, 1.0)),
     "evaluation.performance.latency_ms"),
    (lambda: _evaluation(correctness=Correctness(-1.0, 0.0)),
     "evaluation.correctness.max_relative_error"),
    (lambda: _evaluation(environment=Environment("")), "evaluation.environment.hardware"),
])
def test_trace_writer_refuses_what_a_reader_refuses(tmp_path: Path, evaluation: Any,
                                                    field: str) -> None:
    db = _db(tmp_path)
    base = Trace.from_dict(trace())
    bad = Trace(base.definition, base.workload, base.solution, evaluation())
    with pytest.raises(SchemaError) as info:
        db.append_traces([Trace.from_dict(trace()), bad])
    assert info.value.field == field and info.value.file == "traces/rmsnorm/toy_norm_h8.jsonl"
    assert db.traces_for("toy_norm_h8") == []  # the whole batch is refused, nothing written
    assert not (tmp_path / "traces").exists()


def test_non_finite_errors_are_written_as_flashinfer_bench_writes_them(tmp_path: Path) -> None:
    db = _db(tmp_path)
    base = Trace.from_dict(trace())
    nan = Trace(base.definition, base.workload, base.solution, _evaluation(
        status=Status.INCORRECT_NUMERICAL, performance=None,
        correctness=Correctness(float("nan"), float("inf"))))
    db.append_traces([nan])
    line = (tmp_path / "traces/rmsnorm/toy_norm_h8.jsonl").read_bytes()
    correctness = orjson.loads(line)["evaluation"]["correctness"]
    assert correctness == {"max_relative_error": "NaN", "max_absolute_error": "Infinity"}
    [again] = TraceDB.open(tmp_path).traces_for("toy_norm_h8")
    assert math.isnan(again.evaluation.correctness.max_relative_error)  # type: ignore[union-attr]
