"""The SGLang plugin against SGLang's own code (the real 0.5.23 wheel, CPU): loaded through
SGLang's `load_plugins()`, which runs our entry point and `HookRegistry.apply_hooks()`, with
SGLang's RMSNorm / SiluAndMul instantiated as a model would.

Needs sglang importable (scripts/test_engines.sh, FIB_ENGINES=sglang: SGLang 0.5.23 pins
torch 2.14.1 + torchvision 0.29.1, a multi-GB environment); skipped elsewhere. One process,
as an SGLang worker: the "variables unset" step runs first.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("sglang.srt.layers.layernorm")

import sglang.srt.plugins as sglang_plugins
from fib_runtime.adapters import bridge
from sglang.srt.layers.activation import SiluAndMul
from sglang.srt.layers.layernorm import RMSNorm
from sglang.srt.plugins.hook_registry import HookRegistry

import fib_runtime as fib
from tests.adapters.engine_db import engine_db

H, INTER = 4096, 14336
# SGLang's own methods, before any hook. Kept in a dict: HookRegistry.apply_hooks rebinds
# every module attribute that holds a patched function (its _propagate_patch).
OWN = {"norm": RMSNorm.forward_native, "act": SiluAndMul.forward_native}


def NATIVE(*args):
    return OWN["norm"](*args)


def ACT_NATIVE(*args):
    return OWN["act"](*args)
TARGETS = ("sglang.srt.layers.layernorm.RMSNorm.forward_cuda",
           "sglang.srt.layers.layernorm.RMSNorm.forward_native",
           "sglang.srt.layers.activation.SiluAndMul.forward_cuda",
           "sglang.srt.layers.activation.SiluAndMul.forward_native",
           "sglang.srt.layers.quantization.unquant.UnquantizedFusedMoEMethod.forward_cuda")


def _load_plugins() -> None:
    sglang_plugins._plugins_loaded = False  # SGLang's once-per-process guard (a new worker)
    sglang_plugins.load_plugins()


def _inputs(rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(rows)
    x, r = (torch.randn(2, rows, H, generator=g) * 2).bfloat16()
    return x, r, (torch.randn(rows, 2 * INTER, generator=g) * 2).bfloat16()


def _norm(eps: float = 1e-5) -> RMSNorm:
    norm = RMSNorm(H, eps=eps, weight_dtype=torch.bfloat16)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(H).bfloat16())
    return norm


@pytest.fixture
def switched_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    engine_db(tmp_path / "db")
    monkeypatch.setenv("FIB_DATASET_PATH", str(tmp_path / "db"))
    monkeypatch.setenv("FIB_ENABLE_APPLY", "1")
    bridge.reset_for_tests()
    _load_plugins()
    yield
    fib.disable_apply()


def test_1_nothing_changes_with_the_variables_unset():
    _load_plugins()
    assert not any(t in HookRegistry._hooks for t in TARGETS)
    assert RMSNorm.forward_native is OWN["norm"]
    assert SiluAndMul.forward_native is OWN["act"]
    assert fib.stats() == {}


def test_2_hooked_outputs_equal_sglang_forward_native(switched_on: None):
    assert RMSNorm.forward_native.__wrapped__ is OWN["norm"]
    norm = _norm()
    act = SiluAndMul()
    assert norm.__dict__["_fib_routes"]
    for rows in (1, 5, 33):
        x, r, gate_up = _inputs(rows)
        torch.testing.assert_close(norm.forward_native(x), NATIVE(norm, x), rtol=0, atol=0)
        out, res = norm.forward_native(x, r)
        want_out, want_res = NATIVE(norm, x, r)
        torch.testing.assert_close(out, want_out, rtol=0, atol=0)
        torch.testing.assert_close(res, want_res, rtol=0, atol=0)
        torch.testing.assert_close(act.forward_native(gate_up), ACT_NATIVE(act, gate_up))
        # forward_cuda with a residual: fused_add_rmsnorm's contract, in place on both.
        xc, rc = x.clone(), r.clone()
        got = norm.forward_cuda(xc, rc)
        assert got[0] is xc and got[1] is rc
        torch.testing.assert_close(xc, want_out, rtol=0, atol=0)
        torch.testing.assert_close(rc, want_res, rtol=0, atol=0)
        torch.testing.assert_close(norm.forward_cuda(x), NATIVE(norm, x), rtol=0, atol=0)
        torch.testing.assert_close(act.forward_cuda(gate_up), ACT_NATIVE(act, gate_up))
    stats = fib.stats()
    assert stats["rmsnorm_h4096"]["hits"] == 6
    assert stats["fused_add_rmsnorm_residual_h4096"]["hits"] == 6
    assert stats["silu_and_mul_i14336"]["hits"] == 6


def test_3_uncovered_calls_keep_sglang_code(switched_on: None):
    x, r, _ = _inputs(4)
    other = _norm(eps=1e-6)
    assert other.__dict__["_fib_routes"] == {}
    torch.testing.assert_close(other.forward_native(x, r), NATIVE(other, x, r), rtol=0, atol=0)
    norm = _norm()
    extra = torch.randn(4, H).bfloat16()
    torch.testing.assert_close(norm.forward_native(x, r, extra), NATIVE(norm, x, r, extra),
                               rtol=0, atol=0)
    torch.testing.assert_close(norm.forward_native(x.half()), NATIVE(norm, x.half()),
                               rtol=0, atol=0)
    assert fib.stats().get("rmsnorm_h4096", {}).get("hits", 0) == 0
    norm.forward_native(x)  # dispatch is on: a covered call is a hit
    assert fib.stats()["rmsnorm_h4096"]["hits"] == 1


def test_4_registration_is_idempotent(switched_on: None):
    from fib_runtime.adapters.sglang import register

    hooked = RMSNorm.forward_native
    for _ in range(3):
        register()
        _load_plugins()
    assert RMSNorm.forward_native is hooked
    for target in TARGETS:
        assert len(HookRegistry._hooks[target]) == 1, target


def test_5_compiled_forward_native_is_one_graph_that_sees_real_batch_sizes(
        switched_on: None, tmp_path: Path):
    norm, act = _norm(), SiluAndMul()
    graphs: list[torch.fx.GraphModule] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(gm)
        return gm.forward

    def block(x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, residual = norm.forward_native(x, residual)
        y = act.forward_native(torch.cat([h] * (2 * INTER // H), dim=-1))[:, :H]
        return norm.forward_native(y), residual

    compiled = torch.compile(block, dynamic=True, backend=backend, fullgraph=True)
    capture = fib.enable_capture(tmp_path / "capture")
    try:
        for rows in (3, 5, 17, 64):
            x, r, _ = _inputs(rows)
            got, want = compiled(x, r), block(x, r)
            torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
            torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)
        capture.flush()
    finally:
        fib.disable_capture()
    assert len(graphs) == 1
    for name in ("rmsnorm_h4096", "fused_add_rmsnorm_residual_h4096", "silu_and_mul_i14336"):
        assert f"fib.{name}" in graphs[0].code
    from fib_runtime.store import TraceDB

    seen = TraceDB.open(tmp_path / "capture").workloads_for("rmsnorm_h4096")
    assert {w.workload.axes["batch_size"] for w in seen} >= {3, 5, 17, 64}
