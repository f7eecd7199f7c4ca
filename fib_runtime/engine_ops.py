"""An engine's op -> the shipped definition that computes it: the one path every adapter takes.

An op (an engine's RMSNorm, its fused residual-add RMSNorm, SiluAndMul; FlashInfer's
rmsnorm, fused_add_rmsnorm and silu_and_mul) is a definition family called with a size, an
eps (norms) and a dtype. Its definition's name is `families.definition_name`'s, the name the
transformers adapter's `families.resolve` gives too; an engine adapter routes a call only to
a definition the catalogue ships under that name, with every tensor input in the call's dtype.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from fib_runtime.families import (
    DTYPE_SUFFIXES,
    definition_name,
    eps_of,
    name_pattern,
    split_dtype,
)
from fib_runtime.schema import Definition

# The ops the engine adapters route (each a family), and the family constant its size is.
SIZES = {"rmsnorm": "hidden_size", "fused_add_rmsnorm_residual": "hidden_size",
         "silu_and_mul": "intermediate_size"}


@functools.cache
def _shipped() -> dict[str, Definition]:
    from fib_runtime.catalogue import load_catalogue

    return load_catalogue().definitions


@functools.cache
def definition_for(op: str, size: int, eps: float | None, dtype: str) -> str | None:
    """The shipped definition computing `op` at this size, eps and dtype, or None.

    `dtype` is the definition's spelling ("bfloat16"; "float16" / "float32" find the
    `_fp16` / `_fp32` variants); an eps must be the definition's exactly (None: no eps, e.g.
    activations).
    """
    if dtype not in DTYPE_SUFFIXES:
        return None
    constants: dict[str, float | int] = {SIZES[op]: size}
    if eps is not None:
        constants["eps"] = eps
    name = definition_name(op, _shipped(), dtype, **constants)
    definition = _shipped().get(name)
    if definition is None or any(spec.dtype != dtype for spec in definition.inputs.values()
                                 if spec.shape):
        return None
    return name


def shipped(ops: Iterable[str]) -> list[str]:
    """Every shipped definition of these ops in bfloat16 (no dtype variants), sorted."""
    prefixes = tuple(name_pattern(op).split("{", 1)[0] for op in ops)
    return sorted(n for n in _shipped()
                  if n.startswith(prefixes) and split_dtype(n)[1] is None)


def shipped_eps(name: str) -> float | None:
    """The eps of a shipped definition (None: it has none); KeyError if not shipped."""
    return eps_of(_shipped()[name])


def shipped_size(name: str) -> int:
    """The size a shipped op definition's name carries (rmsnorm_h4096 -> 4096,
    silu_and_mul_i14336_fp16 -> 14336)."""
    return int(split_dtype(name)[0].rsplit("_", 1)[1][1:])


MOE_PREFIX = "moe_bf16_topk"  # the bfloat16 MoE experts family's names


def shipped_moe() -> list[str]:
    """Every shipped bfloat16 MoE experts definition, sorted."""
    return sorted(n for n in _shipped() if n.startswith(MOE_PREFIX))


@functools.cache
def moe_definition_for(top_k: int, experts: int, hidden: int, intermediate: int) -> str | None:
    """The shipped bfloat16 MoE experts definition (`moe_bf16_topk{k}_e{E}_h{H}_i{I}`:
    topk_weights / topk_ids in, SiLU-and-mul experts with w13 = [gate; up]) for these
    constants, or None."""
    name = f"{MOE_PREFIX}{top_k}_e{experts}_h{hidden}_i{intermediate}"
    definition = _shipped().get(name)
    if definition is None:
        return None
    constants = {"top_k": top_k, "num_experts": experts, "hidden_size": hidden,
                 "intermediate_size": intermediate}
    axes = definition.axes
    if any(getattr(axes.get(axis), "value", None) != value for axis, value in constants.items()):
        return None
    return name
