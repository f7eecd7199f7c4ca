"""The vLLM plugin's MoE routing against vLLM's own MoE layers (the real wheel, CPU).

Layers are built as a model builds them (`FusedMoEFactory`: vLLM's MoERunner, its CPU
router, RoutedExperts and the quant method vLLM instantiates, which the plugin has replaced)
and called through the runner (`MoERunner.forward`: routing, then `quant_method.apply`).

What the CPU cannot run: vLLM's experts kernels. The CPU build's need `vllm._C` (absent from
the CUDA wheel this environment installs on CPU torch), the Triton one needs triton and
`vllm._moe_C`. So (1) vLLM picks its CPU backend here; the tests set the method's backend to
TRITON, what vLLM picks for these layers on an sm90 GPU (the weight layout is the same: the
Triton backend keeps vLLM's [gate; up] checkpoint layout), and do not run vLLM's
`process_weights_after_loading` (on CPU it prepacks through `vllm._C`; for Triton it changes
nothing); (2) where a call is left to vLLM, the tests put a recording stand-in in place of
vLLM's kernel (`method.moe_kernel`) and check that it, not fib-runtime, computed the call;
(3) the original (vLLM's Triton `fused_experts`) is checked against the reference only on a
GPU (`test_8_on_a_gpu_...`, marker gpu).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

pytest.importorskip("vllm")

import vllm.plugins
from fib_runtime.adapters import bridge, moe_counts
from vllm.config import VllmConfig, set_current_vllm_config
from vllm.forward_context import set_forward_context
from vllm.model_executor.layers.fused_moe import FusedMoEFactory
from vllm.model_executor.layers.fused_moe.oracle.unquantized import UnquantizedMoeBackend

import fib_runtime as fib
from fib_runtime.catalogue import load_catalogue
from tests.adapters.engine_db import engine_db

OLMOE = "moe_bf16_topk8_e64_h2048_i1024"  # top-8 of 64 experts, H 2048, I 1024
_names = itertools.count()


def _load_plugins() -> None:
    vllm.plugins.plugins_loaded = False  # vLLM's once-per-process guard (a new worker)
    vllm.plugins.load_general_plugins()


class Layer:
    """A vLLM MoE layer (runner + its config), built and called as a model does."""

    def __init__(self, experts: int = 64, top_k: int = 8, hidden: int = 2048,
                 inter: int = 1024, *, fill: bool = True, backend: str | None = "TRITON",
                 device: str = "cpu", **kwargs: Any) -> None:
        self.config = VllmConfig()
        kwargs.setdefault("params_dtype", torch.bfloat16)
        with set_current_vllm_config(self.config), torch.device(device):
            self.runner = FusedMoEFactory(
                num_experts=experts, top_k=top_k, hidden_size=hidden, intermediate_size=inter,
                tp_size=1, dp_size=1, pcp_size=1, renormalize=False,
                prefix=f"model.layers.{next(_names)}.mlp.experts", **kwargs)
        self.experts = self.runner.routed_experts
        self.method = self.experts.quant_method
        if backend is not None:  # what vLLM picks on an sm90 GPU (CPU here)
            self.method.unquantized_backend = UnquantizedMoeBackend[backend]
        if fill:
            g = torch.Generator().manual_seed(experts * hidden + inter)
            with torch.no_grad():
                for w in (self.experts.w13_weight, self.experts.w2_weight):
                    w.copy_(torch.randn(w.shape, generator=g) * 0.03)
        self.hidden, self.device = hidden, device

    def inputs(self, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(tokens)
        experts = self.experts.global_num_experts
        return (torch.randn(tokens, self.hidden, generator=g).bfloat16().to(self.device),
                torch.randn(tokens, experts, generator=g).to(self.device))

    def __call__(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        with set_current_vllm_config(self.config), \
                set_forward_context(None, self.config, num_tokens=x.shape[0]):
            return self.runner(x, logits)  # type: ignore[no-any-return]

    def reference(self, x: torch.Tensor, logits: torch.Tensor, name: str) -> torch.Tensor:
        """The definition's reference on vLLM's own routing of these logits."""
        weights, ids = self.runner.router.select_experts(hidden_states=x, router_logits=logits)
        namespace: dict[str, Any] = {}
        exec(load_catalogue().definitions[name].reference, namespace)
        return namespace["run"](x, weights, ids, self.experts.w13_weight,  # type: ignore[no-any-return]
                                self.experts.w2_weight)


def _assert_matches(got: torch.Tensor, want: torch.Tensor) -> None:
    """Within the tolerances retune checks a solution against the reference with."""
    from fib_runtime.measure.compare import check_outputs

    check = check_outputs(load_catalogue().definitions[OLMOE], got, (want,))
    assert check.status.value == "PASSED", check.log


class KernelStandIn:
    """In place of vLLM's experts kernel (`method.moe_kernel`, which needs vllm._C on the
    CPU): records that vLLM's own path computed the call. Its attributes are what vLLM's
    runner reads of a modular Triton kernel without expert parallelism."""

    is_monolithic = False
    can_overlap_shared_experts = False
    fused_experts = SimpleNamespace(consumes_expert_mask=False)
    prepare_finalize = SimpleNamespace(topk_indices_dtype=lambda: None)

    def __init__(self) -> None:
        self.calls = 0

    def output_is_reduced(self) -> bool:
        return False

    def apply(self, hidden_states: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        self.calls += 1
        return torch.full_like(hidden_states, 7.0)


@pytest.fixture
def switched_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """FIB_ENABLE_APPLY with OLMoE's experts measured here; vLLM loads the plugin."""
    engine_db(tmp_path / "db", [OLMOE])
    monkeypatch.setenv("FIB_DATASET_PATH", str(tmp_path / "db"))
    monkeypatch.setenv("FIB_ENABLE_APPLY", "1")
    bridge.reset_for_tests()
    _load_plugins()
    moe_counts.reset()
    yield
    fib.disable_apply()


