"""Materialise a workload's inputs: random by dtype, scalars, blobs, and structured index tensors.

Structured inputs are recognised from names and axes, so the official definitions work too:
- an integer `*indptr*` / `cu_seqlens` input over a `len_*` axis is a monotone offsets array
  (first 0, last = the total it counts, uneven per-sequence lengths);
- an integer `*indices*` input of a definition with a `num_pages` axis holds page ids, a random
  selection (no repeats while there are enough pages, never in order) from [0, num_pages);
- `*last_page_len*` lies in [1, page_size]; other index-like integers (ids, positions, tables)
  stay below the leading size of the tensor they index;
- a random float scalar named `*scale*` is 1/sqrt(head_dim) when a head_dim axis exists.

Where these rules are not enough, an input maker registered for the definition's name, or
for its family (its `family:` tag), makes the inputs it knows (`register_inputs`), else a
built-in maker of its op type (`op_inputs`: sampling distributions, scaled MoE weights); the
rules make the rest. What a maker makes is restored before each check but never re-filled.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fib_runtime.errors import FibError, InputError
from fib_runtime.families import family_of
from fib_runtime.measure.op_inputs import BY_OP_TYPE
from fib_runtime.schema import (
    Definition,
    RandomInput,
    SafetensorsInput,
    ScalarInput,
    TensorSpec,
    Workload,
)
from fib_runtime.tensors import INTEGER_DTYPES, torch_dtype

_INDEX_WORDS = ("indices", "ids", "positions", "table")
_LAST_ITEM = re.compile(r"^\s*(\w+)\s*==\s*(\w+)\[-1\]\.item\(\)\s*$")
_ALTERNATES = 2  # fresh data sets cycled into the inputs between timed runs

# (input name, its spec, the axis values, the workload's seeded torch.Generator) -> the value
# (a CPU tensor or a scalar), or None to leave that input to the naming rules.
InputMaker = Callable[[str, TensorSpec, Mapping[str, int], Any], Any]
INPUT_MAKERS: dict[str, InputMaker] = {}


def register_inputs(name: str, maker: InputMaker) -> None:
    """Make the random inputs of the definition `name`, or of every definition of the family
    `name`, with `maker` first (a definition's own maker wins over its family's). A worker
    process adopts the makers of its parent, so `maker` must be importable (module level)."""
    INPUT_MAKERS[name] = maker


def unregister_inputs(name: str) -> None:
    """Remove the maker registered under `name` (nothing when there is none)."""
    INPUT_MAKERS.pop(name, None)


def input_maker(definition: Definition) -> InputMaker | None:
    """The maker of a definition's inputs: its name's, else its family's, else the built-in
    one of its op type (`op_inputs.BY_OP_TYPE`), else None."""
    found = INPUT_MAKERS.get(definition.name)
    family = family_of(definition) if found is None else None
    found = INPUT_MAKERS.get(family) if family is not None else found
    return found or BY_OP_TYPE.get(definition.op_type)


@dataclass
class Inputs:
    """A workload's call arguments, plus fresh random data to re-fill them between runs.

    `refill(k)` copies the k-th alternate data set into the re-fillable tensors (those with a
    plain `random` descriptor); `restore()` puts the canonical values of every tensor back
    (the values the reference saw).
    """

    args: list[Any]
    canonical: dict[int, Any] = field(default_factory=dict)
    alternates: list[dict[int, Any]] = field(default_factory=list)

    def refill(self, k: int) -> None:
        if self.alternates:
            for i, data in self.alternates[k % len(self.alternates)].items():
                self.args[i].copy_(data)

    def restore(self) -> None:
        for i, data in self.canonical.items():
            self.args[i].copy_(data)


def workload_seed(uuid: str) -> int:
    """A seed fixed by the workload, so every solution and device sees the same inputs."""
    return int.from_bytes(hashlib.blake2b(uuid.encode(), digest_size=8).digest(), "little") >> 1


def materialise(definition: Definition, workload: Workload, *, device: Any = "cpu",
                load_tensor: Callable[[SafetensorsInput], Any] | None = None,
                alternates: int = _ALTERNATES) -> Inputs:
    """Build the call arguments of a workload on `device` (InputError when impossible), with
    `alternates` fresh data sets for re-filling between timed runs."""
    import torch

    values = {**definition.const_axes, **workload.axes}
    missing = [a for a in definition.axes if a not in values]
    if missing:
        raise InputError(f"workload {workload.uuid} gives no value for axes {', '.join(missing)}")
    gen = torch.Generator().manual_seed(workload_seed(workload.uuid))
    maker = _Maker(definition, values, gen)
    args: list[Any] = []
    refillable: list[int] = []
    for i, (name, spec) in enumerate(definition.inputs.items()):
        desc = workload.inputs.get(name)
        if desc is None:
            raise InputError(f"workload {workload.uuid} has no descriptor for input '{name}'")
        if isinstance(desc, ScalarInput):
            args.append(desc.value)
        elif isinstance(desc, SafetensorsInput):
            args.append(_load(desc, name, load_tensor).to(device))
        elif isinstance(desc, RandomInput):
            value, plain = maker.make(name, spec)
            args.append(value.to(device) if isinstance(value, torch.Tensor) else value)
            if plain and isinstance(value, torch.Tensor):
                refillable.append(i)
    # Every tensor is restored before a check, so a solution that writes into an input
    # (indices included) cannot spoil the next one; only plain random ones are re-filled.
    inputs = Inputs(args, {i: a.clone() for i, a in enumerate(args)
                           if isinstance(a, torch.Tensor)})
    specs = list(definition.inputs.values())
    for _ in range(alternates):
        inputs.alternates.append({i: maker.plain(specs[i], tuple(args[i].shape)).to(device)
                                  for i in refillable})
    return inputs


def _load(desc: SafetensorsInput, name: str,
          load_tensor: Callable[[SafetensorsInput], Any] | None) -> Any:
    if load_tensor is None:
        raise InputError(f"input '{name}' needs a blob but no database was given")
    try:
        return load_tensor(desc)
    except FibError as exc:
        raise InputError(f"input '{name}': {exc}") from exc


class _Maker:
    """Generates random inputs for one workload from one seeded generator."""

    def __init__(self, definition: Definition, values: Mapping[str, int], gen: Any) -> None:
        self.definition = definition
        self.values = values
        self.gen = gen
        self.totals = _indptr_totals(definition)
        self.lengths: dict[str, list[int]] = {}  # per len_* axis: lengths given out so far
        self.custom = input_maker(definition)

    def make(self, name: str, spec: TensorSpec) -> tuple[Any, bool]:
        """The value of one random input, and whether it is plain (safe to re-fill)."""
        if self.custom is not None:
            value = self.custom(name, spec, self.values, self.gen)
            if value is not None:
                return value, False
        if spec.shape is None:
            return self._scalar(name, spec), False
        shape = tuple(self.values[a] for a in spec.shape)
        lowered = name.lower()
        if spec.dtype in INTEGER_DTYPES:
            if ("indptr" in lowered or "cu_seqlens" in lowered) and len(spec.shape) == 1:
                return self._indptr(name, spec), False
            if "indices" in lowered and "num_pages" in self.values:
                return self._pages(spec, shape), False
            if "last_page_len" in lowered and "page_size" in self.values:
                return self._ints(spec, shape, 1, self.values["page_size"] + 1), False
            if any(word in lowered for word in _INDEX_WORDS):
                return self._ints(spec, shape, 0, self._index_bound(spec)), False
        return self.plain(spec, shape), True

    def plain(self, spec: TensorSpec, shape: tuple[int, ...]) -> Any:
        """Random values of the dtype: floats ~ N(0, 1), small positive ints, mixed bools."""
        import torch

        dtype = torch_dtype(spec.dtype)
        if spec.dtype in INTEGER_DTYPES:
            return self._ints(spec, shape, 1, 9)
        if spec.dtype == "bool":
            value = torch.randint(0, 2, shape, generator=self.gen).bool()
            if value.numel():
                value.view(-1)[0] = True
            return value
        if spec.dtype == "float4_e2m1":
            return torch.randint(1, 256, shape, generator=self.gen, dtype=torch.uint8).view(dtype)
        value = torch.randn(shape, generator=self.gen)
        if value.numel():  # N(0, 1) cannot be all zeros in practice; make it certain
            value.view(-1)[0] = 1.0
        return value.to(dtype)

    def _ints(self, spec: TensorSpec, shape: tuple[int, ...], low: int, high: int) -> Any:
        import torch

        high = max(high, low + 1)
        return torch.randint(low, high, shape, generator=self.gen).to(torch_dtype(spec.dtype))

    def _scalar(self, name: str, spec: TensorSpec) -> int | float | bool:
        import torch

        lowered = name.lower()
        if spec.dtype == "bool":
            return True
        if spec.dtype in INTEGER_DTYPES:
            return 1
        head_dim = self._head_dim()
        if "scale" in lowered and head_dim:
            return 1.0 / math.sqrt(head_dim)
        if "eps" in lowered:
            return 1e-6
        return 0.5 + float(torch.rand((), generator=self.gen))

    def _head_dim(self) -> int | None:
        if "head_dim" in self.values:
            return self.values["head_dim"]
        named = sorted(a for a in self.values if "head_dim" in a)
        return self.values[named[0]] if named else None

    def _indptr(self, name: str, spec: TensorSpec) -> Any:
        """Offsets 0 = p[0] <= p[1] <= ... <= p[n-1] = total, with uneven gaps."""
        import torch

        len_axis = spec.shape[0]  # type: ignore[index]
        count = self.values[len_axis] - 1
        total = self._total(name)
        if count < 0:
            raise InputError(f"input '{name}': axis {len_axis} must be at least 1")
        # A later offsets array over the same sequences (kv after qo) keeps each sequence at
        # least as long as in the earlier one, so causal masks never empty a row.
        floor = self.lengths.get(len_axis)
        if floor is None or sum(floor) > total:
            floor = [0] * count
        lengths = [f + extra for f, extra in
                   zip(floor, _split(total - sum(floor), count, self.gen), strict=True)]
        self.lengths.setdefault(len_axis, lengths)
        offsets = torch.tensor([0, *lengths]).cumsum(0)
        return offsets.to(torch_dtype(spec.dtype))

    def _total(self, name: str) -> int:
        axis = self.totals.get(name)
        if axis is None:
            prefix = name.lower().split("indptr")[0].rstrip("_")
            candidates = [f"num_{prefix}_indices", f"total_{prefix}", f"total_{prefix[:1]}",
                          "total_seq_len" if "cu_seqlens" in name.lower() else ""]
            axis = next((c for c in candidates if c and c in self.values), None)
        if axis is None:
            raise InputError(f"input '{name}': cannot tell which axis its last offset equals "
                             "(add a constraint 'AXIS == NAME[-1].item()')")
        return self.values[axis]

    def _pages(self, spec: TensorSpec, shape: tuple[int, ...]) -> Any:
        """Page ids in [0, num_pages): distinct while there are enough pages, shuffled."""
        import torch

        pages = self.values["num_pages"]
        count = math.prod(shape)
        if pages <= 0 and count:
            raise InputError("indices into an empty page pool (num_pages = 0)")
        if count <= pages:
            ids = torch.randperm(pages, generator=self.gen)[:count]
        else:
            ids = torch.randint(0, pages, (count,), generator=self.gen)
        return ids.reshape(shape).to(torch_dtype(spec.dtype))

    def _index_bound(self, spec: TensorSpec) -> int:
        """The leading size of the first floating input whose leading axis this one lacks."""
        own = set(spec.shape or ())
        for other in self.definition.inputs.values():
            if other.shape and other.dtype not in INTEGER_DTYPES and other.shape[0] not in own:
                return self.values[other.shape[0]]
        return 16


def _indptr_totals(definition: Definition) -> dict[str, str]:
    """Input name -> the axis its last element equals, from constraints like
    `num_kv_indices == kv_indptr[-1].item()` (either side)."""
    totals = {}
    for expr in definition.constraints or ():
        match = _LAST_ITEM.match(expr)
        if match:
            totals[match.group(2)] = match.group(1)
        else:
            flipped = re.match(r"^\s*(\w+)\[-1\]\.item\(\)\s*==\s*(\w+)\s*$", expr)
            if flipped:
                totals[flipped.group(1)] = flipped.group(2)
    return totals


def _split(total: int, parts: int, gen: Any) -> list[int]:
    """`total` split into `parts` random, uneven non-negative lengths (each >= 1 if it can)."""
    import torch

    if parts == 0:
        if total:
            raise InputError(f"cannot place {total} items into zero sequences")
        return []
    if total >= parts:  # distinct cut points: every part gets at least one
        cuts = (torch.randperm(total - 1, generator=gen)[:parts - 1] + 1).sort().values.tolist()
    else:
        cuts = torch.randint(0, total + 1, (parts - 1,), generator=gen).sort().values.tolist()
    bounds = [0, *cuts, total]
    return [b - a for a, b in itertools.pairwise(bounds)]
