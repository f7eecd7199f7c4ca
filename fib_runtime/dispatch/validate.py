"""Debug mode (`validate_outputs`): check every result's shapes and dtypes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fib_runtime.errors import FibError
from fib_runtime.schema import Definition
from fib_runtime.tensors import allocate_outputs


def validated(fn: Callable[..., Any], definition: Definition,
              destination: bool) -> Callable[..., Any]:
    """`fn`, raising FibError when what it produced does not match the definition."""
    n_in = len(definition.inputs)

    def call(*args: Any) -> Any:
        result = fn(*args)
        expected = allocate_outputs(definition, args[:n_in])
        if destination:
            produced = args[n_in:]
        else:
            produced = result if isinstance(result, tuple) else (result,)
        if len(produced) != len(expected) or any(
                tuple(p.shape) != tuple(e.shape) or p.dtype != e.dtype
                for p, e in zip(produced, expected, strict=False)):
            raise FibError(f"{definition.name}: outputs "
                           f"{[(tuple(p.shape), p.dtype) for p in produced]} do not match "
                           f"{[(tuple(e.shape), e.dtype) for e in expected]}")
        return result

    return call
