"""Output checks: count, shape, dtype, values with per-dtype tolerances, NaN and Inf."""

from __future__ import annotations

import math

import pytest
import torch

from fib_runtime.measure.compare import DEFAULT_TOLERANCES, check_outputs
from fib_runtime.schema import Definition, Status
from tests import factories


def _definition(dtype: str = "float32", outputs: int = 1) -> Definition:
    data = factories.definition()
    data["outputs"] = {f"y{i}": {"shape": ["batch_size", "hidden_size"], "dtype": dtype}
                       for i in range(outputs)}
    return Definition.from_dict(data)


def test_exact_match_passes_with_zero_error() -> None:
    ref = torch.randn(4, 8)
    check = check_outputs(_definition(), ref.clone(), (ref,))
    assert check.status is Status.PASSED
    assert check.max_absolute_error == 0 and check.max_relative_error == 0


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_tolerance_edges_per_dtype(dtype: str) -> None:
    atol, rtol = DEFAULT_TOLERANCES[dtype]
    ref = torch.full((4, 8), 2.0, dtype=getattr(torch, dtype))
    inside = ref.double() + 0.5 * (atol + rtol * 2.0)
    outside = ref.double() + 4 * (atol + rtol * 2.0)
    assert check_outputs(_definition(dtype), inside.to(ref.dtype), (ref,)).status is Status.PASSED
    bad = check_outputs(_definition(dtype), outside.to(ref.dtype), (ref,))
    assert bad.status is Status.INCORRECT_NUMERICAL and bad.max_absolute_error > atol


def test_wrong_count_shape_and_dtype() -> None:
    ref = torch.randn(4, 8)
    two = _definition(outputs=2)
    assert check_outputs(two, ref, (ref, ref)).status is Status.INCORRECT_SHAPE
    assert check_outputs(_definition(), ref[:, :3], (ref,)).status is Status.INCORRECT_SHAPE
    assert check_outputs(_definition(), ref.tolist(), (ref,)).status is Status.INCORRECT_SHAPE
    assert check_outputs(_definition(), ref.half(), (ref,)).status is Status.INCORRECT_DTYPE
    assert check_outputs(two, (ref, ref.clone()), (ref, ref)).status is Status.PASSED


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_where_reference_is_finite_never_passes(bad: float) -> None:
    ref = torch.randn(4, 8)
    out = ref.clone()
    out[1, 2] = bad
    check = check_outputs(_definition(), out, (ref,), tolerance=(1e9, 1e9))
    assert check.status is Status.INCORRECT_NUMERICAL
    assert check.extra == {"non_finite_mismatches": 1}
    assert math.isfinite(check.max_absolute_error) and math.isfinite(check.max_relative_error)


def test_non_finite_reference_must_be_matched_exactly() -> None:
    ref = torch.randn(4, 8)
    ref[0, 0] = -math.inf
    ref[0, 1] = math.nan
    assert check_outputs(_definition(), ref.clone(), (ref,)).status is Status.PASSED
    out = ref.clone()
    out[0, 0] = 0.0
    assert check_outputs(_definition(), out, (ref,)).status is Status.INCORRECT_NUMERICAL


def test_relative_error_is_reported() -> None:
    ref = torch.full((4, 8), 10.0)
    check = check_outputs(_definition(), ref * 1.1, (ref,))
    assert check.max_relative_error == pytest.approx(0.1, rel=1e-5)
    assert check.max_absolute_error == pytest.approx(1.0, rel=1e-5)


def test_another_summation_order_passes_a_long_fp16_reduction() -> None:
    torch.manual_seed(0)
    a = torch.randn(4, 8192, dtype=torch.float16)
    b = torch.randn(8, 8192, dtype=torch.float16)
    reference = (a.float() @ b.float().T).half()  # one summation order
    halves = (a[:, :4096].float() @ b[:, :4096].float().T).half().float() + \
        (a[:, 4096:].float() @ b[:, 4096:].float().T).half().float()  # split-K in fp16
    assert not torch.equal(halves.half(), reference)
    definition = _definition("float16")
    assert check_outputs(definition, halves.half(), (reference,)).status is Status.PASSED
    wrong = reference.clone()
    small = reference.abs().argmin()
    wrong.view(-1)[small] += 8 * torch.finfo(torch.float16).eps * float(reference.abs().max())
    assert check_outputs(definition, wrong, (reference,)).status is Status.INCORRECT_NUMERICAL
