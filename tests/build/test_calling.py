"""Calling-convention adapters, generated once per definition."""

from __future__ import annotations

import pytest
import torch

from fib_runtime.build import Built, destination_passing, value_returning
from fib_runtime.errors import ShapeError
from fib_runtime.schema import Definition

# Two outputs: a var x const one (bf16) and a var-only one (int32) read from the second input.
TWO_OUTPUTS = Definition.from_dict({
    "name": "split_h8", "op_type": "test",
    "axes": {"m": {"type": "var"}, "n": {"type": "var"}, "h": {"type": "const", "value": 8}},
    "inputs": {"x": {"shape": ["m", "h"], "dtype": "float32"},
               "idx": {"shape": ["n"], "dtype": "int64"}},
    "outputs": {"y": {"shape": ["m", "h"], "dtype": "bfloat16"},
                "count": {"shape": ["n"], "dtype": "int32"}},
    "reference": "def run(x, idx):\n    return x.bfloat16(), idx.int()\n",
})


def dps_solution(x: torch.Tensor, idx: torch.Tensor, y: torch.Tensor,
                 count: torch.Tensor) -> None:
    y.copy_(x * 2)
    count.copy_(idx + 1)


def value_solution(x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (x * 2).bfloat16(), (idx + 1).int()


def test_value_style_call_of_a_destination_passing_solution_allocates_each_output() -> None:
    call = value_returning(Built("s", dps_solution, True), TWO_OUTPUTS)
    x, idx = torch.randn(5, 8), torch.arange(3)
    y, count = call(x, idx)
    assert (y.shape, y.dtype, y.device) == ((5, 8), torch.bfloat16, x.device)
    assert (count.shape, count.dtype) == ((3,), torch.int32)
    torch.testing.assert_close(y, (x * 2).bfloat16())
    assert count.tolist() == [1, 2, 3]
    y2, _ = call(torch.randn(7, 8), idx)  # shapes are read per call, not fixed
    assert y2.shape == (7, 8)


def test_destination_style_call_of_a_value_solution_fills_the_buffers() -> None:
    call = destination_passing(Built("s", value_solution, False), TWO_OUTPUTS)
    x, idx = torch.randn(5, 8), torch.arange(3)
    y, count = torch.zeros(5, 8, dtype=torch.bfloat16), torch.zeros(3, dtype=torch.int32)
    result = call(x, idx, y, count)
    assert result[0] is y and result[1] is count  # the outputs, as a value call returns them
    torch.testing.assert_close(y, (x * 2).bfloat16())
    assert count.tolist() == [1, 2, 3]


def test_the_same_convention_is_the_solution_itself() -> None:
    assert value_returning(Built("s", value_solution, False), TWO_OUTPUTS) is value_solution


def test_a_destination_passing_solution_returns_its_buffers() -> None:
    """Whatever the solution returns (None here), the call returns the outputs."""
    call = destination_passing(Built("s", dps_solution, True), TWO_OUTPUTS)
    x, idx = torch.randn(5, 8), torch.arange(3)
    y, count = torch.zeros(5, 8, dtype=torch.bfloat16), torch.zeros(3, dtype=torch.int32)
    result = call(x, idx, y, count)
    assert result[0] is y and result[1] is count
    assert count.tolist() == [1, 2, 3]


def test_a_scalar_output_cannot_be_allocated() -> None:
    scalar = Definition.from_dict({**TWO_OUTPUTS.to_dict(), "outputs": {
        "total": {"shape": None, "dtype": "float32"}}})
    with pytest.raises(ShapeError, match="scalar"):
        value_returning(Built("s", dps_solution, True), scalar)


def test_an_output_shaped_like_an_input_is_allocated_with_empty_like() -> None:
    """The cheapest allocation a user would write: no shape tuple, no dtype argument; a
    strided input still gets a dense output."""
    same = Definition.from_dict({
        "name": "scale_h8", "op_type": "test",
        "axes": {"m": {"type": "var"}, "h": {"type": "const", "value": 8}},
        "inputs": {"x": {"shape": ["m", "h"], "dtype": "float32"},
                   "w": {"shape": ["h"], "dtype": "float32"}},
        "outputs": {"y": {"shape": ["m", "h"], "dtype": "float32"}},
        "reference": "def run(x, w):\n    return x * w\n",
    })

    def dps(x: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> None:
        assert y.is_contiguous()
        y.copy_(x * w)

    call = value_returning(Built("s", dps, True), same)
    assert "empty_like" in call.__code__.co_names and "new_empty" not in call.__code__.co_names
    x = torch.randn(8, 5).t()  # [5, 8], transposed strides
    y = call(x, torch.ones(8))
    assert y.shape == (5, 8) and y.is_contiguous()
    torch.testing.assert_close(y, x)
