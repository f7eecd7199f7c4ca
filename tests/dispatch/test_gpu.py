"""Dispatch on a GPU: no device sync on a hit, CUDA graphs, warmup."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fib_runtime as fib
from fib_runtime.hardware import current_hardware
from tests.dispatch.helpers import SCALE_CODE, make_db

pytestmark = pytest.mark.gpu


@fib.apply("toy_norm_h8")
def toy(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x * weight


@pytest.fixture
def gpu_db(tmp_path: Path) -> Path:
    name = current_hardware().name
    make_db(tmp_path, {"one": SCALE_CODE.format(tag=1)},
            [("one", 4, 0.01, name), ("one", 64, 0.01, name)])
    return tmp_path


def test_a_hit_does_not_synchronise(gpu_db: Path) -> None:
    x, w = torch.ones(4, 8, device="cuda"), torch.ones(8, device="cuda")
    with fib.enable_apply(gpu_db):
        toy(x, w)  # resolve and build
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = toy(x, w)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert float(out[0, 0]) == 2.0


def test_cuda_graph_replays_the_resolved_solution(gpu_db: Path) -> None:
    x, w = torch.ones(4, 8, device="cuda"), torch.ones(8, device="cuda")
    fresh = torch.ones(64, 8, device="cuda")
    with fib.enable_apply(gpu_db):
        fib.warmup(axes={"toy_norm_h8": [{"batch_size": 4}]})
        toy(x, w)  # also resolved by the call itself before capture
        graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.cuda.graph(graph):
            resolved = toy(x, w)
            unseen = toy(fresh, w)  # a key first seen during capture: the fallback
        torch.cuda.current_stream().wait_stream(stream)
        x.fill_(3.0)
        graph.replay()
        torch.cuda.synchronize()
        assert float(resolved[0, 0]) == 4.0  # 3 * 1 + tag 1
        assert float(unseen[0, 0]) == 1.0  # fallback: 1 * 1
        assert fib.stats()["toy_norm_h8"]["fallbacks"] == {"graph_capture": 1}
