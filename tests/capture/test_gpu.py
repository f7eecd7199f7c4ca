"""Capture of CUDA calls: asynchronous dumps, and calls met while a CUDA graph is captured."""

from __future__ import annotations

import pytest
import torch

import fib_runtime as fib
from fib_runtime.capture import capture_stats, disable_capture, enable_capture
from fib_runtime.keys import make_key_extractor
from fib_runtime.schema import RandomInput, SafetensorsInput
from fib_runtime.store import TraceDB
from tests.capture.conftest import NORM, PAGED, paged_args

pytestmark = pytest.mark.gpu
NAME = PAGED["name"]


def cuda_paged_args(lengths: list[int]) -> tuple:
    q, indptr, indices, scale = paged_args(lengths)
    return (q.cuda(), indptr.cuda(), indices.cuda(), scale)


def test_cuda_dump_is_taken_at_call_time_without_sync(db: TraceDB) -> None:
    session = enable_capture(db, {"flush_interval_s": 3600, "default": {"dump": "int"}})
    record = session.recorder_for(NAME)
    args = cuda_paged_args([5, 9, 2])
    expected = args[1].cpu(), args[2].cpu()
    torch.cuda._sleep(50_000_000)  # keep the stream busy: the copy must queue behind it
    record(make_key_extractor(db.definitions[NAME])(args), args)
    args[1].zero_()  # later work on the same stream does not reach the copy
    args[2].fill_(-1)
    disable_capture()
    reloaded = TraceDB.open(db.root, strict=True)
    [trace] = reloaded.workloads_for(NAME)
    for name, tensor in zip(("kv_indptr", "kv_indices"), expected, strict=True):
        assert isinstance(trace.workload.inputs[name], SafetensorsInput)
        assert torch.equal(reloaded.load_tensor(trace.workload.inputs[name]), tensor)


def test_calls_during_graph_capture_are_recorded_without_dumps(db: TraceDB) -> None:
    @fib.apply(NORM)
    def scale(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x * weight

    enable_capture(db, {"flush_interval_s": 3600, "default": {"dump": "all"}})
    x, weight = torch.ones(6, 8, device="cuda"), torch.ones(8, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        scale(torch.ones(3, 8, device="cuda"), weight)  # eager warm-up on another key
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = scale(x, weight)
    graph.replay()  # replays never reach Python: not seen
    torch.cuda.synchronize()
    assert torch.equal(out, x * weight)
    disable_capture()
    stats = capture_stats()["definitions"][NORM]
    assert stats["seen"] == 2 and stats["graph_captured"] == 1 and stats["dropped_total"] == 0
    by_batch = {t.workload.axes["batch_size"]: t.workload.inputs
                for t in TraceDB.open(db.root, strict=True).workloads_for(NORM)}
    assert by_batch[6] == {"x": RandomInput(), "weight": RandomInput()}
    assert isinstance(by_batch[3]["x"], SafetensorsInput)
