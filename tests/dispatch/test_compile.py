"""fib.apply inside torch.compile(fullgraph=True) on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
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


@fib.apply("never_enabled_norm_h8")
def never_enabled(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x * weight + 2


def test_fullgraph_compile_where_dispatch_was_never_enabled() -> None:
    """No database ever held this definition, so its custom op was never registered: the
    compiled graph is the decorated function's own code."""
    compiled = torch.compile(lambda x, w: never_enabled(x, w) - 1, fullgraph=True,
                             backend="eager")
    x, w = torch.randn(4, 8), torch.randn(8)
    assert torch.equal(compiled(x, w), never_enabled.__wrapped__(x, w) - 1)


def test_a_routed_hf_block_compiles_fullgraph_where_dispatch_was_never_enabled(
        tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from fib_runtime.adapters.transformers import apply, remove

    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=48, intermediate_size=104, vocab_size=32,
                                      num_hidden_layers=1, num_attention_heads=2,
                                      num_key_value_heads=1)
    model = transformers.LlamaForCausalLM(config).to(torch.bfloat16).eval()
    ids = torch.randint(0, 32, (2, 5))
    with torch.no_grad():
        expected = model(ids).logits
    routing = apply(model, db=tmp_path / "db")
    try:
        assert "model.layers.0.mlp" in routing.routed
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        with torch.no_grad():
            got = compiled(ids).logits
    finally:
        remove(model)
    torch.testing.assert_close(got, expected, atol=2e-2, rtol=2e-2)
