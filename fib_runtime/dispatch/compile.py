"""torch.compile support: each applied definition becomes a torch.library custom op.

Eager calls never pay for this: the custom op replaces a decorated function only while
dynamo traces it (torch.compiler.substitute_in_graph), and its real implementation is the
ordinary dispatch path. The fake implementation returns outputs with the definition's
shapes and dtypes.

What dynamo traces is decided at trace time: the custom op for a value-returning call of
the definition's dtypes that autograd does not record (see contract.Contract.traceable);
the decorated function's own code for anything else, and whenever the op is not registered
(dispatch never enabled with a database that has the definition). Dynamo guards on what
the decision read (grad mode, the inputs' dtypes and requires_grad, the registry), so a
training step traces the original with its autograd formula, at no runtime cost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from fib_runtime.dispatch.contract import Contract
from fib_runtime.schema import AxisConst, Definition
from fib_runtime.tensors import first_device, torch_dtype

log = logging.getLogger("fib_runtime.dispatch")
NAMESPACE = "fib"
_SCALAR_TYPES = {"bool": "bool", "int64": "int", "int32": "int", "int16": "int", "int8": "int"}
_ops: dict[str, tuple[Any, tuple[str, ...], Contract]] = {}
_lock = threading.Lock()
_library: Any = None


def make_traceable(wrapper: Callable[..., Any], name: str,
                   original: Callable[..., Any]) -> None:
    """Let dynamo see `wrapper` as the custom op of definition `name`, or as `original`.

    The op itself is registered eagerly (see `register`) when dispatch or capture is switched
    on, because dynamo traces this replacement and cannot trace a registration.
    """
    try:
        import torch
    except ImportError:
        return

    def traced(*args: Any, **kwargs: Any) -> Any:
        entry = _ops.get(name)
        if entry is None:
            return original(*args, **kwargs)
        op, names, contract = entry
        ordered = list(args) + [kwargs[n] for n in names[len(args):] if n in kwargs]
        if len(ordered) != len(names) or len(args) + len(kwargs) != len(names) or \
                not contract.traceable(ordered):
            return original(*args, **kwargs)
        return op(*ordered)

    try:
        torch.compiler.substitute_in_graph(wrapper, skip_signature_check=True)(traced)
    except Exception as exc:  # an older torch: eager dispatch still works
        log.debug("torch.compile substitution unavailable for %s: %s", name, exc)


def register(definition: Definition, eager: Callable[..., Any]) -> None:
    """Register `torch.ops.fib.<definition>` once; its real implementation is `eager`."""
    global _library
    if definition.name in _ops:
        return
    import torch

    with _lock:
        if definition.name in _ops:
            return
        if _library is None:
            _library = torch.library.Library(NAMESPACE, "FRAGMENT")
        op_name = "".join(c if c.isalnum() else "_" for c in definition.name)
        _library.define(f"{op_name}{_schema(definition)}")
        _library.impl(op_name, lambda *args: eager(*args), "CompositeExplicitAutograd")
        torch.library.register_fake(f"{NAMESPACE}::{op_name}",
                                    lambda *args: _fake_outputs(definition, args),
                                    lib=_library)
        op = getattr(getattr(torch.ops, NAMESPACE), op_name)
        _ops[definition.name] = (op, tuple(definition.inputs), Contract.of(definition))


def _schema(definition: Definition) -> str:
    params = []
    for name, spec in definition.inputs.items():
        kind = "Tensor" if spec.shape is not None else _SCALAR_TYPES.get(spec.dtype, "float")
        params.append(f"{kind} {name}")
    outputs = ["Tensor"] * len(definition.outputs)
    returns = outputs[0] if len(outputs) == 1 else f"({', '.join(outputs)})"
    return f"({', '.join(params)}) -> {returns}"


def _fake_outputs(definition: Definition, args: tuple[Any, ...]) -> Any:
    """Empty outputs shaped from the inputs' (possibly symbolic) sizes."""
    import torch

    sizes: dict[str, Any] = {}
    for name, axis in definition.axes.items():
        if isinstance(axis, AxisConst):
            sizes[name] = axis.value
    for value, spec in zip(args, definition.inputs.values(), strict=False):
        for axis, size in zip(spec.shape or (), getattr(value, "shape", ()), strict=False):
            sizes.setdefault(axis, size)
    device = first_device(args)
    outputs = [torch.empty([sizes[a] for a in spec.shape or ()], dtype=torch_dtype(spec.dtype),
                           device=device) for spec in definition.outputs.values()]
    return outputs[0] if len(outputs) == 1 else tuple(outputs)
