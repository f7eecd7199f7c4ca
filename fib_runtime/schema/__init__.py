"""The FlashInfer Trace schema: plain frozen records parsed from and dumped to JSON dicts."""

from fib_runtime.schema.definition import (
    DTYPES,
    Axis,
    AxisBinding,
    AxisConst,
    AxisVar,
    Definition,
    TensorSpec,
)
from fib_runtime.schema.solution import BuildSpec, Solution, SourceFile, check_relative_path
from fib_runtime.schema.trace import (
    Correctness,
    Environment,
    Evaluation,
    InputDescriptor,
    Performance,
    RandomInput,
    SafetensorsInput,
    ScalarInput,
    Status,
    Trace,
    Workload,
)

__all__ = [
    "DTYPES", "Axis", "AxisBinding", "AxisConst", "AxisVar", "BuildSpec", "Correctness",
    "Definition", "Environment", "Evaluation", "InputDescriptor", "Performance",
    "RandomInput", "SafetensorsInput", "ScalarInput", "Solution", "SourceFile", "Status",
    "TensorSpec", "Trace", "Workload", "check_relative_path",
]
