"""The Llama-3.1-8B decode layer: capture records each op's real workload key, dispatch serves
every op from the database's winner with the same output as the original code, and on a GPU
the whole script (capture -> retune -> dispatch) runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import fib_runtime as fib
from fib_runtime.catalogue import install
from fib_runtime.hardware import current_hardware
from fib_runtime.schema import Correctness, Environment, Evaluation, Performance, Status, Trace
from fib_runtime.store import TraceDB
from integration.llama_decode_layer import (
    ATOL,
    DEFINITIONS,
    LAYER_OPS,
    RTOL,
    decode_layer,
    main,
    make_batch,
    op_axes,
    random_weights,
)

# Per definition: the CPU solution given the faster trace, then a slower one (if any).
CPU_RANKING = {
    "rmsnorm_h4096": ("cpu_chunked", "torch"),
    "fused_add_rmsnorm_h4096": ("cpu_chunked", "torch"),
    "silu_and_mul_i14336": ("cpu_chunked", "torch"),
    "gemm_n6144_k4096": ("cpu_fp32", "torch"),
    "gemm_n4096_k4096": ("cpu_fp32", "torch"),
    "gemm_n28672_k4096": ("cpu_fp32", "torch"),
    "gemm_n4096_k14336": ("cpu_fp32", "torch"),
    "gqa_paged_decode_h32_kv8_d128_ps1": ("torch_padded",),
}


def measured(workload: Trace, solution: str, latency_ms: float, hardware: str) -> Trace:
    """A PASSED trace of `solution` on a captured workload."""
    evaluation = Evaluation(
        Status.PASSED, Environment(hardware), "2026-11-21T12:00:00+00:00",
        correctness=Correctness(0.0, 0.0),
        performance=Performance(latency_ms, 2 * latency_ms, 2.0))
    return Trace(workload.definition, workload.workload, solution, evaluation)


def test_layer_served_from_the_database_matches_the_original(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))
    weights = random_weights("cpu")
    batch = make_batch(1, 64, "cpu")
    with torch.no_grad():
        expected = decode_layer(weights, batch)
        db = TraceDB.open(tmp_path / "db", create=True)
        install(db)
        with fib.enable_capture(db):
            decode_layer(weights, batch)

        db = TraceDB.open(tmp_path / "db")
        axes = op_axes(batch)
        hardware = current_hardware().name
        traces = []
        for name in DEFINITIONS:
            (workload,) = db.workloads_for(name)
            assert dict(workload.workload.axes) == axes[name]  # what explain is asked about
            traces += [measured(workload, f"{name}__{variant}", 1.0 + rank, hardware)
                       for rank, variant in enumerate(CPU_RANKING[name])]
        db.append_traces(traces)

        with fib.enable_apply(tmp_path / "db", {"check_interval_s": 0}):
            served = decode_layer(weights, batch)
            stats = fib.stats()
            decisions = {name: fib.explain(name, axes[name]) for name in DEFINITIONS}

    assert served.dtype == torch.bfloat16 and served.shape == expected.shape
    torch.testing.assert_close(served, expected, atol=ATOL, rtol=RTOL)
    for name in DEFINITIONS:
        assert stats[name]["hits"] == 1, (name, stats[name])
        assert stats[name]["fallbacks"] == {} and stats[name]["errors"] == {}, stats[name]
        assert decisions[name].decision == f"{name}__{CPU_RANKING[name][0]}"
        assert decisions[name].reason == "measured"


@pytest.mark.gpu
def test_main_runs_the_loop_on_the_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))
    out = tmp_path / "result.json"
    code = main(["--device", "cuda", "--batches", "1,16", "--kv-len", "128", "--iters", "5",
                 "--db", str(tmp_path / "db"), "--json", str(out)])
    assert code == 0, capsys.readouterr().out
    results = json.loads(out.read_text())
    assert results["hardware_key"] == current_hardware().key
    assert results["retune"]["counts"].get("PASSED", 0) >= 2 * len(DEFINITIONS)
    assert [row["batch"] for row in results["rows"]] == [1, 16]
    for row in results["rows"]:
        assert row["matches"] and row["original_ms"] > 0 and row["dispatched_ms"] > 0
        for role, name in LAYER_OPS:
            assert row["served"][role].startswith(f"{name}__")
            assert row["reasons"][role] == "measured"
    for name in DEFINITIONS:
        assert results["dispatch_stats"][name]["fallbacks"] == {}
    assert "served by" in capsys.readouterr().out
