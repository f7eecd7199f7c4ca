"""flashinfer-bench 0.1.2's own schema test cases (its tests/data), one record per case.

Each input that its tests construct is written here as the JSON record that holds it, with
the verdict its tests assert (True: it loads; False: it is refused). Our parsers must give the
same verdict, or the case names the reason why we deliberately differ in `DIFFERS`. Written
from reading its tests; none of its code is used here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

REF = "def run(A, B):\n    return A\n"


def definition(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "def1", "op_type": "op",
        "axes": {"M": {"type": "var"}, "N": {"type": "const", "value": 16}},
        "inputs": {"A": {"shape": ["M", "N"], "dtype": "float32"}},
        "outputs": {"B": {"shape": ["M", "N"], "dtype": "float32"}},
        "reference": REF,
    }
    data.update(over)
    return data


def solution(spec: dict[str, Any] | None = None, **over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "sol1", "definition": "def1", "author": "me",
        "spec": spec or {"language": "python", "target_hardware": ["cuda"],
                         "entry_point": "main.py::run"},
        "sources": [{"path": "main.py", "content": "def run():\n    pass\n"}],
    }
    data.update(over)
    return data


def workload(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"axes": {"M": 4}, "inputs": {"A": {"type": "random"}}, "uuid": "w1"}
    data.update(over)
    return data


def evaluation(status: str = "PASSED", **over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"status": status, "log": "a", "environment": {"hardware": "cuda"},
                            "timestamp": "t"}
    data.update(over)
    return data


def trace(evaluation: dict[str, Any] | None = None, solution: str | None = "sol1",
          **workload_over: Any) -> dict[str, Any]:
    return {"definition": "def1", "workload": workload(**workload_over),
            "solution": solution if evaluation is not None else None, "evaluation": evaluation}


OK_CORRECTNESS = {"max_relative_error": 0.0, "max_absolute_error": 0.0}
OK_PERFORMANCE = {"latency_ms": 1.0, "reference_latency_ms": 2.0, "speedup_factor": 2.0}


@dataclass(frozen=True)
class Case:
    """One input of flashinfer-bench's tests: which record it is, the record, its verdict."""

    id: str
    source: str  # its test function
    kind: str  # "definition" | "solution" | "trace"
    record: dict[str, Any]
    accepts: bool

    def data(self) -> dict[str, Any]:
        return copy.deepcopy(self.record)


