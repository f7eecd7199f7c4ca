"""Definition: what an op computes, its axes, tensors and PyTorch reference."""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fib_runtime.errors import SchemaError, ShapeError
from fib_runtime.schema._parse import (
    as_dict,
    check,
    extras,
    fail,
    non_negative_int,
    opt,
    put,
    req,
    str_list,
    text,
)

DTYPES = frozenset({
    "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2", "float4_e2m1",
    "int64", "int32", "int16", "int8", "uint8", "bool",
})


@dataclass(frozen=True, slots=True)
class AxisConst:
    """An axis whose size is fixed by the definition."""

    value: int
    description: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "const", "value": self.value}
        put(out, "description", self.description)
        return {**out, **self.extra}


@dataclass(frozen=True, slots=True)
class AxisVar:
    """An axis whose size changes from call to call (part of the workload key)."""

    description: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "var"}
        put(out, "description", self.description)
        return {**out, **self.extra}


Axis = AxisConst | AxisVar


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output: axis names (None for a Python scalar) and dtype."""

    shape: tuple[str, ...] | None
    dtype: str
    description: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "shape": None if self.shape is None else list(self.shape), "dtype": self.dtype,
        }
        put(out, "description", self.description)
        return {**out, **self.extra}


@dataclass(frozen=True, slots=True)
class AxisBinding:
    """Where a variable axis is read from: input number `arg`, dimension `dim`."""

    axis: str
    input: str
    arg: int
    dim: int


_AXIS_KEYS = frozenset({"type", "value", "description"})
_SPEC_KEYS = frozenset({"shape", "dtype", "description"})
_DEF_KEYS = frozenset({
    "name", "op_type", "axes", "inputs", "outputs", "reference", "tags", "description",
    "constraints",
})


@dataclass(frozen=True, slots=True)
class Definition:
    """A FlashInfer Trace Definition. Input order is the calling convention."""

    name: str
    op_type: str
    axes: Mapping[str, Axis]
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    reference: str
    description: str | None = None
    tags: tuple[str, ...] | None = None
    constraints: tuple[str, ...] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> Definition:
        data = as_dict(data, "")
        name = text(data, "name", "")
        axes = {_name(key, "axes"): _parse_axis(value, f"axes.{key}")
                for key, value in as_dict(req(data, "axes", dict, ""), "axes").items()}
        inputs = _parse_specs(req(data, "inputs", dict, ""), "inputs", axes)
        outputs = _parse_specs(req(data, "outputs", dict, ""), "outputs", axes)
        overlap = sorted(set(inputs) & set(outputs))
        if overlap:
            raise fail("outputs", f"names also used by inputs: {', '.join(overlap)}")
        reference = text(data, "reference", "")
        _check_reference(reference)
        constraints = str_list(data, "constraints", "")
        for i, expr in enumerate(constraints or ()):
            try:
                ast.parse(expr, mode="eval")
            except SyntaxError as exc:
                raise fail(f"constraints[{i}]", f"not a Python expression: {exc.msg}") from None
            except (RecursionError, MemoryError):
                raise fail(f"constraints[{i}]", "nested too deeply to parse") from None
        return cls(
            name=name, op_type=text(data, "op_type", ""), axes=axes, inputs=inputs,
            outputs=outputs, reference=reference, description=opt(data, "description", str, ""),
            tags=str_list(data, "tags", ""), constraints=constraints,
            extra=extras(data, _DEF_KEYS),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "op_type": self.op_type}
        put(out, "description", self.description)
        put(out, "tags", None if self.tags is None else list(self.tags))
        out["axes"] = {k: a.to_dict() for k, a in self.axes.items()}
        put(out, "constraints", None if self.constraints is None else list(self.constraints))
        out["inputs"] = {k: s.to_dict() for k, s in self.inputs.items()}
        out["outputs"] = {k: s.to_dict() for k, s in self.outputs.items()}
        out["reference"] = self.reference
        return {**out, **self.extra}

    # -- helpers over axes -------------------------------------------------------------

    @property
    def var_axes(self) -> tuple[str, ...]:
        """Names of the variable axes, in declaration order (the workload key order)."""
        return tuple(k for k, a in self.axes.items() if isinstance(a, AxisVar))

    @property
    def const_axes(self) -> dict[str, int]:
        return {k: a.value for k, a in self.axes.items() if isinstance(a, AxisConst)}

    def axis_bindings(self) -> dict[str, AxisBinding]:
        """For each variable axis, the first input dimension that carries it."""
        found: dict[str, AxisBinding] = {}
        for arg, (input_name, spec) in enumerate(self.inputs.items()):
            for dim, axis in enumerate(spec.shape or ()):
                if axis not in found and isinstance(self.axes[axis], AxisVar):
                    found[axis] = AxisBinding(axis, input_name, arg, dim)
        return found

    def axes_from_inputs(self, inputs: Sequence[Any]) -> dict[str, int]:
        """Axis values read from input shapes; every dimension must agree (ShapeError)."""
        if len(inputs) < len(self.inputs):
            raise ShapeError(f"{self.name}: expected {len(self.inputs)} inputs, got {len(inputs)}")
        values = self.const_axes
        for (input_name, spec), value in zip(self.inputs.items(), inputs, strict=False):
            if spec.shape is None:
                continue
            shape = tuple(value.shape)
            if len(shape) != len(spec.shape):
                raise ShapeError(
                    f"{self.name}: input '{input_name}' has {len(shape)} dimensions, "
                    f"expected {len(spec.shape)} {list(spec.shape)}")
            for axis, size in zip(spec.shape, shape, strict=True):
                expected = values.setdefault(axis, int(size))
                if expected != size:
                    raise ShapeError(
                        f"{self.name}: input '{input_name}' has {axis}={size}, "
                        f"but {axis}={expected} elsewhere")
        return values

    def output_shapes(self, axes: Mapping[str, int]) -> dict[str, tuple[int, ...] | None]:
        """Output shapes for given axis values (constants filled in)."""
        return self._shapes(self.outputs, axes)

    def input_shapes(self, axes: Mapping[str, int]) -> dict[str, tuple[int, ...] | None]:
        """Input shapes for given axis values (constants filled in; None for a scalar)."""
        return self._shapes(self.inputs, axes)

    def _shapes(self, specs: Mapping[str, TensorSpec], axes: Mapping[str, int]
                ) -> dict[str, tuple[int, ...] | None]:
        values = {**self.const_axes, **axes}
        missing = [a for a in self.axes if a not in values]
        if missing:
            raise ShapeError(f"{self.name}: no value for axes {', '.join(missing)}")
        return {name: None if spec.shape is None else tuple(values[a] for a in spec.shape)
                for name, spec in specs.items()}


def _parse_axis(value: Any, path: str) -> Axis:
    """An axis; without "type" (flashinfer-bench omits defaults) a `value` makes it const."""
    data = as_dict(value, path)
    if "type" in data:
        kind = req(data, "type", str, path)
    else:
        kind = "var" if data.get("value") is None else "const"
    description = opt(data, "description", str, path)
    if kind == "const":
        size = non_negative_int(req(data, "value", int, path), f"{path}.value")
        return AxisConst(size, description, extras(data, _AXIS_KEYS))
    if kind == "var":
        return AxisVar(description, extras(data, _AXIS_KEYS))
    raise fail(f"{path}.type", f"must be 'const' or 'var', got {kind!r}")


def _name(key: str, path: str) -> str:
    """A key naming an axis, input or output: never empty."""
    if not key:
        raise fail(path, "names must not be empty")
    return key


def _parse_specs(value: Any, path: str, axes: Mapping[str, Axis]) -> dict[str, TensorSpec]:
    specs = {}
    for name, raw in as_dict(value, path).items():
        where = f"{path}.{_name(name, path)}"
        data = as_dict(raw, where)
        if "shape" not in data:
            raise fail(f"{where}.shape", "required field is missing (null for a scalar)")
        shape = None
        if data["shape"] is not None:
            shape = tuple(check(a, str, f"{where}.shape[{i}]")
                          for i, a in enumerate(check(data["shape"], list, f"{where}.shape")))
            for i, axis in enumerate(shape):
                if axis not in axes:
                    raise fail(f"{where}.shape[{i}]", f"unknown axis '{axis}'")
        dtype = req(data, "dtype", str, where)
        if dtype not in DTYPES:
            raise fail(f"{where}.dtype", f"unknown dtype '{dtype}'")
        specs[name] = TensorSpec(shape, dtype, opt(data, "description", str, where),
                                 extras(data, _SPEC_KEYS))
    return specs


def _check_reference(source: str) -> None:
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise SchemaError(f"does not parse: {exc.msg} (line {exc.lineno})",
                          field="reference") from None
    except (RecursionError, MemoryError):  # a hostile nesting, thousands of levels deep
        raise fail("reference", "nested too deeply to parse") from None
    if not any(isinstance(node, ast.FunctionDef) and node.name == "run" for node in tree.body):
        raise fail("reference", "must define a top-level function 'run'")
