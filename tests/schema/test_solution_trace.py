from __future__ import annotations

import pytest

from fib_runtime.errors import SchemaError
from fib_runtime.schema import SafetensorsInput, ScalarInput, Solution, Status, Trace
from tests.factories import solution, trace, workload


def test_solution_round_trip_and_defaults() -> None:
    data = solution()
    del data["spec"]["destination_passing_style"]
    parsed = Solution.from_dict(data)
    assert parsed.spec.dps is True  # the schema's default
    assert parsed.spec.entry_file == "main.py" and parsed.spec.entry_function == "run"
    assert parsed.to_dict() == data


@pytest.mark.parametrize("path", ["../x.py", "/etc/passwd", "a/../../x.py", "~/x.py", ""])
def test_source_paths_that_escape_are_refused(path: str) -> None:
    data = solution()
    data["sources"].append({"path": path, "content": ""})
    with pytest.raises(SchemaError, match="inside the solution's folder") as info:
        Solution.from_dict(data)
    assert info.value.field == "sources[1].path"


@pytest.mark.parametrize(("entry", "needle"), [
    ("main.py", "file::function"), ("main.py::", "file::function"),
    ("other.py::run", "not among the sources"),
])
def test_entry_point_is_checked(entry: str, needle: str) -> None:
    data = solution()
    data["spec"]["entry_point"] = entry
    with pytest.raises(SchemaError, match=needle):
        Solution.from_dict(data)


def test_unknown_language_loads() -> None:
    data = solution()
    data["spec"]["language"] = "tilelang"
    assert Solution.from_dict(data).spec.language == "tilelang"


def test_workload_descriptors() -> None:
    data = workload(x={"type": "safetensors", "path": "blob/a.safetensors", "tensor_key": "x"},
                    weight={"type": "scalar", "value": 0.5})
    parsed = Trace.from_dict(data)
    assert parsed.is_workload
    assert parsed.workload.inputs["x"] == SafetensorsInput("blob/a.safetensors", "x")
    assert parsed.workload.inputs["weight"] == ScalarInput(0.5)
    assert parsed.to_dict() == data


def test_trace_round_trip() -> None:
    data = trace()
    parsed = Trace.from_dict(data)
    assert parsed.evaluation is not None and parsed.evaluation.status is Status.PASSED
    assert parsed.to_dict() == data


@pytest.mark.parametrize(("status", "change", "field"), [
    ("PASSED", {"performance": None}, "evaluation.performance"),
    ("PASSED", {"correctness": None}, "evaluation.correctness"),
    ("INCORRECT_NUMERICAL", {"correctness": None}, "evaluation.correctness"),
    ("RUNTIME_ERROR", {"correctness": {"max_relative_error": 1, "max_absolute_error": 1}},
     "evaluation.correctness"),
    ("RUNTIME_ERROR", {"performance": {"latency_ms": 1, "reference_latency_ms": 1,
                                        "speedup_factor": 1}}, "evaluation.performance"),
])
def test_status_decides_which_results_may_be_null(status: str, change: dict, field: str) -> None:
    data = trace(status=status)
    data["evaluation"].update(change)
    with pytest.raises(SchemaError) as info:
        Trace.from_dict(data)
    assert info.value.field == field


def test_bad_status_and_bool_number() -> None:
    data = trace()
    data["evaluation"]["status"] = "GREAT"
    with pytest.raises(SchemaError, match="unknown status"):
        Trace.from_dict(data)
    data = trace()
    data["workload"]["axes"]["batch_size"] = True
    with pytest.raises(SchemaError, match="got bool"):
        Trace.from_dict(data)


def test_trace_records_are_immutable_and_keep_the_status_check() -> None:
    """The trace records are frozen msgspec Structs: no field can be set, one derived with
    `msgspec.structs.replace` is a new record, and an evaluation built by hand (or derived)
    is still checked against its status, naming the field."""
    from msgspec.structs import replace

    loaded = Trace.from_dict(trace())
    evaluation = loaded.evaluation
    assert evaluation is not None and evaluation.performance is not None
    for record, name in ((loaded, "solution"), (loaded.workload, "uuid"),
                         (evaluation, "log"), (evaluation.environment, "hardware"),
                         (evaluation.performance, "latency_ms")):
        with pytest.raises(AttributeError):
            setattr(record, name, "x")
    slower = replace(loaded, evaluation=replace(evaluation, performance=replace(
        evaluation.performance, latency_ms=1.0)))
    assert slower.evaluation.performance.latency_ms == 1.0
    assert evaluation.performance.latency_ms == 0.01 and slower != loaded
    assert Trace.from_dict(slower.to_dict()) == slower
    with pytest.raises(SchemaError) as info:
        replace(evaluation, performance=None)
    assert info.value.field == "evaluation.performance"
    with pytest.raises(SchemaError) as info:
        replace(evaluation, status=Status.RUNTIME_ERROR)
    assert info.value.field == "evaluation.correctness"
