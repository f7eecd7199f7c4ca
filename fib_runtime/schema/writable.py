"""What we may write: only records that flashinfer-bench (0.1.2) also loads.

Its loader stops at the first record it refuses, so one such record written by us would make a
whole database unloadable there. The reader here is more tolerant in a few places (a dtype,
language or binding it does not know yet); the writers refuse those, with the field named.
"""

from __future__ import annotations

from typing import Any

from fib_runtime.errors import SchemaError
from fib_runtime.schema.definition import Definition
from fib_runtime.schema.solution import Solution
from fib_runtime.schema.trace import Trace

# The closed lists of flashinfer-bench's models (its DType, SupportedLanguages and
# SupportedBindings enums).
BENCH_DTYPES = frozenset({
    "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2", "float4_e2m1",
    "int64", "int32", "int16", "int8", "bool",
})
BENCH_LANGUAGES = frozenset({"python", "triton", "cpp", "cuda", "tilelang"})
BENCH_BINDINGS = frozenset({"tvm-ffi", "torch"})


def check_definition(definition: Definition) -> dict[str, Any]:
    """The definition as written; SchemaError (field named) unless both readers load it."""
    data = definition.to_dict()
    Definition.from_dict(data)
    for section, specs in (("inputs", definition.inputs), ("outputs", definition.outputs)):
        for name, spec in specs.items():
            if spec.dtype not in BENCH_DTYPES:
                raise SchemaError(f"dtype '{spec.dtype}' is not one flashinfer-bench knows",
                                  field=f"{section}.{name}.dtype")
    return data


def check_solution(solution: Solution) -> dict[str, Any]:
    """The solution as written; SchemaError (field named) unless both readers load it."""
    data = solution.to_dict()
    Solution.from_dict(data)
    spec = solution.spec
    if spec.language not in BENCH_LANGUAGES:
        raise SchemaError(f"language '{spec.language}' is not one of "
                          f"{', '.join(sorted(BENCH_LANGUAGES))}", field="spec.language")
    if spec.binding is not None and spec.binding not in BENCH_BINDINGS:
        raise SchemaError(f"binding '{spec.binding}' is not one of "
                          f"{', '.join(sorted(BENCH_BINDINGS))}", field="spec.binding")
    return data


def check_trace(trace: Trace) -> dict[str, Any]:
    """The trace or workload line as written; SchemaError (field named) unless both readers
    load it."""
    data = trace.to_dict()
    Trace.from_dict(data)
    return data
