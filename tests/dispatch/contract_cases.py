"""The calls of the catalogue-wide dispatch property test: for one definition, a call in
every dtype, layout, aliasing, batch and calling form a user may make, each built from the
same random inputs the retune makes (tests/definitions/catalogue_cases.py)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from fib_runtime.build import build_reference
from fib_runtime.schema import Definition
from fib_runtime.tensors import allocate_outputs
from tests.definitions.catalogue_cases import example_inputs

FLOATS = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
RESOLVED = 2  # the variable axes of the key every case but the batch ones is a call of
DEVICE = ["cpu"]  # where the calls' tensors are made (the GPU test sets "cuda")


@dataclass
class Call:
    """One call: positional `args` (or keywords), what the contract says about it (`served`:
    True / False, or None where either is right), and the inputs it may write."""

    name: str
    args: list[Any]
    served: bool | None = None
    keywords: bool = False
    written: set[int] = field(default_factory=set)  # argument positions it may write
    layout: bool = False  # a layout variant: served exactly when contiguous or the solution
    # takes any layout (FIB_ANY_LAYOUT, see dispatch.contract)


def inputs(definition: Definition, var: int = RESOLVED) -> list[Any]:
    """Fresh random inputs on DEVICE (catalogue definitions' inputs are cached there:
    cloned here)."""
    return [a.clone() if isinstance(a, torch.Tensor) else a
            for a in example_inputs(definition, var, DEVICE[0]).args]


def original(definition: Definition) -> Callable[..., Any]:
    """What the decorated function computes: the reference, in either calling convention
    (destination-passing: the results copied into the buffers, which are returned)."""
    reference = build_reference(definition)
    n_inputs = len(definition.inputs)

    def run(*args: Any) -> Any:
        results = reference(*args[:n_inputs])
        if len(args) == n_inputs:
            return results
        results = results if isinstance(results, tuple) else (results,)
        for buffer, result in zip(args[n_inputs:], results, strict=True):
            buffer.copy_(result)
        outputs = tuple(args[n_inputs:])
        return outputs[0] if len(outputs) == 1 else outputs

    return run


def calls(definition: Definition) -> Iterator[Call]:
    """Every call of the property test, in order (the first is the plain one: served)."""
    specs = list(definition.inputs.items())
    tensors = [i for i, (_, s) in enumerate(specs) if s.shape is not None]
    own = specs[tensors[0]][1].dtype  # the activations' dtype
    yield Call("plain", inputs(definition), served=True)
    yield Call("keywords", inputs(definition), served=True, keywords=True)
    for name, dtype in FLOATS.items():
        if name != own:  # every tensor of the activations' dtype in another one
            args = inputs(definition)
            for i in tensors:
                if specs[i][1].dtype == own:
                    args[i] = args[i].to(dtype)
            yield Call(f"dtype {name}", args, served=False)
    for i in tensors:
        name, spec = specs[i]
        if spec.dtype in FLOATS and all(a in definition.const_axes for a in spec.shape or ()):
            other = "float32" if spec.dtype != "float32" else "bfloat16"
            args = inputs(definition)
            args[i] = args[i].to(FLOATS[other])
            yield Call(f"{name} in {other} at a served key", args)
    yield from _layouts(definition, tensors)
    yield from _aliasing(definition, tensors)
    for var in (0, 1):
        yield Call(f"batch {var}", inputs(definition, var), served=True)
    args = inputs(definition)
    first = args[tensors[0]]
    if first.is_floating_point() and first.numel() >= 2:
        first.view(-1)[0] = float("nan")
        first.view(-1)[-1] = float("inf")
        yield Call("NaN and Inf", args, served=True)
    args = inputs(definition)
    floats = [i for i in tensors if args[i].is_floating_point()]
    for i in floats:
        args[i].requires_grad_()
    if floats:
        yield Call("requires grad", args, served=False)


def _layouts(definition: Definition, tensors: list[int]) -> Iterator[Call]:
    names = list(definition.inputs)
    for i in tensors:
        base = inputs(definition)[i]
        variants: dict[str, torch.Tensor] = {"aligned storage offset": _offset(base, 16)}
        if DEVICE[0] == "cpu":  # on a GPU a kernel that assumes 16-byte alignment would fault
            variants["storage offset of one element"] = _offset(base, base.element_size())
        if base.dim() >= 2 and base.shape[0] > 1:
            variants["strided rows"] = _wider(base)
            variants["transposed view"] = base.transpose(0, 1).contiguous().transpose(0, 1)
        if base.dim() == 1 and base.numel() > 1:
            variants["strided"] = torch.stack((base, base), -1)[:, 0]
            if base.is_floating_point():  # an int index broadcast would change its meaning
                variants["stride 0"] = base[:1].expand(base.shape)
        for label, value in variants.items():
            args = inputs(definition)
            args[i] = value
            yield Call(f"{label} {names[i]}", args, served=value.is_contiguous(), layout=True)


def _aliasing(definition: Definition, tensors: list[int]) -> Iterator[Call]:
    specs = list(definition.inputs.items())
    for a in tensors:
        for b in tensors:
            if a < b and specs[a][1].shape == specs[b][1].shape and \
                    specs[a][1].dtype == specs[b][1].dtype:
                args = inputs(definition)
                args[b] = args[a]
                yield Call(f"{specs[a][0]} passed as {specs[b][0]}", args, served=True)
    n_inputs = len(specs)
    args = inputs(definition)
    try:
        buffers = allocate_outputs(definition, args)
    except Exception:  # e.g. a scalar output: no destination-passing calls
        return
    yield Call("destination-passing", [*args, *buffers], served=True,
               written=set(range(n_inputs, n_inputs + len(buffers))))
    for o, spec in enumerate(definition.outputs.values()):
        for i in tensors:
            if specs[i][1].shape == spec.shape and specs[i][1].dtype == spec.dtype:
                args = inputs(definition)
                buffers = allocate_outputs(definition, args)
                buffers[o] = args[i]
                yield Call(f"output {o} aliasing {specs[i][0]}", [*args, *buffers],
                           served=True, written={i, *range(n_inputs, n_inputs + len(buffers))})


def _wider(t: torch.Tensor) -> torch.Tensor:
    """The same values, rows strided: a view into a buffer with a wider last axis."""
    wide = torch.zeros(*t.shape[:-1], t.shape[-1] + 8, dtype=t.dtype, device=t.device)
    wide[..., : t.shape[-1]] = t
    return wide[..., : t.shape[-1]]


def _offset(t: torch.Tensor, nbytes: int) -> torch.Tensor:
    """The same values, contiguous, `nbytes` into their storage."""
    skip = max(1, nbytes // t.element_size())
    flat = torch.zeros(t.numel() + skip, dtype=t.dtype, device=t.device)
    view = flat[skip:].view(t.shape)
    view.copy_(t)
    return view


def same(a: Any, b: Any) -> bool:
    """Bit-for-bit equal, NaN where NaN, dtype and shape included (tuples element-wise)."""
    if isinstance(a, tuple) or isinstance(b, tuple):
        return isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) and \
            all(same(x, y) for x, y in zip(a, b, strict=True))
    if not isinstance(a, torch.Tensor):
        return bool(a == b)
    return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and \
        bool(torch.equal(a, b) or torch.allclose(a.detach().double(), b.detach().double(),
                                                 rtol=0, atol=0, equal_nan=True))


def copied(args: list[Any]) -> list[Any]:
    """A deep copy keeping which arguments share storage, and every stride."""
    return copy.deepcopy(args)