def test_1_the_method_vllm_builds_is_the_plugins(switched_on: None):
    from fib_runtime.adapters.vllm.moe import FibUnquantizedFusedMoEMethod

    layer = Layer(fill=False)
    assert type(layer.method) is FibUnquantizedFusedMoEMethod


def test_2_a_covered_layer_routes_and_matches_the_reference(switched_on: None):
    layer = Layer()
    layer.method.moe_kernel = kernel = KernelStandIn()
    for tokens in (1, 3, 9):
        x, logits = layer.inputs(tokens)
        got = layer(x, logits)
        want = layer.reference(x, logits, OLMOE)
        _assert_matches(got, want)
    assert kernel.calls == 0  # vLLM's kernel computed nothing
    assert moe_counts.stats() == {"routed": {"vllm": {OLMOE: 3}}, "unchanged": {}}
    assert fib.stats()[OLMOE]["hits"] == 3 and not fib.stats()[OLMOE]["fallbacks"]


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"backend": None}, "backend CPU"),  # what vLLM picks on this CPU: prepacked weights
    ({"backend": "FLASHINFER_CUTLASS"}, "backend FLASHINFER_CUTLASS"),
    ({"has_bias": True}, "bias"),
    ({"activation": "gelu"}, "activation GELU"),
    ({"apply_router_weight_on_input": True}, "router weight on input"),
    ({"swiglu_limit": 7.0}, "swiglu parameters"),
    ({"inter": 512}, "no definition"),
    ({"top_k": 4}, "no definition"),
    ({"params_dtype": torch.float16}, "dtype torch.float16"),
])
def test_3_uncovered_layers_stay_with_vllm_counted_by_reason(
        switched_on: None, kwargs: dict[str, Any], reason: str):
    layer = Layer(fill=False, **kwargs)
    layer.method.moe_kernel = kernel = KernelStandIn()
    x, logits = layer.inputs(4)
    x = x.to(layer.experts.w13_weight.dtype)
    for _ in range(2):
        assert torch.equal(layer(x, logits), torch.full_like(x, 7.0))
    assert kernel.calls == 2
    assert moe_counts.stats() == {"routed": {}, "unchanged": {"vllm": {reason: 2}}}
    assert fib.stats().get(OLMOE, {}).get("calls", 0) == 0


def test_4_expert_parallel_and_per_call_cases_stay_with_vllm(switched_on: None):
    from fib_runtime.adapters.vllm.moe import layer_reason

    layer = Layer(fill=False)
    layer.experts.local_num_experts = 32  # one rank's slice, as EP=2 would leave it
    assert layer_reason(layer.method, layer.experts) == ("expert parallelism", None)

    layer = Layer()
    layer.method.moe_kernel = kernel = KernelStandIn()
    x, logits = layer.inputs(3)
    weights, ids = layer.runner.router.select_experts(hidden_states=x, router_logits=logits)
    apply = layer.method.apply
    apply(layer.experts, x, weights, ids, shared_experts=object(), shared_experts_input=x)
    apply(layer.experts, x, weights, ids.long(), None, None)  # int64 ids: not the definition's
    apply(layer.experts, x.float(), weights, ids, None, None)
    assert kernel.calls == 3
    assert moe_counts.stats()["unchanged"] == {"vllm": {"shared experts": 1, "call dtypes": 2}}
    _assert_matches(apply(layer.experts, x, weights, ids, None, None),
                    layer.reference(x, logits, OLMOE))
    assert moe_counts.stats()["routed"] == {"vllm": {OLMOE: 1}}


