"""The SGLang plugin's MoE routing against SGLang's own MoE method (the real 0.5.23 wheel, CPU).

The plugin is loaded through SGLang's `load_plugins()` (our entry point, then
`HookRegistry.apply_hooks()`), and SGLang's `UnquantizedFusedMoEMethod` is built as its
`FusedMoE` layer builds it (`create_weights`, `create_moe_runner` with the layer's
`MoeRunnerConfig`: SGLang picks its Triton runner here as on an sm90 GPU) and called as the
layer calls it on a GPU: `forward_cuda(layer, StandardDispatchOutput)`.

What the CPU cannot run, so these tests do not: SGLang's `FusedMoE` layer itself (it needs
SGLang's published parallel config and server flags), its router (the tests route with
torch.topk into SGLang's `StandardTopKOutput`) and its Triton `fused_experts`. Where a call is
left to SGLang, a recording stand-in replaces SGLang's runner (`method.runner`, keeping its
backend) and the tests check that it, not fib-runtime, computed the call. The original
(SGLang's Triton fused_experts) is checked against the reference only on a GPU (marker gpu).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

pytest.importorskip("sglang.srt.layers.quantization.unquant")

import sglang.srt.plugins as sglang_plugins
from fib_runtime.adapters import bridge, moe_counts
from sglang.srt.layers.moe.moe_runner.base import MoeRunnerConfig
from sglang.srt.layers.moe.token_dispatcher import StandardCombineInput, StandardDispatchOutput
from sglang.srt.layers.moe.topk import StandardTopKOutput, StandardTopKOutputPacked
from sglang.srt.layers.quantization.unquant import UnquantizedFusedMoEMethod
from sglang.srt.plugins.hook_registry import HookRegistry

import fib_runtime as fib
from fib_runtime.catalogue import load_catalogue
from tests.adapters.engine_db import engine_db

OLMOE = "moe_bf16_topk8_e64_h2048_i1024"  # top-8 of 64 experts, H 2048, I 1024
ORIGINAL = f"{OLMOE}__forward_cuda"
TARGET = "sglang.srt.layers.quantization.unquant.UnquantizedFusedMoEMethod.forward_cuda"
# SGLang's own, before any hook; in a dict: HookRegistry.apply_hooks rebinds every module
# attribute that holds a patched function
OWN = {"forward_cuda": UnquantizedFusedMoEMethod.forward_cuda}


def _load_plugins() -> None:
    sglang_plugins._plugins_loaded = False  # SGLang's once-per-process guard (a new worker)
    sglang_plugins.load_plugins()


class RunnerStandIn:
    """In place of SGLang's MoeRunner (its Triton kernels need a GPU): records the calls
    SGLang's own method made."""

    def __init__(self, backend: Any) -> None:
        self.runner_backend, self.calls = backend, 0

    def run(self, dispatch_output: Any, quant_info: Any) -> StandardCombineInput:
        self.calls += 1
        return StandardCombineInput(torch.full_like(dispatch_output.hidden_states, 7.0))


class Layer:
    """SGLang's unquantized MoE method on a module holding its weights, as FusedMoE builds it."""

    def __init__(self, experts: int = 64, top_k: int = 8, hidden: int = 2048,
                 inter: int = 1024, *, dtype: torch.dtype = torch.bfloat16,
                 with_bias: bool = False, fill: bool = True, **config: Any) -> None:
        config.setdefault("num_local_experts", experts)
        self.config = MoeRunnerConfig(num_experts=experts, hidden_size=hidden,
                                      intermediate_size_per_partition=inter, top_k=top_k,
                                      params_dtype=dtype, **config)
        self.module = torch.nn.Module()
        self.module.moe_runner_config = self.config
        self.method = UnquantizedFusedMoEMethod()
        self.method.create_weights(self.module, experts, hidden, inter, dtype,
                                   with_bias=with_bias)
        self.method.create_moe_runner(self.module, self.config)
        self.backend = self.method.runner.runner_backend
        self.method.runner = self.runner = RunnerStandIn(self.backend)
        if fill:
            g = torch.Generator().manual_seed(experts * hidden + inter)
            with torch.no_grad():
                for w in (self.module.w13_weight, self.module.w2_weight):
                    w.copy_(torch.randn(w.shape, generator=g) * 0.03)
        self.experts, self.top_k, self.hidden, self.dtype = experts, top_k, hidden, dtype

    def inputs(self, tokens: int) -> StandardDispatchOutput:
        """Tokens routed as SGLang's standard top-k does (softmax, top-k, renormalised)."""
        g = torch.Generator().manual_seed(tokens)
        x = torch.randn(tokens, self.hidden, generator=g).to(self.dtype)
        logits = torch.randn(tokens, self.experts, generator=g)
        weights, ids = torch.topk(torch.softmax(logits, -1), self.top_k, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True)
        topk = StandardTopKOutput(weights.float(), ids.int(), logits)
        return StandardDispatchOutput(hidden_states=x, hidden_states_scale=None,
                                      topk_output=topk)

    def __call__(self, dispatch_output: StandardDispatchOutput) -> Any:
        return self.method.forward_cuda(self.module, dispatch_output)

    def reference(self, d: StandardDispatchOutput) -> torch.Tensor:
        namespace: dict[str, Any] = {}
        exec(load_catalogue().definitions[OLMOE].reference, namespace)
        return namespace["run"](d.hidden_states, d.topk_output.topk_weights,  # type: ignore[no-any-return]
                                d.topk_output.topk_ids, self.module.w13_weight,
                                self.module.w2_weight)


