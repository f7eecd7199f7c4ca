"""Bridge calling conventions, with adapters generated once per definition.

A value-returning caller of a destination-passing solution gets its outputs allocated by a
function whose shapes are read inline from the inputs (`a[0].shape[0]`, constants as
literals), in the definition's dtypes (dispatch serves only calls of those dtypes, see
dispatch.contract), or, where an output has the shape and dtype of an input, with one
`torch.empty_like(input, memory_format=torch.contiguous_format)`, the cheapest allocation a
user would write (no shape tuple built per call); a destination-passing caller of a
value-returning solution gets the results copied into its buffers. Either way a
destination-passing call returns its output buffers as the value-returning call returns its
results (a tensor, or a tuple), whatever the solution itself returns. No per-call axis
derivation or validation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fib_runtime.build.loader import Built
from fib_runtime.errors import ShapeError
from fib_runtime.schema import AxisConst, Definition
from fib_runtime.tensors import torch_dtype


def value_returning(built: Built, definition: Definition) -> Callable[..., Any]:
    """Call with the inputs, get the outputs (a tensor, or a tuple when several)."""
    if not built.dps:
        return built.fn
    inputs = [f"a{i}" for i in range(len(definition.inputs))]
    outputs = [f"o{i}" for i in range(len(definition.outputs))]
    device_of = _first_tensor_input(definition)
    lines = [f"def call({', '.join(inputs)}):"]
    namespace: dict[str, Any] = {"fn": built.fn}
    for i, (name, spec) in enumerate(definition.outputs.items()):
        like = next((j for j, s in enumerate(definition.inputs.values())
                     if s.shape is not None and s.shape == spec.shape and s.dtype == spec.dtype),
                    None)
        if like is not None:
            import torch

            namespace.update(empty_like=torch.empty_like, CONTIGUOUS=torch.contiguous_format)
            lines.append(f"    o{i} = empty_like(a{like}, memory_format=CONTIGUOUS)")
            continue
        namespace[f"d{i}"] = torch_dtype(spec.dtype)
        shape = _shape_source(definition, name)
        lines.append(f"    o{i} = a{device_of}.new_empty({shape}, dtype=d{i})")
    lines.append(f"    fn({', '.join(inputs + outputs)})")
    lines.append(f"    return {_returned(outputs)}")
    return _generate(lines, namespace, f"value-returning {built.name}")


def destination_passing(built: Built, definition: Definition) -> Callable[..., Any]:
    """Call with the inputs then the pre-allocated outputs, which are filled in place; the
    outputs are returned as a value-returning call returns them (a tensor, or a tuple)."""
    inputs = [f"a{i}" for i in range(len(definition.inputs))]
    outputs = [f"o{i}" for i in range(len(definition.outputs))]
    lines = [f"def call({', '.join(inputs + outputs)}):"]
    if built.dps:
        lines.append(f"    fn({', '.join(inputs + outputs)})")
    elif len(outputs) == 1:
        lines.append(f"    o0.copy_(fn({', '.join(inputs)}))")
    else:
        lines.append(f"    r = fn({', '.join(inputs)})")
        lines += [f"    o{i}.copy_(r[{i}])" for i in range(len(outputs))]
    lines.append(f"    return {_returned(outputs)}")
    return _generate(lines, {"fn": built.fn}, f"destination-passing {built.name}")


def _returned(outputs: list[str]) -> str:
    return outputs[0] if len(outputs) == 1 else "(" + ", ".join(outputs) + ",)"


def _shape_source(definition: Definition, output: str) -> str:
    """Python source of an output's shape tuple, read from the inputs `a0, a1, ...`."""
    shape = definition.outputs[output].shape
    if shape is None:
        raise ShapeError(f"{definition.name}: output '{output}' is a scalar and cannot be "
                         "pre-allocated")
    bindings = definition.axis_bindings()
    parts = []
    for axis in shape:
        spec = definition.axes[axis]
        if isinstance(spec, AxisConst):
            parts.append(str(spec.value))
        elif axis in bindings:
            parts.append(f"a{bindings[axis].arg}.shape[{bindings[axis].dim}]")
        else:
            raise ShapeError(f"{definition.name}: output axis '{axis}' appears in no input "
                             "shape, so the output cannot be allocated")
    return "(" + "".join(f"{p}, " for p in parts) + ")"


def _first_tensor_input(definition: Definition) -> int:
    for i, spec in enumerate(definition.inputs.values()):
        if spec.shape is not None:
            return i
    raise ShapeError(f"{definition.name}: no tensor input to allocate outputs like")


def _generate(lines: list[str], namespace: dict[str, Any], label: str) -> Callable[..., Any]:
    exec(compile("\n".join(lines) + "\n", f"<fib {label}>", "exec"), namespace)
    call: Callable[..., Any] = namespace["call"]
    return call
