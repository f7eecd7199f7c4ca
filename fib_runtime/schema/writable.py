"""What we may write: only records that flashinfer-bench (0.1.2) also loads.

Its loader stops at the first record it refuses, so one such record written by us would make a
whole database unloadable there. The reader here is more tolerant in a few places (a dtype,
language or binding it does not know yet); the writers refuse those, with the field named.
"""

from __future__ import annotations

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


def check_definition(definition: Definition) -> None:
    """Raise SchemaError (field named) unless both readers load this definition."""
    Definition.from_dict(definition.to_dict())
    for section, specs in (("inputs", definition.inputs), ("outputs", definition.outputs)):
        for name, spec in specs.items():
            if spec.dtype not in BENCH_DTYPES:
                raise SchemaError(f"dtype '{spec.dtype}' is not one flashinfer-bench knows",
                                  field=f"{section}.{name}.dtype")


def check_solution(solution: Solution) -> None:
    """Raise SchemaError (field named) unless both readers load this solution."""
    Solution.from_dict(solution.to_dict())
    spec = solution.spec
    if spec.language not in BENCH_LANGUAGES:
        raise SchemaError(f"language '{spec.language}' is not one of "
                          f"{', '.join(sorted(BENCH_LANGUAGES))}", field="spec.language")
    if spec.binding is not None and spec.binding not in BENCH_BINDINGS:
        raise SchemaError(f"binding '{spec.binding}' is not one of "
                          f"{', '.join(sorted(BENCH_BINDINGS))}", field="spec.binding")


def check_trace(trace: Trace) -> None:
    """Raise SchemaError (field named) unless both readers load this trace or workload line."""
    Trace.from_dict(trace.to_dict())