def _assert_matches(got: torch.Tensor, want: torch.Tensor) -> None:
    """Within the tolerances retune checks a solution against the reference with."""
    from fib_runtime.measure.compare import check_outputs

    check = check_outputs(load_catalogue().definitions[OLMOE], got, (want,))
    assert check.status.value == "PASSED", check.log


@pytest.fixture
def switched_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """FIB_ENABLE_APPLY with OLMoE's experts measured here; SGLang loads the plugin."""
    engine_db(tmp_path / "db", [OLMOE])
    monkeypatch.setenv("FIB_DATASET_PATH", str(tmp_path / "db"))
    monkeypatch.setenv("FIB_ENABLE_APPLY", "1")
    bridge.reset_for_tests()
    _load_plugins()
    moe_counts.reset()
    yield
    fib.disable_apply()


def test_1_the_hook_is_on_sglangs_method(switched_on: None):
    assert TARGET in HookRegistry._hooks
    assert UnquantizedFusedMoEMethod.forward_cuda is not OWN["forward_cuda"]


def test_2_a_covered_layer_routes_and_matches_the_reference(switched_on: None):
    layer = Layer()
    assert layer.backend.is_triton()  # what SGLang picks for this layer
    for tokens in (1, 3, 9):
        d = layer.inputs(tokens)
        out = layer(d)
        assert type(out) is StandardCombineInput
        _assert_matches(out.hidden_states, layer.reference(d))
    assert layer.runner.calls == 0  # SGLang's kernels computed nothing
    assert moe_counts.stats() == {"routed": {"sglang": {OLMOE: 3}}, "unchanged": {}}
    assert fib.stats()[OLMOE]["hits"] == 3 and not fib.stats()[OLMOE]["fallbacks"]


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"activation": "gelu"}, "activation gelu"),
    ({"with_bias": True}, "bias"),
    ({"apply_router_weight_on_input": True}, "router weight on input"),
    ({"routed_scaling_factor": 2.5}, "routed scaling factor"),
    ({"swiglu_limit": 7.0}, "swiglu parameters"),
    ({"gemm1_alpha": 1.702}, "swiglu parameters"),
    ({"num_local_experts": 32}, "expert parallelism"),
    ({"num_fused_shared_experts": 1}, "fused shared experts"),
    ({"inter": 512}, "no definition"),
    ({"top_k": 4}, "no definition"),
    ({"dtype": torch.float16}, "dtype torch.float16"),
])
def test_3_uncovered_layers_stay_with_sglang_counted_by_reason(
        switched_on: None, kwargs: dict[str, Any], reason: str):
    layer = Layer(fill=False, **kwargs)
    d = layer.inputs(4)
    for _ in range(2):
        out = layer(d)
        assert torch.equal(out.hidden_states, torch.full_like(d.hidden_states, 7.0))
    assert layer.runner.calls == 2
    assert moe_counts.stats() == {"routed": {}, "unchanged": {"sglang": {reason: 2}}}
    assert fib.stats().get(OLMOE, {}).get("calls", 0) == 0


def test_4_other_backends_and_per_call_cases_stay_with_sglang(switched_on: None):
    from fib_runtime.adapters.sglang.moe import layer_reason
    from sglang.srt.layers.moe.utils import MoeRunnerBackend

    layer = Layer(fill=False)
    layer.method.runner = RunnerStandIn(MoeRunnerBackend.DEEP_GEMM)
    assert layer_reason(layer.method, layer.module) == ("backend DEEP_GEMM", None)
    layer.method._aiter_runner = object()
    assert layer_reason(layer.method, layer.module) == ("backend AITER", None)
    layer = Layer(fill=False)
    layer.runner.lora_enabled = True
    assert layer_reason(layer.method, layer.module) == ("lora", None)

    layer = Layer()
    d = layer.inputs(3)
    topk = d.topk_output
    layer(d._replace(hidden_states_scale=torch.ones(3)))
    layer(d._replace(topk_output=topk._replace(topk_ids=topk.topk_ids.long())))
    layer(d._replace(hidden_states=d.hidden_states.float()))
    layer(d._replace(topk_output=SimpleNamespace(**topk._asdict())))  # not SGLang's standard
    assert layer.runner.calls == 4
    assert moe_counts.stats()["unchanged"] == {
        "sglang": {"pre-quantized input": 1, "call dtypes": 3}}
    _assert_matches(layer(d).hidden_states, layer.reference(d))
    packed = StandardTopKOutputPacked(*topk, packed_topk_ids=topk.topk_ids.clone())
    _assert_matches(layer(d._replace(topk_output=packed)).hidden_states, layer.reference(d))
    assert layer.runner.calls == 4
    assert moe_counts.stats()["routed"] == {"sglang": {OLMOE: 2}}


