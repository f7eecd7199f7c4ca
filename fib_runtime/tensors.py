"""The one map between schema dtype names and torch dtypes; output allocation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fib_runtime.errors import ShapeError
from fib_runtime.schema import Definition

# Schema dtype names that hold integers (index tensors, counts); "bool" is its own kind.
INTEGER_DTYPES = frozenset({"int64", "int32", "int16", "int8", "uint8"})
_DTYPE_NAMES = {
    "float32": "float32", "float16": "float16", "bfloat16": "bfloat16",
    "float8_e4m3fn": "float8_e4m3fn", "float8_e5m2": "float8_e5m2",
    "float4_e2m1": "float4_e2m1fn_x2", "int64": "int64", "int32": "int32", "int16": "int16",
    "int8": "int8", "uint8": "uint8", "bool": "bool",
}


def torch_dtype(name: str) -> Any:
    """The torch dtype for a schema dtype name."""
    import torch

    try:
        return getattr(torch, _DTYPE_NAMES[name])
    except (KeyError, AttributeError):
        raise ShapeError(f"dtype '{name}' is not available in this torch") from None


def first_device(values: Sequence[Any]) -> Any:
    """The device of the first tensor among values (CPU when there is none)."""
    import torch

    for value in values:
        if isinstance(value, torch.Tensor):
            return value.device
    return torch.device("cpu")


def allocate_outputs(definition: Definition, inputs: Sequence[Any]) -> list[Any]:
    """Empty output tensors with the shapes and dtypes the inputs imply."""
    import torch

    shapes = definition.output_shapes(definition.axes_from_inputs(inputs))
    device = first_device(inputs)
    outputs = []
    for name, spec in definition.outputs.items():
        shape = shapes[name]
        if shape is None:
            raise ShapeError(f"{definition.name}: output '{name}' is a scalar and cannot be "
                             "pre-allocated")
        outputs.append(torch.empty(shape, dtype=torch_dtype(spec.dtype), device=device))
    return outputs
