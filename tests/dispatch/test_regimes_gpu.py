"""On a GPU: a real CUDA-graph capture serves the graph choice; the timers run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fib_runtime as fib
from fib_runtime.dispatch import graphs
from fib_runtime.measure.timing import get_timer
from tests.dispatch.test_regimes import timed, toy

pytestmark = pytest.mark.gpu


def test_capture_serves_the_graph_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fib_runtime.hardware import current_hardware
    from tests.dispatch import test_regimes
    from tests.dispatch.helpers import SCALE_CODE, make_db

    name = current_hardware().name
    monkeypatch.setattr(test_regimes, "CPU", name)
    db = make_db(tmp_path, {"one": SCALE_CODE.format(tag=1), "two": SCALE_CODE.format(tag=2),
                            "three": SCALE_CODE.format(tag=3)}, [])
    db.append_traces([timed("one", 32, 0.010, None), timed("two", 32, 0.015, "eager"),
                      timed("one", 32, 0.050, "eager"), timed("three", 32, 0.004, "graph"),
                      timed("two", 32, 0.009, "graph")])
    x, w = torch.ones(32, 8, device="cuda"), torch.ones(8, device="cuda")
    with fib.enable_apply(tmp_path):
        assert float(toy(x, w)[0, 0]) == 3.0  # eager: two
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            toy(x, w)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = toy(x, w)
            unresolved = toy(torch.ones(64, 8, device="cuda"), w)
        assert graphs.context() == "eager"
        graph.replay()
        torch.cuda.synchronize()
        assert float(out[0, 0]) == 4.0  # graph: three
        assert float(unresolved[0, 0]) == 1.0  # not resolved before capture: the original
        assert float(toy(x, w)[0, 0]) == 3.0  # eager again
        assert fib.stats()["toy_norm_h8"]["fallbacks"] == {"graph_capture": 1}


@pytest.mark.parametrize("timing", ["device", "eager", "graph"])
def test_each_timer_measures_a_matmul(timing: str) -> None:
    a = torch.randn(256, 1024, device="cuda", dtype=torch.float16)
    b = torch.randn(1024, 1024, device="cuda", dtype=torch.float16)
    ms = get_timer(timing).measure(torch.matmul, [a, b], device="cuda", warmup=3, iters=20)
    assert 0.0 < ms < 5.0
