"""Workload keys: the variable-axis values of a call, read straight from input shapes.

Shared by dispatch (table lookups) and capture (what a call recorded).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class HotKey:
    """The form of a key that dispatch's hot path reads: per variable axis, `numel()` of the
    input that carries it when no other variable axis shapes that input (one int from C, no
    torch.Size built), else the shape entry; then the dtype of the first tensor input and,
    where tensors can be on several devices (a CUDA process), its device index, so that a
    call of another dtype or device is another key (decided once, see dispatch.contract);
    last, where inputs can require grad, whether grad mode is on (`grad_enabled()`, a name
    the frame provides), so that inference keys serve without a per-call autograd test.
    `decode` turns it back into the workload key; a call whose other dimensions differ from
    the definition's decodes to another key, which is why the first call of each hot key is
    checked against the shapes (see frames)."""

    items: tuple[str, ...]  # Python source per axis, then of the dtype, device, grad mode
    scales: tuple[int, ...]  # numel / axis value per axis; 0: the item is the value itself
    tensor: int = 0  # trailing items of the first tensor: 0, 1 (dtype) or 2 (and device)
    grad: bool = False  # a last item: grad mode

    @classmethod
    def of(cls, definition: Definition, args: str = "args", device: bool = True,
           grad: bool = False) -> HotKey:
        bindings = definition.axis_bindings()
        plain = key_items(definition, args)  # raises ShapeError for unbound axes
        items, scales = [], []
        for axis, item in zip(definition.var_axes, plain, strict=True):
            spec = definition.inputs[bindings[axis].input]
            dims = list(spec.shape or ())
            others = [d for i, d in enumerate(dims) if i != bindings[axis].dim]
            consts = [definition.const_axes.get(d) for d in others]
            if all(c for c in consts):
                items.append(f"{args}[{bindings[axis].arg}].numel()")
                scales.append(math.prod(c for c in consts if c))
            else:
                items.append(item)
                scales.append(0)
        first = next((i for i, s in enumerate(definition.inputs.values()) if s.shape is not None),
                     None)
        tensor = [] if first is None else [f"{args}[{first}].dtype"] + (
            [f"{args}[{first}].get_device()"] if device else [])
        return cls((*items, *tensor, *(["grad_enabled()"] if grad else [])), tuple(scales),
                   len(tensor), grad)

    def decode(self, hot: Sequence[Any]) -> Key | None:
        """The workload key of a hot key (without the leading argument count); None when a
        numel is not a whole number of rows."""
        key = []
        for value, scale in zip(hot, self.scales, strict=False):
            if scale and value % scale:
                return None
            key.append(value // scale if scale else value)
        return tuple(key)

    def tail(self, hot: Sequence[Any]) -> tuple[Any, int, bool]:
        """The (dtype, device index, grad mode) a hot key ends with; None, -1 and False where
        it has none."""
        end = len(hot) - self.grad
        tensor = list(hot[end - self.tensor:end]) if self.tensor else []
        return ((tensor[0] if tensor else None), (tensor[1] if len(tensor) > 1 else -1),
                bool(self.grad and hot[-1]))

    def encode(self, key: Key, dtype: Any = None, device: int = -1,
               grad: bool = False) -> tuple[Any, ...]:
        values = tuple(v * s if s else v for v, s in zip(key, self.scales, strict=True))
        return (*values, *(dtype, device)[:self.tensor], *((grad,) if self.grad else ()))
