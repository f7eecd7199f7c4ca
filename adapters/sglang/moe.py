"""SGLang's unquantized fused MoE with the expert calls a bf16 definition covers routed to
fib-runtime.

SGLang 0.5.23 builds an unquantized MoE layer (`FusedMoE`) with the quant method
`UnquantizedFusedMoEMethod`; the layer dispatches the tokens (routing already done:
`dispatch_output.topk_output` holds topk_weights / topk_ids) and calls
`quant_method.apply(layer, dispatch_output)`, which on a GPU is `forward_cuda`: for the
Triton runner backend, SGLang's Triton `fused_experts`, returned as a `StandardCombineInput`.
The plugin hooks `forward_cuda` AROUND (`HookRegistry`, as `hooks.py` does for the norms):
a call the `moe_bf16_topk{k}_e{E}_h{H}_i{I}` definition covers goes to its `fib.apply` site,
whose fallback (and the original retune times) is SGLang's Triton `fused_experts`
(`originals.<definition>__forward_cuda`); the result comes back as SGLang's
`StandardCombineInput`. Out of place: SGLang's own path writes the experts' output into the
dispatched hidden states (its `inplace` runner option); the layer reads the returned value.

Whether a layer routes is decided from its method and runner config after SGLang has processed
its loaded weights (an AFTER hook on `process_weights_after_loading`, which may shuffle or
interleave them; outside any torch.compile trace), or else on its first call; a call not
routed runs SGLang's own method and is counted by reason in `fib_runtime.adapters.moe_counts`
(engine "sglang"):

- `backend <name>`: SGLang's runner is not its Triton one (FlashInfer CUTLASS / TRT-LLM,
  DeepGEMM, triton_kernels, AITER: other weight layouts or kernels);
- `lora`: SGLang's runner carries LoRA adapters for the experts;
- `expert parallelism`: the layer holds a slice of the experts;
  `fused shared experts`: shared experts folded into the routed ones;
- `activation <name>`, `not gated`, `bias`, `swiglu parameters`, `router weight on input`,
  `routed scaling factor`, `no combine`, `padded sizes`, `dtype <dtype>`: the definition is
  bf16 SiLU-and-mul experts ([gate; up]) without bias, the routing weight applied to the
  output and summed over top_k, at the checkpoint's own sizes;
- `no definition`: no shipped definition has the layer's (top_k, E, H, I);
  `not served`: fib-runtime does not serve it in this process;
- per call: `pre-quantized input` and `call dtypes` (activations not 2-D bf16, top-k output
  not SGLang's standard one, ids not int32, weights not float32, other top_k).

forward_native / forward_cpu (SGLang's CPU path, and its torch.compile path at one token) are
left to SGLang and not counted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch
from fib_runtime.adapters import bridge, moe_counts
from fib_runtime.adapters.sglang import originals
from sglang.srt.layers.moe.token_dispatcher import StandardCombineInput
from sglang.srt.layers.moe.topk import StandardTopKOutput, StandardTopKOutputPacked

from fib_runtime import engine_ops

ENGINE = "sglang"
METHOD = "sglang.srt.layers.quantization.unquant.UnquantizedFusedMoEMethod"
TARGET = f"{METHOD}.forward_cuda"
_DTYPE = torch.bfloat16
_TOPK_TYPES = (StandardTopKOutput, StandardTopKOutputPacked)  # the packed one adds packed ids
_lock = threading.Lock()
_installed = False


def layer_reason(method: Any, layer: Any) -> tuple[str | None, str | None]:
    """(reason the layer's calls stay with SGLang or None, definition name or None)."""
    backend = method.runner.runner_backend if method.runner is not None else None
    if method._aiter_runner is not None:
        return "backend AITER", None
    if backend is None or not backend.is_triton():
        return f"backend {getattr(backend, 'name', backend)}", None
    if getattr(method.runner, "lora_enabled", False):
        return "lora", None
    cfg = method.moe_runner_config
    w13, w2 = layer.w13_weight, layer.w2_weight
    if cfg.num_experts != cfg.num_local_experts or w2.shape[0] != cfg.num_experts:
        return "expert parallelism", None
    if cfg.num_fused_shared_experts:
        return "fused shared experts", None
    if cfg.activation != "silu":
        return f"activation {cfg.activation}", None
    if not cfg.is_gated:
        return "not gated", None
    if method.with_bias:
        return "bias", None
    if method.w13_swiglu_interleaved or any(
            getattr(cfg, name) is not None
            for name in ("gemm1_alpha", "gemm1_beta", "gemm1_clamp_limit", "swiglu_limit")):
        return "swiglu parameters", None
    if cfg.apply_router_weight_on_input:
        return "router weight on input", None
    if cfg.routed_scaling_factor not in (None, 1.0):
        return "routed scaling factor", None
    if cfg.no_combine:
        return "no combine", None
    if w13.dtype != _DTYPE or w2.dtype != _DTYPE:
        return f"dtype {w13.dtype}", None
    experts, hidden, inter = w2.shape
    if w13.dim() != 3 or tuple(w13.shape) != (experts, 2 * inter, hidden):
        return "padded sizes", None
    name = engine_ops.moe_definition_for(int(cfg.top_k), experts, hidden, inter)
    if name is None:
        return "no definition", None
    if not bridge.served(name):
        return "not served", name
    return None, name


def _decide(method: Any, layer: Any) -> tuple[str | None, str | None, int]:
    reason, name = layer_reason(method, layer)
    route = method.__dict__["_fib_route"] = (reason, name, int(method.moe_runner_config.top_k))
    return route


def _route(method: Any, layer: Any) -> tuple[str | None, str | None, int]:
    route = method.__dict__.get("_fib_route")
    return _decide(method, layer) if route is None else route  # type: ignore[no-any-return]


def after_processing(result: Any, method: Any, layer: Any, *args: Any, **kwargs: Any) -> None:
    """AFTER hook of `UnquantizedFusedMoEMethod.process_weights_after_loading`."""
    _decide(method, layer)


def _call_reason(dispatch_output: Any, top_k: int) -> str | None:
    if dispatch_output.hidden_states_scale is not None \
            or dispatch_output.hidden_states_pre_quant is not None:
        return "pre-quantized input"
    x, topk = dispatch_output.hidden_states, dispatch_output.topk_output
    if (type(topk) not in _TOPK_TYPES or x.dtype != _DTYPE or x.dim() != 2
            or topk.topk_ids.dtype != torch.int32 or topk.topk_weights.dtype != torch.float32
            or topk.topk_ids.shape[-1] != top_k):
        return "call dtypes"
    return None


def around_forward_cuda(original: Callable[..., Any], method: Any, layer: Any,
                        dispatch_output: Any) -> Any:
    """AROUND hook of `UnquantizedFusedMoEMethod.forward_cuda`."""
    reason, name, top_k = _route(method, layer)
    if reason is None:
        reason = _call_reason(dispatch_output, top_k)
    if reason is not None:
        moe_counts.unchanged[(ENGINE, reason)] += 1
        return original(method, layer, dispatch_output)
    assert name is not None
    moe_counts.routed[(ENGINE, name)] += 1
    fallback = getattr(originals, f"{name}__forward_cuda")
    if torch.compiler.is_compiling():
        fn = bridge.wrapper(ENGINE, name, fallback)
    else:
        fn = bridge.eager_site(name, fallback).call
    topk = dispatch_output.topk_output
    out = fn(dispatch_output.hidden_states, topk.topk_weights, topk.topk_ids,
             layer.w13_weight, layer.w2_weight)
    return StandardCombineInput(hidden_states=out)


def install() -> None:
    """Register the hook (once per process) and make every bf16 MoE definition's traced
    wrapper before fib-runtime is switched on (torch.ops.fib.<name> must exist before SGLang
    compiles or records its CUDA graphs)."""
    global _installed
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    with _lock:
        for name in engine_ops.shipped_moe():
            bridge.wrapper(ENGINE, name, getattr(originals, f"{name}__forward_cuda"))
        if not _installed:
            _installed = True
            HookRegistry.register(TARGET, around_forward_cuda, HookType.AROUND)
            HookRegistry.register(f"{METHOD}.process_weights_after_loading", after_processing,
                                  HookType.AFTER)


__all__ = ["TARGET", "after_processing", "around_forward_cuda", "install", "layer_reason"]