def test_5_a_definition_fib_does_not_serve_stays_with_sglang(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    engine_db(tmp_path / "db")  # the norms and silu only: no MoE definition
    monkeypatch.setenv("FIB_DATASET_PATH", str(tmp_path / "db"))
    monkeypatch.setenv("FIB_ENABLE_APPLY", "1")
    bridge.reset_for_tests()
    _load_plugins()
    moe_counts.reset()
    try:
        layer = Layer(fill=False)
        layer(layer.inputs(2))
    finally:
        fib.disable_apply()
    assert layer.runner.calls == 1
    assert moe_counts.stats()["unchanged"] == {"sglang": {"not served": 1}}


def test_6_capture_records_token_counts_and_sglangs_original(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Capture through SGLang's own method records one workload per token count (seq_len)
    and the plugin's fallback, SGLang's Triton fused_experts, as an importable original."""
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
        layer = Layer()
        for tokens in (2, 5, 5, 11):
            # the fallback, SGLang's Triton fused_experts (its custom op), has no CPU
            # kernel; capture records the call before the fallback runs
            with pytest.raises(NotImplementedError, match="sglang::outplace_fused_experts"):
                layer(layer.inputs(tokens))
    finally:
        fib.disable_capture()
    db = TraceDB.open(tmp_path / "db")
    seen = sorted(w.workload.axes["seq_len"] for w in db.workloads_for(OLMOE))
    assert seen == [2, 5, 11]
    originals = [s for s in db.solutions_for(OLMOE) if is_original(s)]
    assert [s.name.split("__original__")[1] for s in originals] == \
        [f"fib_runtime.adapters.sglang.originals.{ORIGINAL}"]
    assert untimeable_reason(originals[0]) is None
    assert moe_counts.stats()["routed"] == {"sglang": {OLMOE: 4}}
    assert layer.runner.calls == 0


def test_7_the_original_is_sglangs_fused_experts():
    import inspect

    from fib_runtime.adapters.sglang import originals

    fn = getattr(originals, ORIGINAL)
    assert fn.__module__ == "fib_runtime.adapters.sglang.originals" and fn.__name__ == ORIGINAL
    assert "triton_utils.fused_moe import fused_experts" in inspect.getsource(fn)
    for missing in ("moe_bf16_topk3_e5_h7_i11__forward_cuda", f"{OLMOE}__forward_native",
                    OLMOE):
        with pytest.raises(AttributeError):
            getattr(originals, missing)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_8_on_a_gpu_the_routed_layer_and_sglangs_original_match_the_reference(
        switched_on: None):
    """On a GPU: the routed call (fib-runtime's best solution) and SGLang's own Triton
    fused_experts (the original) both match the definition's reference."""
    from fib_runtime.adapters.sglang import originals

    layer = Layer()
    layer.module.cuda()
    original = getattr(originals, ORIGINAL)
    for tokens in (1, 7, 64, 300):
        d = layer.inputs(tokens)
        d = d._replace(hidden_states=d.hidden_states.cuda(), topk_output=StandardTopKOutput(
            *(t.cuda() for t in d.topk_output)))
        want = layer.reference(d)
        _assert_matches(layer(d).hidden_states, want)
        x = d.hidden_states.clone()
        _assert_matches(original(x, d.topk_output.topk_weights, d.topk_output.topk_ids,
                                 layer.module.w13_weight, layer.module.w2_weight), want)
        assert torch.equal(x, d.hidden_states)  # out of place
    assert moe_counts.stats() == {"routed": {"sglang": {OLMOE: 4}}, "unchanged": {}}


def test_9_under_torch_compile_the_call_is_the_fib_custom_op(switched_on: None):
    """SGLang's --enable-torch-compile traces forward_cuda (beyond one token): the routed call
    is then `torch.ops.fib.<definition>`, still matching the reference."""
    layer = Layer()
    d = layer.inputs(5)
    seen: list[str] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: Any) -> Any:
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm

    layer.method.process_weights_after_loading(layer.module)  # decides, outside the trace
    assert layer.method._fib_route == (None, OLMOE, 8)
    torch._dynamo.reset()
    compiled = torch.compile(lambda d: layer(d).hidden_states, backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. dynamo tracing into the (cached) decision
        got = compiled(d)
    _assert_matches(got, layer.reference(d))
    assert f"fib.{OLMOE}" in seen
    assert layer.runner.calls == 0


def test_10_processing_the_weights_again_decides_again(switched_on: None):
    """SGLang re-runs process_weights_after_loading after a weight update; the decision
    follows what it leaves (here a scaling factor set since)."""
    layer = Layer(fill=False)
    layer.method.process_weights_after_loading(layer.module)
    assert layer.method._fib_route == (None, OLMOE, 8)
    layer.config.routed_scaling_factor = 2.5
    layer.method.process_weights_after_loading(layer.module)
    layer(layer.inputs(2))
    assert layer.runner.calls == 1
    assert moe_counts.stats()["unchanged"] == {"sglang": {"routed scaling factor": 1}}
