"""Workload keys: the variable-axis values of a call, read straight from input shapes.

Shared by dispatch (table lookups) and capture (what a call recorded).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fib_runtime.errors import ShapeError
from fib_runtime.schema import Definition

Key = tuple[int, ...]
KeyExtractor = Callable[[Sequence[Any]], Key]


def key_items(definition: Definition, args: str = "a") -> list[str]:
    """Python source of each variable axis's value, e.g. `a[0].shape[0]`, in axis order."""
    bindings = definition.axis_bindings()
    unbound = [axis for axis in definition.var_axes if axis not in bindings]
    if unbound:
        raise ShapeError(f"{definition.name}: variable axes {', '.join(unbound)} appear in no "
                         "input shape, so a call's workload key cannot be read")
    return [f"{args}[{bindings[axis].arg}].shape[{bindings[axis].dim}]"
            for axis in definition.var_axes]


def key_expression(definition: Definition, args: str = "a") -> str:
    """Python source of the key tuple, e.g. `(a[0].shape[0], a[3].shape[0], )`."""
    return "(" + "".join(f"{item}, " for item in key_items(definition, args)) + ")"


def make_key_extractor(definition: Definition) -> KeyExtractor:
    """A function `args -> key` generated once per definition.

    The key is the tuple of variable-axis values in `definition.var_axes` order, each read as
    `args[i].shape[j]` from the first input that carries it: no loops, no lookups by name.
    """
    namespace: dict[str, Any] = {}
    exec(f"def extract(a):\n    return {key_expression(definition)}\n", namespace)
    extract: KeyExtractor = namespace["extract"]
    extract.__qualname__ = f"extract_key[{definition.name}]"
    return extract


def key_to_axes(definition: Definition, key: Key) -> dict[str, int]:
    """The variable-axis values of a key, by name."""
    return dict(zip(definition.var_axes, key, strict=True))


def axes_to_key(definition: Definition, axes: dict[str, int]) -> Key:
    """The key of a workload's axes (KeyError if a variable axis is missing)."""
    return tuple(int(axes[name]) for name in definition.var_axes)
