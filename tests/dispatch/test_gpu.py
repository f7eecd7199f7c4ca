"""Dispatch on a GPU: no device sync on a hit, CUDA graphs, warmup, the device rule."""

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


def test_a_key_warmed_up_and_first_called_inside_capture_serves_the_solution(
        gpu_db: Path) -> None:
    """fib.warmup decides and builds a key; its first call, inside the capture, makes the
    first-call checks and serves the solution (nothing is built there)."""
    x, w = torch.ones(4, 8, device="cuda"), torch.ones(8, device="cuda")
    with fib.enable_apply(gpu_db):
        fib.warmup(axes={"toy_norm_h8": [{"batch_size": 4}]})
        graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.cuda.graph(graph):
            out = toy(x, w)
        torch.cuda.current_stream().wait_stream(stream)
        x.fill_(3.0)
        graph.replay()
        torch.cuda.synchronize()
        assert float(out[0, 0]) == 4.0  # 3 * 1 + tag 1
        assert fib.stats()["toy_norm_h8"]["fallbacks"] == {}


def test_a_gpu_solution_never_gets_cpu_tensors(tmp_path: Path) -> None:
    """A solution that targets NVIDIA GPUs, called with CPU tensors in a CUDA process: the
    original answers (counted `device`), and the solution is not quarantined for it."""
    from fib_runtime.schema import Solution, Trace
    from tests.factories import solution, trace

    db = make_db(tmp_path, {}, [])
    db.add_solution(Solution.from_dict(solution(
        "gpu_only", code=SCALE_CODE.format(tag=1), hardware=("nvidia",))))
    db.append_traces([Trace.from_dict(trace(solution="gpu_only", batch=4,
                                            hardware=current_hardware().name))])
    with fib.enable_apply(tmp_path):
        for _ in range(5):
            assert float(toy(torch.ones(4, 8), torch.ones(8))[0, 0]) == 1.0
        cuda = toy(torch.ones(4, 8, device="cuda"), torch.ones(8, device="cuda"))
        assert float(cuda[0, 0]) == 2.0
        stats = fib.stats()["toy_norm_h8"]
    assert stats["fallbacks"] == {"device": 5} and stats["hits"] == 1
    assert stats["errors"] == {} and stats["quarantined"] == []
