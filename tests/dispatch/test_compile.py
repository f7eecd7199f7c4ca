"""fib.apply inside torch.compile(fullgraph=True) on CPU."""

from __future__ import annotations

from pathlib import Path

import torch

import fib_runtime as fib
from tests.dispatch.helpers import SCALE_CODE, make_db


@fib.apply("toy_norm_h8")
def toy(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x * weight


def test_fullgraph_compile_runs_the_dispatched_solution(tmp_path: Path) -> None:
    make_db(tmp_path, {"one": SCALE_CODE.format(tag=1)}, [("one", 4, 0.01, "cpu")])

    def model(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return toy(x * 2, w) + 1

    compiled = torch.compile(model, fullgraph=True, backend="eager")
    x, w = torch.ones(4, 8), torch.ones(8)
    with fib.enable_apply(tmp_path):
        out = compiled(x, w)
        assert torch.equal(out, model(x, w))
        assert float(out[0, 0]) == 4.0  # (1*2)*1 + tag 1 + 1
    assert hasattr(torch.ops.fib, "toy_norm_h8")
    fake = torch.ops.fib.toy_norm_h8.default
    with torch._subclasses.fake_tensor.FakeTensorMode():
        result = fake(torch.empty(5, 8), torch.empty(8))
        assert tuple(result.shape) == (5, 8) and result.dtype == torch.float32
