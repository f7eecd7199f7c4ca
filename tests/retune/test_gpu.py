"""Retune on the GPU: CUDA-event timing, the device's name and key in the traces."""

from __future__ import annotations

from pathlib import Path

import pytest

from fib_runtime.hardware import current_hardware
from fib_runtime.retuning import retune
from tests.retune.helpers import DEF, SOLUTIONS, make_db

CUDA_NORM = """import torch

def run(x, weight):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
"""


@pytest.mark.gpu
def test_retune_tiny_definition_on_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))
    solutions = {"gpu_norm": (CUDA_NORM, False), "good_dps": SOLUTIONS["good_dps"],
                 "wrong_value": SOLUTIONS["wrong_value"], "aborts": SOLUTIONS["aborts"]}
    db = make_db(tmp_path / "db", solutions, batches=(1, 256), hardware=("nvidia",))
    summary = retune(db, warmup=3, iters=10, timeout=60, progress=False)
    hardware = current_hardware(0)
    traces = db.traces_for(DEF, hardware.key)
    assert len(traces) == 8
    by_status = {(t.solution, t.workload.axes["batch_size"]): t.evaluation.status.value
                 for t in traces}
    for batch in (1, 256):
        assert by_status[("gpu_norm", batch)] == "PASSED"
        assert by_status[("good_dps", batch)] == "PASSED"
        assert by_status[("wrong_value", batch)] == "INCORRECT_NUMERICAL"
        assert by_status[("aborts", batch)] == "RUNTIME_ERROR"
    for trace in traces:
        assert trace.evaluation.environment.hardware == hardware.name
        assert trace.evaluation.environment.extra["hardware_key"] == hardware.key
        if trace.evaluation.performance is not None:
            # GPU events: a launch-bound op takes microseconds, not the CPU's idea of it.
            assert 0.001 < trace.evaluation.performance.latency_ms < 5.0
    assert all(b.winner in ("gpu_norm", "good_dps") for b in summary.buckets[DEF])