def test_5_a_definition_fib_does_not_serve_stays_with_vllm(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    engine_db(tmp_path / "db")  # the norms and silu only: no MoE definition
    monkeypatch.setenv("FIB_DATASET_PATH", str(tmp_path / "db"))
    monkeypatch.setenv("FIB_ENABLE_APPLY", "1")
    bridge.reset_for_tests()
    _load_plugins()
    moe_counts.reset()
    try:
        layer = Layer(fill=False)
        layer.method.moe_kernel = KernelStandIn()
        layer(*layer.inputs(2))
    finally:
        fib.disable_apply()
    assert moe_counts.stats()["unchanged"] == {"vllm": {"not served": 1}}


def test_6_capture_records_token_counts_and_vllms_original(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Capture through vLLM's own layer records one workload per token count (seq_len) and
    the plugin's fallback, vLLM's Triton fused_experts, as an importable original."""
    from fib_runtime.catalogue import install
    from fib_runtime.original import is_original, untimeable_reason
    from fib_runtime.store import TraceDB

    install(TraceDB.open(tmp_path / "db", create=True))
    monkeypatch.setenv("FIB_DATASET_PATH", str(tmp_path / "db"))
    monkeypatch.setenv("FIB_ENABLE_TRACING", "1")
    bridge.reset_for_tests()
    _load_plugins()
    moe_counts.reset()
    try:
        layer = Layer(inter=1024)
        for tokens in (2, 5, 5, 11):
            x, logits = layer.inputs(tokens)
            # the fallback, vLLM's Triton kernel, stops at vLLM's Triton placeholder
            # (no triton here); capture records the call before the fallback runs
            with pytest.raises(AttributeError, match=r"triton\.language"):
                layer(x, logits)
    finally:
        fib.disable_capture()
    db = TraceDB.open(tmp_path / "db")
    seen = sorted(w.workload.axes["seq_len"] for w in db.workloads_for(OLMOE))
    assert seen == [2, 5, 11]
    originals = [s for s in db.solutions_for(OLMOE) if is_original(s)]
    assert [s.name.split("__original__")[1] for s in originals] == \
        [f"fib_runtime.adapters.vllm.originals.{OLMOE}"]
    assert untimeable_reason(originals[0]) is None
    assert moe_counts.stats()["routed"] == {"vllm": {OLMOE: 4}}


def test_7_the_original_is_vllms_fused_experts():
    import inspect

    from fib_runtime.adapters.vllm import originals

    fn = getattr(originals, OLMOE)
    assert fn.__module__ == "fib_runtime.adapters.vllm.originals" and fn.__name__ == OLMOE
    assert "fused_moe.fused_moe import fused_experts" in inspect.getsource(fn)
    with pytest.raises(AttributeError):
        getattr(originals, "moe_bf16_topk3_e5_h7_i11")  # noqa: B009  not a shipped one


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_8_on_a_gpu_vllm_picks_triton_and_the_routed_layer_matches_vllm(switched_on: None):
    """End to end on a GPU: vLLM selects its Triton backend for the layer and processes the
    weights itself; the routed call (fib-runtime's best solution) and vLLM's own
    fused_experts (the original) both match the definition's reference."""
    from fib_runtime.adapters.vllm import originals

    layer = Layer(backend=None, device="cuda")
    assert layer.method.unquantized_backend == UnquantizedMoeBackend.TRITON
    layer.method.process_weights_after_loading(layer.experts)
    original = getattr(originals, OLMOE)
    for tokens in (1, 7, 64, 300):
        x, logits = layer.inputs(tokens)
        want = layer.reference(x, logits, OLMOE)
        _assert_matches(layer(x, logits), want)
        weights, ids = layer.runner.router.select_experts(hidden_states=x, router_logits=logits)
        _assert_matches(original(x, weights, ids, layer.experts.w13_weight,
                                 layer.experts.w2_weight), want)
    assert moe_counts.stats() == {"routed": {"vllm": {OLMOE: 4}}, "unchanged": {}}