def _cases() -> list[Case]:
    c: list[Case] = []

    def add(id_: str, source: str, kind: str, record: dict[str, Any], accepts: bool) -> None:
        c.append(Case(id_, source, kind, record, accepts))

    # -- tests/data/test_definition.py ---------------------------------------------------
    src = "test_definition.py::test_axisconst_valid_and_invalid"
    for value, ok in ((1, True), (0, True), (-3, False)):
        add(f"axis_const_{value}", src, "definition",
            definition(axes={"M": {"type": "var"}, "N": {"type": "const", "value": value}}), ok)
    add("axis_var", "test_definition.py::test_axisvar_basic", "definition",
        definition(axes={"M": {"type": "var"}, "N": {"type": "var"}}), True)
    src = "test_definition.py::test_tensorspec_validation"
    add("tensor_shape_list", src, "definition",
        definition(inputs={"A": {"shape": ["M"], "dtype": "int32"}}), True)
    add("tensor_shape_string", src, "definition",
        definition(inputs={"A": {"shape": "M", "dtype": "int32"}}), False)
    add("tensor_dtype_unknown", src, "definition",
        definition(inputs={"A": {"shape": ["M"], "dtype": "not_a_dtype"}}), False)
    add("definition_minimal", "test_definition.py::test_definition_basic_validation",
        "definition", definition(), True)
    add("definition_undefined_axis", "test_definition.py::test_definition_axis_reference_checks",
        "definition", definition(axes={"M": {"type": "var"}},
                                 inputs={"A": {"shape": ["X"], "dtype": "float32"}},
                                 outputs={"B": {"shape": ["M"], "dtype": "float32"}}), False)
    src = "test_definition.py::test_definition_reference_must_define_run"
    add("reference_without_run", src, "definition",
        definition(reference="def not_run():\n    pass\n"), False)
    add("reference_syntax_error", src, "definition",
        definition(reference="def run(:\n    pass\n"), False)
    src = "test_definition.py::test_definition_tags_and_constraints"
    one_axis = {"axes": {"M": {"type": "var"}},
                "inputs": {"A": {"shape": ["M"], "dtype": "float32"}},
                "outputs": {"B": {"shape": ["M"], "dtype": "float32"}}}
    add("tags_and_constraints", src, "definition",
        definition(**one_axis, tags=["a", "b"], constraints=["M > 0", "M <= 4096"]), True)
    add("tags_empty_and_int", src, "definition", definition(**one_axis, tags=["", 1]), False)
    add("tags_empty_string", src, "definition", definition(**one_axis, tags=[""]), False)
    add("tags_int", src, "definition", definition(**one_axis, tags=[1]), False)
    add("constraints_empty_string", src, "definition",
        definition(**one_axis, constraints=[""]), False)
    add("constraints_not_python", src, "definition",
        definition(**one_axis, constraints=["M >"]), False)
    add("input_output_overlap", "test_definition.py::test_definition_input_output_names_no_overlap",
        "definition", definition(**{**one_axis, "outputs": {
            "A": {"shape": ["M"], "dtype": "float32"}}}), False)
    two_inputs = {"axes": {"M": {"type": "var"}, "N": {"type": "const", "value": 4}},
                  "inputs": {"A": {"shape": ["M", "N"], "dtype": "float32"},
                             "B": {"shape": ["M"], "dtype": "float32"}},
                  "outputs": {"C": {"shape": ["M", "N"], "dtype": "float32"}}}
    add("axes_values_definition", "test_definition.py::TestGetAxesValues", "definition",
        definition(name="test_def", **two_inputs), True)
    add("scalar_input_definition", "test_definition.py::test_get_input_shapes_with_scalar",
        "definition", definition(
            name="scalar_test", axes=two_inputs["axes"],
            inputs={"A": {"shape": ["M", "N"], "dtype": "float32"},
                    "scale": {"shape": None, "dtype": "float32"},
                    "B": {"shape": ["M"], "dtype": "float32"}},
            outputs=two_inputs["outputs"],
            reference="def run(A, scale, B):\n    return A * scale + B\n"), True)

    # -- tests/data/test_solution.py -----------------------------------------------------
    src = "test_solution.py::test_sourcefile_validation_python"
    add("source_valid", src, "solution", solution(), True)
    add("source_empty_path", src, "solution",
        solution(sources=[{"path": "", "content": "def run(): pass"}]), False)
    add("source_content_int", src, "solution",
        solution(sources=[{"path": "main.py", "content": 123}]), False)
    src = "test_solution.py::test_buildspec_validation"
    spec = {"language": "python", "target_hardware": ["cuda"], "entry_point": "main.py::run"}
    add("buildspec_valid", src, "solution", solution({**spec, "dependencies": ["numpy"]}), True)
    add("entry_point_without_function", src, "solution",
        solution({**spec, "entry_point": "main.py"}), False)
    add("entry_point_two_separators", src, "solution",
        solution({**spec, "entry_point": "main.py::run::add"}), False)
    add("target_hardware_empty", src, "solution", solution({**spec, "target_hardware": []}),
        False)
    add("dependencies_int", src, "solution", solution({**spec, "dependencies": [1]}), False)
    src = "test_solution.py::test_solution_validation_and_helpers"
    main = {"path": "main.py", "content": "def run():\n    pass\n"}
    util = {"path": "util.py", "content": "x=1\n"}
    triton = {**spec, "language": "triton"}
    add("solution_two_sources", src, "solution", solution(triton, sources=[main, util]), True)
    add("solution_cuda", src, "solution",
        solution({**spec, "language": "cuda"}, name="sol2", author="you", sources=[main]), True)
    add("solution_duplicate_sources", src, "solution",
        solution(triton, name="dup", sources=[main, main]), False)
    add("solution_entry_not_in_sources", src, "solution",
        solution(triton, name="missing_entry", sources=[util]), False)
    cpp = {"path": "../../kernel.cpp", "content": "int main() {}"}
    add("source_path_traversal", "test_solution.py::test_path_traversal_attack", "solution",
        solution({"language": "cuda", "target_hardware": ["cpu"],
                  "entry_point": "../../kernel.cpp::add_one_cpu"}, sources=[cpp]), False)
    add("source_absolute_path", "test_solution.py::test_absolute_path_attack", "solution",
        solution({"language": "cuda", "target_hardware": ["cpu"],
                  "entry_point": "/tmp/kernel.cpp::add_one_cpu"},
                 sources=[{**cpp, "path": "/tmp/kernel.cpp"}]), False)

    # -- tests/data/test_trace.py --------------------------------------------------------
    src = "test_trace.py::test_workload_validation"
    add("workload_valid", src, "trace", trace(None), True)
    add("workload_negative_axis", src, "trace", trace(None, axes={"M": -1}), False)
    add("workload_input_not_descriptor", src, "trace",
        trace(None, axes={"M": 1}, inputs={"A": "object"}), False)
    src = "test_trace.py::test_correctness_performance_environment_validation"
    numerical = "INCORRECT_NUMERICAL"
    add("correctness_zero", src, "trace", trace(evaluation(numerical, correctness=OK_CORRECTNESS)),
        True)
    add("correctness_negative", src, "trace",
        trace(evaluation(numerical, correctness={"max_relative_error": -1.0})), False)
    add("performance_zero", src, "trace", trace(evaluation(
        correctness=OK_CORRECTNESS, performance={"latency_ms": 0.0, "reference_latency_ms": 0.0,
                                                 "speedup_factor": 0.0})), True)
    add("performance_negative_latency", src, "trace", trace(evaluation(
        correctness=OK_CORRECTNESS, performance={"latency_ms": -1.0})), False)
    add("environment_valid", src, "trace",
        trace(evaluation("RUNTIME_ERROR", environment={"hardware": "cuda:0"})), True)
    add("environment_empty_hardware", src, "trace",
        trace(evaluation("RUNTIME_ERROR", environment={"hardware": ""})), False)
    src = "test_trace.py::test_correctness_with_inf_and_nan"
    add("correctness_as_dumped_infinity_nan", src, "trace", trace(evaluation(
        numerical, correctness={"max_relative_error": "Infinity", "max_absolute_error": "NaN"})),
        True)
    add("correctness_lowercase_infinity_nan", src, "trace", trace(evaluation(
        numerical, correctness={"max_relative_error": "infinity", "max_absolute_error": "nan"})),
        True)
    src = "test_trace.py::test_evaluation_status_requirements"
    add("passed_without_metrics", src, "trace", trace(evaluation()), False)
    add("numerical_with_correctness", src, "trace", trace(evaluation(numerical, correctness={})),
        True)
    add("numerical_with_performance_only", src, "trace",
        trace(evaluation(numerical, performance={})), False)
    for status in ("INCORRECT_SHAPE", "INCORRECT_DTYPE", "RUNTIME_ERROR", "COMPILE_ERROR"):
        low = status.lower()
        add(f"{low}_bare", src, "trace", trace(evaluation(status)), True)
        add(f"{low}_with_correctness", src, "trace", trace(evaluation(status, correctness={})),
            False)
        add(f"{low}_with_performance", src, "trace", trace(evaluation(status, performance={})),
            False)
    src = "test_trace.py::test_trace_workload_and_regular"
    inputs = {"A": {"type": "random"}, "B": {"type": "safetensors", "path": "p", "tensor_key": "k"}}
    add("workload_trace_random_and_safetensors", src, "trace",
        trace(None, axes={"M": 8}, inputs=inputs, uuid="w2"), True)
    add("passed_trace", src, "trace", trace(evaluation(
        log="log", correctness=OK_CORRECTNESS, performance=OK_PERFORMANCE),
        axes={"M": 8}, inputs=inputs, uuid="w2"), True)

    # -- tests/data/test_load_dump_schema.py ---------------------------------------------
    src = "test_load_dump_schema.py::test_roundtrip_to_from_json"
    dumped_def = definition(name="d1", axes={"M": {"type": "var", "description": None},
                                             "N": {"type": "const", "value": 4,
                                                   "description": None}},
                            inputs={"A": {"shape": ["M", "N"], "dtype": "float32",
                                          "description": None}},
                            outputs={"B": {"shape": ["M", "N"], "dtype": "float32",
                                           "description": None}},
                            reference="def run(a):\n    return a\n", tags=[], description=None,
                            constraints=[])
    add("dumped_definition", src, "definition", dumped_def, True)
    add("dumped_solution", src, "solution", solution(
        {"language": "python", "target_hardware": ["cpu"], "entry_point": "main.py::run",
         "dependencies": [], "destination_passing_style": True, "binding": None},
        name="s1", definition="d1", description=None), True)
    dumped_eval = evaluation(log="log", environment={"hardware": "cpu", "libs": {}},
                             correctness={"max_relative_error": 0.0, "max_absolute_error": 0.0,
                                          "extra": None},
                             performance={"latency_ms": 0.0, "reference_latency_ms": 0.0,
                                          "speedup_factor": 0.0})
    dumped_trace = trace(dumped_eval, solution="s1", axes={"M": 2})
    dumped_trace["definition"] = "d1"
    add("dumped_trace", src, "trace", dumped_trace, True)
    add("dumped_workload_trace_with_nulls", "test_load_dump_schema.py::"
        "test_preserve_null_fields_in_trace_json", "trace",
        {**trace(None, axes={"M": 2}, uuid="w2"), "definition": "d1"}, True)
    src = "test_load_dump_schema.py::test_language_and_status_string_decoding"
    add("language_string_triton", src, "solution", solution(triton), True)
    add("passed_with_empty_metric_objects", src, "trace", trace(evaluation(
        log="log", environment={"hardware": "cpu"}, correctness={}, performance={})), True)
    src = "test_load_dump_schema.py::test_save_and_load_json_and_jsonl"
    # save_json_file writes with exclude_unset: defaults such as an axis's "type" are left out.
    add("saved_definition_axes_without_type", src, "definition", definition(
        name="d1", axes={"M": {}, "N": {"value": 4}}, reference="def run(a):\n    return a\n"),
        True)
    for uuid, m in (("w3", 1), ("w4", 2)):
        add(f"saved_workload_line_{uuid}", src, "trace",
            {**trace(None, axes={"M": m}, uuid=uuid), "definition": "d1"}, True)
    add("axis_type_unknown", "test_load_dump_schema.py::test_dict_to_dataclass_with_invalid_fields",
        "definition", {"name": "d", "op_type": "op", "axes": {"M": {"type": "unknown"}},
                       "inputs": {"A": {"shape": ["M"], "dtype": "float32"}},
                       "outputs": {"B": {"shape": ["M"], "dtype": "float32"}},
                       "reference": "def run():\n    pass\n"}, False)

    # -- tests/data/test_read_traces.py and test_trace_set.py: whole folders -------------
    src = "test_read_traces.py::test_end_to_end_minimal_roundtrip"
    add("read_traces_definition", src, "definition", {
        "name": "min_gemm", "op_type": "gemm",
        "axes": {"M": {"type": "var"}, "N": {"type": "const", "value": 4}},
        "inputs": {"A": {"shape": ["M", "N"], "dtype": "float32"}},
        "outputs": {"C": {"shape": ["M", "N"], "dtype": "float32"}},
        "reference": "def run(a):\n    return a\n"}, True)
    add("read_traces_solution", src, "solution", solution(
        {"language": "python", "target_hardware": ["cpu"], "entry_point": "main.py::run"},
        name="torch_min_gemm", definition="min_gemm", author="tester"), True)
    add("read_traces_workload", src, "trace", {
        **trace(None, axes={"M": 2}, uuid="wrt1"), "definition": "min_gemm"}, True)
    add("read_traces_passed", src, "trace", {**trace(evaluation(
        log="log", environment={"hardware": "cpu"}, correctness=OK_CORRECTNESS,
        performance=OK_PERFORMANCE), solution="torch_min_gemm", axes={"M": 2}, uuid="wrt2"),
        "definition": "min_gemm"}, True)
    src = "test_trace_set.py::test_trace_set_from_path_and_queries"
    add("trace_set_runtime_error", src, "trace", {**trace(evaluation(
        "RUNTIME_ERROR", log="log", environment={"hardware": "cpu"}), solution="s2",
        axes={"M": 2}, uuid="tw2"), "definition": "d1"}, True)
    return c


