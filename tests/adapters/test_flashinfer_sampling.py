"""The FlashInfer adapter's sampling functions on CPU: a covered call is served by the
catalogue's torch solution (int32 ids inside the top-k support), uncovered ones reach
FlashInfer itself (its kernels refuse CPU tensors), counted by reason; the originals are
importable candidates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import fib_runtime as fib
from tests.adapters.engine_db import engine_db

pytest.importorskip("flashinfer")
import flashinfer
import flashinfer.sampling
from fib_runtime.adapters import flashinfer as fi

from fib_runtime.measure.sampling_check import target

V = 128256
TOP_K = "top_k_sampling_from_probs_v128256"
TOP_K_P = "top_k_top_p_sampling_from_probs_v128256"


@pytest.fixture
def installed(tmp_path: Path) -> Iterator[None]:
    session = fib.enable_apply(engine_db(tmp_path / "db", [TOP_K, TOP_K_P]))
    fi.reset()
    fi.install()
    try:
        yield
    finally:
        fi.uninstall()
        session.__exit__()


def _probs(rows: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(rows)
    return torch.softmax(torch.randn(rows, V, generator=g) * 3, dim=-1)


def test_covered_calls_are_served_with_flashinfers_contract(installed: None):
    probs, k, p = _probs(), torch.tensor([1, 5, 20, 0], dtype=torch.int32), torch.full((4,), 0.9)
    ids = flashinfer.sampling.top_k_sampling_from_probs(probs, k)
    assert ids.dtype == torch.int32 and ids.shape == (4,)
    _, support = target(probs, k)
    assert support[torch.arange(4), ids.long()].all()
    assert int(ids[0]) == int(probs[0].argmax())  # k = 1: the argmax
    both = flashinfer.top_k_top_p_sampling_from_probs(probs, top_k=k, top_p=p)
    _, support = target(probs, k, p)
    assert both.dtype == torch.int32 and support[torch.arange(4), both.long()].all()
    assert fi.stats()["routed"] == {"top_k_sampling_from_probs": 1,
                                    "top_k_top_p_sampling_from_probs": 1}
    assert fib.stats()[TOP_K]["hits"] == 1 and fib.stats()[TOP_K_P]["hits"] == 1


@pytest.mark.parametrize("call, reason", [
    (lambda p: flashinfer.sampling.top_k_sampling_from_probs(p, 5), "scalar_parameter"),
    (lambda p: flashinfer.sampling.top_k_sampling_from_probs(
        p, torch.full((4,), 5), deterministic=False), "option"),
    (lambda p: flashinfer.sampling.top_k_sampling_from_probs(
        p.half(), torch.full((4,), 5)), "layout_or_dtype"),
    (lambda p: flashinfer.sampling.top_k_sampling_from_probs(
        p[:, :1000].contiguous(), torch.full((4,), 5)), "no_definition"),
])
def test_uncovered_calls_reach_flashinfer_unchanged(installed: None, call, reason: str):
    with pytest.raises(Exception) as raised:  # FlashInfer's kernels refuse CPU tensors
        call(_probs())
    assert "fib_runtime" not in str(raised.traceback[-1].path)
    assert fi.stats()["unchanged"] == {"top_k_sampling_from_probs": {reason: 1}}


def test_install_replaces_and_uninstall_restores_the_sampling_functions():
    own = flashinfer.sampling.top_k_sampling_from_probs
    fi.install()
    try:
        assert flashinfer.sampling.top_k_sampling_from_probs is not own
        assert flashinfer.top_k_sampling_from_probs is flashinfer.sampling.top_k_sampling_from_probs
    finally:
        fi.uninstall()
    assert flashinfer.sampling.top_k_sampling_from_probs is own


@pytest.mark.parametrize("name", [TOP_K, TOP_K_P, "top_p_sampling_from_probs_v151936"])
def test_each_sampling_definition_has_an_importable_original(name: str):
    from fib_runtime.adapters.flashinfer import originals

    from fib_runtime.catalogue import load_catalogue
    from fib_runtime.original import original_problem, original_solution, untimeable_reason

    fn = getattr(originals, name)
    assert original_problem(fn) is None
    solution = original_solution(load_catalogue().definitions[name], fn)
    assert untimeable_reason(solution) is None
