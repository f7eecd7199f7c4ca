"""The transformers adapter's attention routing on the GPU: a tiny Llama / Qwen3 with the
definitions' heads, its prefill and a decode step served by each ragged-prefill solution
(torch, Triton, FlashInfer), against the unpatched model; the original against the
reference on long and ragged mixes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from fib_runtime.adapters.transformers import apply, attention
from fib_runtime.adapters.transformers.sdpa import ragged_prefill

import fib_runtime as fib
from fib_runtime.catalogue import load_catalogue
from fib_runtime.measure.compare import check_outputs
from fib_runtime.schema import Status
from tests.adapters.hf_models import measure_captured, remove_routes
from tests.adapters.test_transformers_attention import VOCAB, counters, reference, tiny

assert remove_routes and counters  # autouse fixtures of this module too
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _steps(model: Any, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Last-position logits of the prefill of ids[:, :-1] and of one decode step."""
    with torch.no_grad():
        prefill = model(ids[:, :-1], use_cache=True)
        step = model(ids[:, -1:], past_key_values=prefill.past_key_values)
    return prefill.logits[:, -1].float(), step.logits[:, -1].float()


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("variant", ["torch_prefill", "triton_prefill", "flashinfer_prefill"])
@pytest.mark.parametrize("kind,kv_heads", [("llama", 8), ("qwen3", 4)])
def test_routed_model_on_gpu(kind: str, kv_heads: int, variant: str, batch: int,
                             tmp_path: Path) -> None:
    if variant == "flashinfer_prefill":
        pytest.importorskip("flashinfer")
    model = tiny(kv_heads, kind=kind).cuda()
    name = f"gqa_ragged_prefill_causal_h32_kv{kv_heads}_d128"
    ids = torch.randint(1, VOCAB, (batch, 300), device="cuda")
    expected = _steps(model, ids)
    apply(model, db=tmp_path / "db", ops=["attention"])
    with fib.enable_capture(tmp_path / "db"):
        _steps(model, ids)
    measure_captured(tmp_path / "db", [name], variant)
    attention.reset()
    with fib.enable_apply(tmp_path / "db", {"check_interval_s": 0}):
        served = _steps(model, ids)
        stats = fib.stats()[name]
    for got, want in zip(served, expected, strict=True):
        torch.testing.assert_close(got, want, atol=3e-2, rtol=3e-2)
    assert attention.stats() == {"routed": 4, "unchanged": {}}
    # every prefill call is served; a batch-1 decode step's keys are a strided view of the
    # cache, which a solution that reads raw pointers leaves to the original
    assert stats["hits"] >= 2, stats


@pytest.mark.parametrize("kv_heads", [8, 4])
@pytest.mark.parametrize("sequences", [[(2048, 2048)], [(1, 4000)] * 8,
                                       [(128, 4096), (500, 1500), (0, 3), (300, 20)]])
def test_original_matches_reference_on_gpu(kv_heads: int,
                                           sequences: list[tuple[int, int]]) -> None:
    torch.manual_seed(0)
    qo = [0]
    kv = [0]
    for n, length in sequences:
        qo.append(qo[-1] + n)
        kv.append(kv[-1] + length)
    q = torch.randn(qo[-1], 32, 128, dtype=torch.bfloat16, device="cuda")
    k, v = (torch.randn(kv[-1], kv_heads, 128, dtype=torch.bfloat16, device="cuda")
            for _ in range(2))
    args = (q, k, v, torch.tensor(qo, dtype=torch.int32, device="cuda"),
            torch.tensor(kv, dtype=torch.int32, device="cuda"), 1 / math.sqrt(128))
    name = f"gqa_ragged_prefill_causal_h32_kv{kv_heads}_d128"
    got, expected = ragged_prefill(*args), reference(name)(*args)
    check = check_outputs(load_catalogue().definitions[name], got, expected)
    assert check.status is Status.PASSED, check
