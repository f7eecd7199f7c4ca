"""Every definition and solution of the built-in catalogue, discovered from the catalogue
itself (no op type is named here), and example inputs for any definition.

Adding an op to the catalogue is two files (definition JSON, solution module): the generic
tests pick both up from here. The dtype variants of the shipped definitions are sampled
(`CASES`): every solution of the official dtypes, and of the variants one per solution file,
entry function and dtype, on its smallest definition.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from fib_runtime.build import build_reference
from fib_runtime.catalogue import catalogue_root, load_catalogue
from fib_runtime.families import split_dtype
from fib_runtime.measure.inputs import Inputs, materialise
from fib_runtime.schema import AxisVar, Definition, Solution, Workload

ROOT = catalogue_root()
CATALOGUE = load_catalogue(ROOT)
DEFINITIONS: dict[str, Definition] = CATALOGUE.definitions
DEFINITION_PATHS = sorted(ROOT.glob("*/*.json"))
SOLUTION_PATHS = sorted(ROOT.glob("*/solutions/*.py"))
OFFICIAL_NAMES = sorted(n for n in DEFINITIONS if split_dtype(n)[1] is None)
# A scalar input gets this value (a softmax scale, say): any finite value checks semantics.
SCALAR_VALUE = 0.125


# The CPU tests skip definitions whose inputs need more memory than this (the MoE experts of
# Mixtral-8x7B and Qwen3-30B-A3B: their weights); the GPU tests run them.
CPU_INPUT_BYTES = 1 << 30


def input_bytes(definition: Definition) -> int:
    """Bytes of a definition's tensor inputs at its constants (variable axes 1)."""
    from fib_runtime.tensors import torch_dtype

    total = 0
    for spec in definition.inputs.values():
        count = 1
        for axis in spec.shape or ():
            count *= definition.const_axes.get(axis, 1)
        total += count * torch_dtype(spec.dtype).itemsize
    return total


def solution_file(solution_name: str) -> Path:
    """The catalogue file a solution comes from (a file may serve definitions of another op
    type: the prefill files under gqa_paged/ serve the gqa_ragged ones too)."""
    solution = next(s for s in CATALOGUE.solutions if s.name == solution_name)
    source = solution.sources[0]
    return next(p for p in SOLUTION_PATHS if p.name == source.path and
                p.read_text() == source.content)


def _size(definition: Definition) -> int:
    return sum(definition.const_axes.values())


def _sampled(solutions: list[Solution]) -> list[Solution]:
    chosen: dict[tuple[str, ...], Solution] = {}
    for solution in solutions:
        definition = DEFINITIONS[solution.definition]
        dtype = split_dtype(definition.name)[1]
        if dtype is None:
            chosen[(solution.name,)] = solution
            continue
        key = (definition.op_type, solution.spec.entry_point, solution.name.split("__")[1], dtype)
        if key not in chosen or _size(definition) < _size(DEFINITIONS[chosen[key].definition]):
            chosen[key] = solution
    return sorted(chosen.values(), key=lambda s: s.name)


# The solutions the generic tests run: all of the official dtypes, a sample of the variants.
CASES = _sampled(CATALOGUE.solutions)


def import_file(path: Path) -> ModuleType:
    """Import a solution file by path, as the database build does with its single source."""
    name = f"catalogue_{path.parent.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def entry(solution_name: str) -> Callable[..., Any]:
    solution = next(s for s in CATALOGUE.solutions if s.name == solution_name)
    return getattr(import_file(solution_file(solution_name)), solution.spec.entry_function)


def example_axes(definition: Definition, value: int) -> dict[str, int]:
    """Every variable axis set to `value` (a `len_*` axis, the length of an offsets array over
    `value` sequences, to value + 1), then axes defined by a constraint `AXIS == EXPR` over
    other axes computed from it (`len_indptr == batch_size + 1`)."""
    axes = {**definition.const_axes,
            **{n: value + n.startswith("len_") for n, a in definition.axes.items()
               if isinstance(a, AxisVar)}}
    for constraint in definition.constraints or ():
        tree = ast.parse(constraint, mode="eval").body
        if isinstance(tree, ast.Compare) and isinstance(tree.left, ast.Name) and \
                isinstance(tree.ops[0], ast.Eq) and tree.left.id in axes:
            names = {n.id for n in ast.walk(tree.comparators[0]) if isinstance(n, ast.Name)}
            if names <= set(axes):
                axes[tree.left.id] = eval(compile(ast.Expression(tree.comparators[0]),
                                                  constraint, "eval"), {}, dict(axes))
    return {n: v for n, v in axes.items() if isinstance(definition.axes[n], AxisVar)}


def example_inputs(definition: Definition, value: int, device: str = "cpu",
                   scale: float = 1.0) -> Inputs:
    """Random inputs for a workload with `example_axes`, made the way retune makes them
    (index tensors consistent with the axes); float tensors scaled by `scale`. Cached for
    catalogue definitions: call `restore()` after a use that may have written into them."""
    if DEFINITIONS.get(definition.name) is definition:
        return _cached_inputs(definition.name, value, device, scale)
    return _make_inputs(definition, value, device, scale)


@functools.lru_cache(maxsize=8)
def _cached_inputs(name: str, value: int, device: str, scale: float) -> Inputs:
    return _make_inputs(DEFINITIONS[name], value, device, scale)


def _make_inputs(definition: Definition, value: int, device: str, scale: float) -> Inputs:
    import torch

    descriptors = {name: {"type": "scalar", "value": SCALAR_VALUE} if spec.shape is None
                   else {"type": "random"} for name, spec in definition.inputs.items()}
    workload = Workload.from_dict({"uuid": str(uuid.uuid4()),
                                   "axes": example_axes(definition, value),
                                   "inputs": descriptors})
    inputs = materialise(definition, workload, device=device, alternates=0)
    for i, arg in enumerate(inputs.args):
        if isinstance(arg, torch.Tensor) and arg.is_floating_point() and scale != 1.0:
            inputs.args[i] = (arg.float() * scale).to(arg.dtype)
    return Inputs(inputs.args, {i: a.clone() for i, a in enumerate(inputs.args)
                                if isinstance(a, torch.Tensor)})


def reference(name: str) -> Callable[..., Any]:
    return build_reference(DEFINITIONS[name])
