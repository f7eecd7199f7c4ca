"""Bridge calling conventions: value-returning callers and destination-passing solutions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fib_runtime.build.loader import Built
from fib_runtime.schema import Definition
from fib_runtime.tensors import allocate_outputs


def value_returning(built: Built, definition: Definition) -> Callable[..., Any]:
    """Call with the inputs, get the outputs (a tensor, or a tuple when several)."""
    if not built.dps:
        return built.fn
    fn = built.fn
    single = len(definition.outputs) == 1

    def call(*inputs: Any) -> Any:
        outputs = allocate_outputs(definition, inputs)
        fn(*inputs, *outputs)
        return outputs[0] if single else tuple(outputs)

    return call


def destination_passing(built: Built, definition: Definition) -> Callable[..., Any]:
    """Call with the inputs then the pre-allocated outputs, which are filled in place."""
    if built.dps:
        return built.fn
    fn = built.fn
    n_inputs = len(definition.inputs)

    def call(*args: Any) -> None:
        results = fn(*args[:n_inputs])
        if not isinstance(results, tuple):
            results = (results,)
        for out, result in zip(args[n_inputs:], results, strict=True):
            out.copy_(result)

    return call
