"""vLLM's unquantized fused MoE with the expert calls a bf16 definition covers routed to
fib-runtime.

vLLM 0.33 builds a MoE layer as `FusedMoEFactory(...)`: a `MoERunner` whose router picks
the experts (topk_weights, topk_ids) and whose `RoutedExperts` holds the weights and a quant
method; the runner calls `quant_method.apply(layer, x, topk_weights, topk_ids, ...)`. The
unquantized method, `UnquantizedFusedMoEMethod`, is a vLLM CustomOp, so the plugin replaces
it out of tree (`CustomOp.register_oot`) with `FibUnquantizedFusedMoEMethod`, which
overrides `forward_native` (what `forward_cuda`, `forward_cpu` and a disabled custom op all
run). Routing and the engine's own router are untouched: the `moe_bf16_topk{k}_e{E}_h{H}_i{I}`
definitions take the router's topk_weights / topk_ids, as vLLM's experts kernels do.

Whether a layer routes is decided once, on its first call (its weights are loaded and
processed then), from its constants; a call it covers goes to the definition's `fib.apply`
site, whose fallback (and the original retune times) is vLLM's Triton `fused_experts`, what
the layer runs on a GPU where vLLM picks its Triton backend. Every other call runs vLLM's own
method and is counted by reason in `fib_runtime.adapters.moe_counts`:

- `backend <name>`: vLLM picked another experts backend than Triton; the others keep the
  weights in another layout (FlashInfer: [up; gate] and shuffled, CPU: prepacked, AITER:
  shuffled) or are another kernel the definition does not describe;
- `expert parallelism`: the layer holds a slice of the experts (an expert map: global ids);
- `activation <name>`, `bias`, `swiglu parameters`, `router weight on input`, `lora`,
  `padded sizes`, `dtype <dtype>`: the definition is bf16 SiLU-and-mul experts without bias,
  the routing weight applied to the output, at the checkpoint's own sizes;
- `no definition`: no shipped definition has the layer's (top_k, E, H, I);
  `not served`: fib-runtime does not serve it in this process;
- per call: `shared experts` (vLLM's kernel would run them inside the call) and
  `call dtypes` (activations not 2-D bf16, ids not int32, weights not float32, other top_k).

FP8 block-scale layers (`Fp8MoEMethod`) are not routed (README, "Use with vLLM", says why).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import torch
from fib_runtime.adapters import bridge, moe_counts
from fib_runtime.adapters.vllm import originals
from vllm.model_executor.custom_op import CustomOp, op_registry_oot
from vllm.model_executor.layers.fused_moe.activation import MoEActivation
from vllm.model_executor.layers.fused_moe.oracle.unquantized import UnquantizedMoeBackend
from vllm.model_executor.layers.fused_moe.unquantized_fused_moe_method import (
    UnquantizedFusedMoEMethod,
)

from fib_runtime import engine_ops

log = logging.getLogger("fib_runtime.adapters.vllm")
ENGINE = "vllm"
_DTYPE = torch.bfloat16
_lock = threading.Lock()


def layer_reason(method: UnquantizedFusedMoEMethod, layer: Any) -> tuple[str | None, str | None]:
    """(reason the layer's calls stay with vLLM or None, definition name or None)."""
    moe = method.moe
    backend = method.unquantized_backend
    if backend != UnquantizedMoeBackend.TRITON:
        return f"backend {backend.name}", None
    if layer.expert_map is not None or layer.local_num_experts != layer.global_num_experts:
        return "expert parallelism", None
    if layer.activation != MoEActivation.SILU:
        return f"activation {layer.activation.name}", None
    if moe.has_bias:
        return "bias", None
    if any(getattr(layer, name, None) is not None
           for name in ("swiglu_limit", "swiglu_alpha", "swiglu_beta")):
        return "swiglu parameters", None
    if layer.apply_router_weight_on_input:
        return "router weight on input", None
    if moe.is_lora_enabled:
        return "lora", None
    if (moe.hidden_dim != moe.hidden_dim_unpadded
            or moe.intermediate_size_per_partition != moe.intermediate_size_per_partition_unpadded):
        return "padded sizes", None
    w13, w2 = layer.w13_weight, layer.w2_weight
    if w13.dtype != _DTYPE or w2.dtype != _DTYPE:
        return f"dtype {w13.dtype}", None
    experts, hidden, inter = w2.shape
    if tuple(w13.shape) != (experts, 2 * inter, hidden):
        return "padded sizes", None
    name = engine_ops.moe_definition_for(int(layer.top_k), experts, hidden, inter)
    if name is None:
        return "no definition", None
    if not bridge.served(name):
        return "not served", name
    return None, name


class FibUnquantizedFusedMoEMethod(UnquantizedFusedMoEMethod):
    """vLLM's unquantized MoE method; expert calls a definition covers go to fib-runtime."""

    _fib_route: tuple[str | None, str | None, int] | None = None  # reason, name, top_k

    def _fib_call(self, layer: Any, x: torch.Tensor, topk_weights: torch.Tensor,
                  topk_ids: torch.Tensor, shared_experts: Any) -> torch.Tensor | None:
        """The routed result, or None (counted) when vLLM computes this call."""
        route = self._fib_route
        if route is None:
            reason, name = layer_reason(self, layer)
            route = self._fib_route = (reason, name, int(layer.top_k))
        reason, name, top_k = route
        if reason is None:
            if shared_experts is not None:
                reason = "shared experts"
            elif (x.dtype != _DTYPE or x.dim() != 2 or topk_ids.dtype != torch.int32
                  or topk_weights.dtype != torch.float32 or topk_ids.shape[-1] != top_k):
                reason = "call dtypes"
        if reason is not None:
            moe_counts.unchanged[(ENGINE, reason)] += 1
            return None
        assert name is not None
        moe_counts.routed[(ENGINE, name)] += 1
        original = getattr(originals, name)
        if torch.compiler.is_compiling():  # CPU: vLLM traces into its MoE there
            fn = bridge.wrapper(ENGINE, name, original)
        else:  # GPU: inside vLLM's opaque moe_forward op, always eager
            fn = bridge.eager_site(name, original).call
        return fn(x, topk_weights, topk_ids, layer.w13_weight, layer.w2_weight)  # type: ignore[no-any-return]

    def forward_native(self, layer: Any, x: torch.Tensor, topk_weights: torch.Tensor,
                       topk_ids: torch.Tensor, shared_experts: Any,
                       shared_experts_input: torch.Tensor | None) -> torch.Tensor:
        routed = self._fib_call(layer, x, topk_weights, topk_ids, shared_experts)
        if routed is not None:
            return routed
        return super().forward_native(layer, x, topk_weights, topk_ids, shared_experts,
                                      shared_experts_input)


def install() -> None:
    """Register the replacement method (once per process) and make every bf16 MoE
    definition's traced wrapper before fib-runtime is switched on (torch.ops.fib.<name>
    must exist before vLLM compiles)."""
    with _lock:
        base, replacement = UnquantizedFusedMoEMethod, FibUnquantizedFusedMoEMethod
        current = op_registry_oot.get(base.__name__)
        if current is None:
            CustomOp.register_oot(replacement, name=base.__name__)
        elif current is not replacement:
            log.warning("vLLM's %s is already replaced by %s; fib-runtime leaves it",
                        base.__name__, current.__qualname__)
        for name in engine_ops.shipped_moe():
            bridge.wrapper(ENGINE, name, getattr(originals, name))


__all__ = ["FibUnquantizedFusedMoEMethod", "install", "layer_reason"]

