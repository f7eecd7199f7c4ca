"""One place asks torch whether a CUDA graph is being recorded: fib_runtime.cuda_graphs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from fib_runtime import cuda_graphs

REPO = Path(__file__).resolve().parents[1]


def test_no_other_module_asks_torch_itself() -> None:
    askers = sorted(str(p.relative_to(REPO)) for folder in ("fib_runtime", "adapters")
                    for p in (REPO / folder).rglob("*.py")
                    if "is_current_stream_capturing" in p.read_text())
    assert askers == ["fib_runtime/cuda_graphs.py"]


def test_nothing_is_recorded_where_cuda_is_unused(monkeypatch: pytest.MonkeyPatch) -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        pytest.skip("CUDA is in use in this process")
    assert cuda_graphs.being_recorded() is False
    monkeypatch.delitem(sys.modules, "torch")
    assert cuda_graphs.being_recorded() is False  # torch never imported: never asked


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_recording_is_seen_on_its_stream_only() -> None:
    x = torch.ones(4, device="cuda")
    seen: list[bool] = []
    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        x.add_(1)
    torch.cuda.current_stream().wait_stream(side)
    with torch.cuda.graph(graph):
        x.add_(1)
        seen.append(cuda_graphs.being_recorded())
    seen.append(cuda_graphs.being_recorded())
    assert seen == [True, False]