CASES = _cases()

# Cases where we deliberately give another verdict than flashinfer-bench, and why. We never
# write such a record (tests/compat/test_round_trip.py loads all we write with its models).
DIFFERS: dict[str, str] = {}

# The field our SchemaError names for each refused case: refused for the reason its test
# means, not for another flaw of the record.
REFUSED_FIELD: dict[str, str] = {
    "axis_const_-3": "axes.N.value",
    "tensor_shape_string": "inputs.A.shape",
    "tensor_dtype_unknown": "inputs.A.dtype",
    "definition_undefined_axis": "inputs.A.shape[0]",
    "reference_without_run": "reference",
    "reference_syntax_error": "reference",
    "tags_empty_and_int": "tags[0]",
    "tags_empty_string": "tags[0]",
    "tags_int": "tags[0]",
    "constraints_empty_string": "constraints[0]",
    "constraints_not_python": "constraints[0]",
    "input_output_overlap": "outputs",
    "source_empty_path": "sources[0].path",
    "source_content_int": "sources[0].content",
    "entry_point_without_function": "spec.entry_point",
    "entry_point_two_separators": "spec.entry_point",
    "target_hardware_empty": "spec.target_hardware",
    "dependencies_int": "spec.dependencies[0]",
    "solution_duplicate_sources": "sources",
    "solution_entry_not_in_sources": "spec.entry_point",
    "source_path_traversal": "sources[0].path",
    "source_absolute_path": "sources[0].path",
    "workload_negative_axis": "workload.axes.M",
    "workload_input_not_descriptor": "workload.inputs.A",
    "correctness_negative": "evaluation.correctness.max_relative_error",
    "performance_negative_latency": "evaluation.performance.latency_ms",
    "environment_empty_hardware": "evaluation.environment.hardware",
    "passed_without_metrics": "evaluation.correctness",
    "numerical_with_performance_only": "evaluation.correctness",
    "incorrect_shape_with_correctness": "evaluation.correctness",
    "incorrect_shape_with_performance": "evaluation.performance",
    "incorrect_dtype_with_correctness": "evaluation.correctness",
    "incorrect_dtype_with_performance": "evaluation.performance",
    "runtime_error_with_correctness": "evaluation.correctness",
    "runtime_error_with_performance": "evaluation.performance",
    "compile_error_with_correctness": "evaluation.correctness",
    "compile_error_with_performance": "evaluation.performance",
    "axis_type_unknown": "axes.M.type",
}
