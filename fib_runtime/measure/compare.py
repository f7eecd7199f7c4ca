"""Check a solution's outputs against the reference's: count, shape, dtype, then values.

Default tolerances per output dtype, as (atol, rtol) with
|out - ref| <= atol + rtol * |ref| + eps(dtype) * max|ref| elementwise: the rule of
torch.allclose plus one unit in the last place at the scale of the whole output, because a
different summation order (split-K, another tile shape) moves every element, small ones
included, by about one ulp of the large partial sums. They allow a few units in the last
place of the output dtype plus the drift of a different summation order:

| dtype | atol | rtol | why |
|---|---|---|---|
| float32 | 1e-4 | 1e-4 | long fp32 reductions (K ~ 16k) drift ~1e-5 relative |
| float16 | 1e-3 | 5e-3 | eps 9.8e-4: about 5 ulps |
| bfloat16 | 1e-2 | 2e-2 | eps 7.8e-3: about 2.5 ulps |
| float8_e4m3fn | 1e-1 | 2.5e-1 | 3 mantissa bits: 2 ulps |
| float8_e5m2 | 2.5e-1 | 5e-1 | 2 mantissa bits: 2 ulps |
| integers, bool | 0 | 0 | exact |

A NaN or infinity where the reference has a finite value never passes; where the reference
itself is not finite the solution must give the same value (e.g. -inf for an empty row).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fib_runtime.schema import Definition, Status
from fib_runtime.tensors import torch_dtype

Tolerance = tuple[float, float]
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "float32": (1e-4, 1e-4),
    "float16": (1e-3, 5e-3),
    "bfloat16": (1e-2, 2e-2),
    "float8_e4m3fn": (1e-1, 2.5e-1),
    "float8_e5m2": (2.5e-1, 5e-1),
    "float4_e2m1": (5e-1, 5e-1),
}
_EXACT: Tolerance = (0.0, 0.0)
_REL_FLOOR = 1e-8  # relative error is |out - ref| / (|ref| + this)


@dataclass(frozen=True)
class Check:
    """The verdict on one call's outputs."""

    status: Status
    log: str = ""
    max_absolute_error: float | None = None
    max_relative_error: float | None = None
    extra: dict[str, Any] | None = None


def as_tuple(outputs: Any) -> tuple[Any, ...]:
    """A value-returning call's result as a tuple of outputs."""
    return outputs if isinstance(outputs, tuple) else (outputs,)


def check_outputs(definition: Definition, got: Any, expected: Sequence[Any],
                  tolerance: Tolerance | None = None) -> Check:
    """Compare `got` (a call's result) with the reference's outputs, output by output."""
    import torch

    got = as_tuple(got)
    names = list(definition.outputs)
    if len(got) != len(names):
        return Check(Status.INCORRECT_SHAPE,
                     f"returned {len(got)} outputs, expected {len(names)} ({', '.join(names)})")
    worst_abs = worst_rel = 0.0
    problems: list[str] = []
    non_finite = 0
    for name, out, ref in zip(names, got, expected, strict=True):
        spec = definition.outputs[name]
        if spec.shape is None:  # a Python scalar output
            out = torch.tensor(out) if not isinstance(out, torch.Tensor) else out
            ref = torch.tensor(ref) if not isinstance(ref, torch.Tensor) else ref
        elif not isinstance(out, torch.Tensor):
            return Check(Status.INCORRECT_SHAPE,
                         f"output '{name}' is a {type(out).__name__}, not a tensor")
        if spec.shape is not None and tuple(out.shape) != tuple(ref.shape):
            return Check(Status.INCORRECT_SHAPE, f"output '{name}' has shape "
                         f"{list(out.shape)}, expected {list(ref.shape)}")
        if spec.shape is not None and out.dtype != torch_dtype(spec.dtype):
            return Check(Status.INCORRECT_DTYPE,
                         f"output '{name}' has dtype {out.dtype}, expected {spec.dtype}")
        atol, rtol = tolerance or DEFAULT_TOLERANCES.get(spec.dtype, _EXACT)
        result = _compare(out, ref, atol, rtol)
        worst_abs = max(worst_abs, result.max_abs)
        worst_rel = max(worst_rel, result.max_rel)
        non_finite += result.non_finite
        if result.bad:
            problems.append(f"output '{name}': {result.bad} of {result.count} values outside "
                            f"atol={atol:g} rtol={rtol:g} (max abs error {result.max_abs:.3g}, "
                            f"max rel error {result.max_rel:.3g}"
                            + (f", {result.non_finite} NaN/Inf where the reference has none)"
                               if result.non_finite else ")"))
    extra = {"non_finite_mismatches": non_finite} if non_finite else None
    status = Status.INCORRECT_NUMERICAL if problems else Status.PASSED
    return Check(status, "\n".join(problems), worst_abs, worst_rel, extra)


@dataclass(frozen=True)
class _Compared:
    count: int
    bad: int
    non_finite: int
    max_abs: float
    max_rel: float


def _eps(dtype: Any) -> float:
    """Machine epsilon of a floating dtype (0 for integers and bool)."""
    import torch

    return torch.finfo(dtype).eps if dtype.is_floating_point else 0.0


def _compare(out: Any, ref: Any, atol: float, rtol: float) -> _Compared:
    """Element counts and worst errors (over positions where both values are finite)."""
    import torch

    a = out.detach().to(ref.device, torch.float64)
    b = ref.detach().to(torch.float64)
    both = torch.isfinite(a) & torch.isfinite(b)
    ref_finite = torch.isfinite(b)
    same_special = (a == b) | (torch.isnan(a) & torch.isnan(b))
    non_finite = int((ref_finite & ~torch.isfinite(a)).sum())
    special_bad = int((~ref_finite & ~same_special).sum())
    zero = torch.zeros_like(a)
    diff = torch.where(both, (a - b).abs(), zero)
    scale = torch.where(both, b.abs(), zero)
    one_ulp_of_output = _eps(ref.dtype) * float(scale.max()) if scale.numel() else 0.0
    over = int((diff > atol + one_ulp_of_output + rtol * scale).sum())
    rel = diff / (scale + _REL_FLOOR)
    return _Compared(
        count=a.numel(), bad=over + non_finite + special_bad, non_finite=non_finite,
        max_abs=float(diff.max()) if diff.numel() else 0.0,
        max_rel=float(rel.max()) if rel.numel() else 0.0,
    )
