"""The vLLM plugin against vLLM's own code (the real wheel, CPU): loaded through vLLM's
`load_general_plugins()`, with vLLM's RMSNorm / SiluAndMul instantiated as a model would.

Needs vllm importable (scripts/test_engines.sh builds a separate environment for it, with
VLLM_TARGET_DEVICE=cpu); skipped in the main environment. The steps share one process, as a
vLLM worker does: vLLM loads plugins once per process, so the "variables unset" step runs
first and the later steps switch the variables on and let vLLM load the plugin again.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm")

import vllm.plugins
from fib_runtime.adapters import bridge
from vllm.config import VllmConfig, set_current_vllm_config
from vllm.model_executor.custom_op import op_registry_oot
from vllm.model_executor.layers.activation import SiluAndMul
from vllm.model_executor.layers.layernorm import RMSNorm

import fib_runtime as fib
from tests.adapters.engine_db import engine_db

H, INTER = 4096, 14336


def _load_plugins() -> None:
    vllm.plugins.plugins_loaded = False  # vLLM's once-per-process guard (a new worker)
    vllm.plugins.load_general_plugins()


def _modules() -> tuple[RMSNorm, SiluAndMul]:
    with set_current_vllm_config(VllmConfig()):
        norm = RMSNorm(H, eps=1e-5, dtype=torch.bfloat16)
        act = SiluAndMul()
    with torch.no_grad():
        norm.weight.copy_(torch.randn(H).bfloat16())
    return norm, act


def _inputs(rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(rows)
    x, r = (torch.randn(2, rows, H, generator=g) * 2).bfloat16()
    return x, r, (torch.randn(rows, 2 * INTER, generator=g) * 2).bfloat16()


@pytest.fixture
def switched_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """FIB_ENABLE_APPLY with a database measured here; vLLM loads the plugin."""
    engine_db(tmp_path / "db")
    monkeypatch.setenv("FIB_DATASET_PATH", str(tmp_path / "db"))
    monkeypatch.setenv("FIB_ENABLE_APPLY", "1")
    bridge.reset_for_tests()
    _load_plugins()
    yield
    fib.disable_apply()


def test_1_nothing_changes_with_the_variables_unset():
    _load_plugins()
    assert "RMSNorm" not in op_registry_oot and "SiluAndMul" not in op_registry_oot
    norm, act = _modules()
    assert type(norm) is RMSNorm and type(act) is SiluAndMul
    assert fib.stats() == {}
    assert not hasattr(torch.ops.fib, "rmsnorm_h4096")


def test_2_replacement_in_place_and_outputs_equal_vllm_forward_native(switched_on: None):
    from fib_runtime.adapters.vllm.ops import FibRMSNorm, FibSiluAndMul

    assert op_registry_oot["RMSNorm"] is FibRMSNorm
    assert op_registry_oot["SiluAndMul"] is FibSiluAndMul
    norm, act = _modules()
    assert isinstance(norm, FibRMSNorm) and isinstance(act, FibSiluAndMul)
    for rows in (1, 5, 33):
        x, r, gate_up = _inputs(rows)
        for method in ("forward_native", "forward_cuda", "forward"):
            if method == "forward_cuda":
                continue  # vLLM's CUDA path needs its CUDA kernels; routed calls are checked
            got = getattr(norm, method)(x)
            torch.testing.assert_close(got, RMSNorm.forward_native(norm, x))
            out, res = getattr(norm, method)(x.clone(), r.clone())
            want_out, want_res = RMSNorm.forward_native(norm, x.clone(), r.clone())
            torch.testing.assert_close(out, want_out)
            torch.testing.assert_close(res, want_res, rtol=0, atol=0)
            torch.testing.assert_close(getattr(act, method)(gate_up),
                                       SiluAndMul.forward_native(gate_up))
    # forward_cuda routes covered calls too (no CUDA kernel of vLLM is involved then).
    x, r, gate_up = _inputs(3)
    torch.testing.assert_close(norm.forward_cuda(x), RMSNorm.forward_native(norm, x))
    torch.testing.assert_close(act.forward_cuda(gate_up), SiluAndMul.forward_native(gate_up))
    stats = fib.stats()
    assert stats["rmsnorm_h4096"]["hits"] == 7 and not stats["rmsnorm_h4096"]["fallbacks"]
    assert stats["fused_add_rmsnorm_residual_h4096"]["hits"] == 6
    assert stats["silu_and_mul_i14336"]["hits"] == 7


def test_3_uncovered_constants_keep_vllm_code(switched_on: None):
    with set_current_vllm_config(VllmConfig()):
        other_eps = RMSNorm(H, eps=1e-6, dtype=torch.bfloat16)
        fp32 = RMSNorm(H, eps=1e-5, dtype=torch.float32)
        no_weight = RMSNorm(H, eps=1e-5, has_weight=False, dtype=torch.bfloat16)
        override = RMSNorm(H, eps=1e-5, var_hidden_size=1024, dtype=torch.bfloat16)
    x = torch.randn(4, H).bfloat16()
    for norm in (other_eps, fp32, no_weight, override):
        assert norm._fib_plain is None and norm._fib_fused is None
        assert torch.equal(norm.forward_native(x), RMSNorm.forward_native(norm, x))
    norm, act = _modules()
    x16 = x.half()
    assert torch.equal(norm.forward_native(x16), RMSNorm.forward_native(norm, x16))
    odd = torch.randn(2, 2 * 1000).bfloat16()
    assert torch.equal(act.forward_native(odd), SiluAndMul.forward_native(odd))
    assert fib.stats().get("rmsnorm_h4096", {}).get("hits", 0) == 0
    norm.forward_native(x)  # dispatch is on: a covered call is a hit
    assert fib.stats()["rmsnorm_h4096"]["hits"] == 1


def test_4_registration_is_idempotent(switched_on: None):
    from fib_runtime.adapters.vllm import register
    from fib_runtime.adapters.vllm.ops import FibRMSNorm

    for _ in range(3):
        _load_plugins()
        register()
    assert op_registry_oot["RMSNorm"] is FibRMSNorm
    assert [k for k in op_registry_oot if k in ("RMSNorm", "SiluAndMul")] == \
        ["RMSNorm", "SiluAndMul"]
    norm, _ = _modules()
    x, _, _ = _inputs(2)
    torch.testing.assert_close(norm(x), RMSNorm.forward_native(norm, x))


def test_5_compiled_block_is_one_graph_that_sees_real_batch_sizes(
        switched_on: None, tmp_path: Path):
    norm, act = _modules()
    graphs: list[torch.fx.GraphModule] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(gm)
        return gm.forward

    def block(x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, residual = norm(x, residual)
        gate_up = torch.cat([h] * (2 * INTER // H), dim=-1)
        y = act(gate_up)[:, :H]
        return norm(y), residual

    compiled = torch.compile(block, dynamic=True, backend=backend, fullgraph=True)
    capture = fib.enable_capture(tmp_path / "capture")
    try:
        for rows in (3, 5, 17, 64):
            x, r, _ = _inputs(rows)
            got = compiled(x.clone(), r.clone())
            want = block(x.clone(), r.clone())
            torch.testing.assert_close(got[0], want[0])
            torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)
        capture.flush()
    finally:
        fib.disable_capture()
    assert len(graphs) == 1, [g.code for g in graphs]
    code = graphs[0].code
    for name in ("rmsnorm_h4096", "fused_add_rmsnorm_residual_h4096", "silu_and_mul_i14336"):
        assert f"fib.{name}" in code, code
    from fib_runtime.store import TraceDB

    seen = TraceDB.open(tmp_path / "capture").workloads_for("fused_add_rmsnorm_residual_h4096")
    assert {w.workload.axes["batch_size"] for w in seen} >= {3, 5, 17, 64}


def test_6_the_fallback_is_vllms_path_as_vllm_runs_it(switched_on: None):
    """A routed SiluAndMul that dispatch does not serve (no silu solution measured) falls
    back to forward_native compiled as vLLM compiles a disabled custom op: bit for bit what
    vLLM computes, not the eager forward_native (which rounds twice)."""
    from fib_runtime.adapters.vllm import originals

    _, act = _modules()
    gate_up = _inputs(33)[2]
    got = act.forward_native(gate_up)  # the traced wrapper's call, outside compile: eager
    compiled = originals.compiled_silu_and_mul()(gate_up)
    eager = SiluAndMul.forward_native(gate_up)
    assert not torch.equal(compiled, eager)  # the two paths differ here, so the check means
    assert torch.equal(got, compiled)


def test_7_retune_times_the_plugins_originals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Capture through vLLM's own modules records the plugin's fallbacks as importable
    originals; retune times them (no "not timeable" note) and they rank like any solution."""
    from fib_runtime.catalogue import install
    from fib_runtime.original import is_original, untimeable_reason
    from fib_runtime.retuning import retune
    from fib_runtime.store import TraceDB

    db = TraceDB.open(tmp_path / "db", create=True)
    install(db)
    monkeypatch.setenv("FIB_DATASET_PATH", str(tmp_path / "db"))
    monkeypatch.setenv("FIB_ENABLE_TRACING", "1")
    bridge.reset_for_tests()
    _load_plugins()
    try:
        norm, act = _modules()
        for rows in (2, 8):
            x, r, gate_up = _inputs(rows)
            norm(x)
            norm(x.clone(), r.clone())
            act.forward_native(gate_up)  # the traced wrapper's site (compiled native)
            with pytest.raises(AttributeError):  # the eager site: vLLM's CUDA kernel, which
                act.forward_cuda(gate_up)  # its CPU build lacks (the call is captured first)
    finally:
        fib.disable_capture()
    names = ["rmsnorm_h4096", "fused_add_rmsnorm_residual_h4096", "silu_and_mul_i14336"]
    recorded = {s.name: s for n in names for s in TraceDB.open(tmp_path / "db").solutions_for(n)
                if is_original(s)}
    module = "fib_runtime.adapters.vllm.originals"
    assert {n.split("__original__")[1] for n in recorded} == {
        f"{module}.rmsnorm_h4096", f"{module}.fused_add_rmsnorm_residual_h4096",
        f"{module}.silu_and_mul_i14336", f"{module}.silu_and_mul_i14336__cuda"}
    assert all(untimeable_reason(s) is None for s in recorded.values())
    summary = retune(tmp_path / "db", definitions=names, devices="cpu", warmup=1, iters=3,
                     progress=False)
    assert not [n for n in summary.notes if "timeable" in n or "cannot be timed" in n]
    after = TraceDB.open(tmp_path / "db")
    status = {t.solution: t.evaluation.status.value for n in names
              for t in after.traces_for(n) if t.solution in recorded and t.evaluation}
    assert set(status) == set(recorded)  # every original was run by retune
    for name, got in status.items():  # vLLM's CUDA kernel is not in its CPU build
        assert got == ("RUNTIME_ERROR" if name.endswith("__cuda") else "PASSED"), (name, got)
