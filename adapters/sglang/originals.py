"""SGLang's own RMSNorm and SiluAndMul methods with each definition's signature and
constants: the engine's path as an importable candidate
(`fib_runtime.adapters.sglang.originals.<definition>__<method>`).

One module-level function per name, made on first access (`bridge.module_originals`), so
retune in another process imports and times exactly what the plugin's call sites fall back
to, and dispatch calls it directly where it is the fastest. `<method>` is `forward_cuda`
(SGLang's kernels; the norms work in place there) or `forward_native` (what
`--enable-torch-compile` runs). The norm methods are called on a stand-in that holds the
module's constants (`_NormConstants`); the activation's methods do not read `self`. SGLang's
own methods are the ones saved before the plugin's hooks were applied (in a process without
the plugin, the class's own).

`moe_bf16_topk{k}_e{E}_h{H}_i{I}__forward_cuda(hidden_states, topk_weights, topk_ids, w13,
w2)` is SGLang's Triton `fused_experts` (triton_utils.fused_moe, with its per-device config
tables), what `UnquantizedFusedMoEMethod.forward_cuda` runs for its Triton runner backend,
called out of place with the definition's constants (all experts local, SiLU-and-mul, no
bias, the routing weight on the output).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from fib_runtime.adapters import bridge

from fib_runtime import engine_ops

METHODS = ("forward_cuda", "forward_native")


class _NormConstants:
    """What SGLang's RMSNorm methods read from `self`, for a module whose constants routed."""

    has_weight = True
    cast_x_before_out_mul = False
    fp32_residual = False
    override_orig_dtype = None
    variance_size_override = None
    _quant_linear = None

    def __init__(self, weight: torch.Tensor, eps: float) -> None:
        self.weight = weight
        self.variance_epsilon = eps
        self.hidden_size = weight.shape[0]

    def forward_native(self, *args: Any) -> Any:
        return own("norm", "forward_native")(self, *args)


# "norm.forward_cuda" ... -> SGLang's own method, saved by hooks.install() before its hooks
saved: dict[str, Callable[..., Any]] = {}


def own(kind: str, method: str) -> Callable[..., Any]:
    """SGLang's own `RMSNorm.<method>` ("norm") or `SiluAndMul.<method>` ("act")."""
    found = saved.get(f"{kind}.{method}")
    if found is not None:
        return found
    if kind == "norm":
        from sglang.srt.layers.layernorm import RMSNorm

        return getattr(RMSNorm, method)  # type: ignore[no-any-return]
    from sglang.srt.layers.activation import SiluAndMul

    return getattr(SiluAndMul, method)  # type: ignore[no-any-return]


def _norm(method: str, eps: float) -> Callable[..., Any]:
    run = own("norm", method)

    def sglang_rmsnorm(hidden_states: torch.Tensor, weight: torch.Tensor,
                       output: torch.Tensor | None = None) -> torch.Tensor:
        result = run(_NormConstants(weight, eps), hidden_states)
        if output is None:
            return result  # type: ignore[no-any-return]
        output.copy_(result)
        return output

    return sglang_rmsnorm


def _fused(method: str, eps: float) -> Callable[..., Any]:
    run = own("norm", method)

    def sglang_fused_add_rmsnorm(hidden_states: torch.Tensor, residual: torch.Tensor,
                                 weight: torch.Tensor, output: torch.Tensor | None = None,
                                 residual_out: torch.Tensor | None = None) -> Any:
        out, res = run(_NormConstants(weight, eps), hidden_states, residual)
        if output is None:
            return out, res
        if output is not out:
            output.copy_(out)
        if residual_out is not res:
            residual_out.copy_(res)
        return output, residual_out

    return sglang_fused_add_rmsnorm


def _act(method: str) -> Callable[..., Any]:
    run = own("act", method)

    def sglang_silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
        return run(None, gate_up)  # type: ignore[no-any-return]  # neither reads self

    return sglang_silu_and_mul


def _fused_experts() -> Callable[..., Any]:
    def sglang_fused_experts(hidden_states: torch.Tensor, topk_weights: torch.Tensor,
                             topk_ids: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor
                             ) -> torch.Tensor:
        from sglang.srt.layers.moe.moe_runner.base import MoeRunnerConfig
        from sglang.srt.layers.moe.moe_runner.triton_utils.fused_moe import fused_experts
        from sglang.srt.layers.moe.topk import StandardTopKOutput

        experts, hidden, inter = w2.shape
        config = MoeRunnerConfig(num_experts=experts, num_local_experts=experts,
                                 hidden_size=hidden, intermediate_size_per_partition=inter,
                                 top_k=topk_ids.shape[-1], params_dtype=w13.dtype,
                                 inplace=False)
        topk = StandardTopKOutput(topk_weights, topk_ids, None)
        return fused_experts(hidden_states, w13, w2, topk, config)  # type: ignore[no-any-return]

    return sglang_fused_experts


def _make(name: str) -> Callable[..., Any] | None:
    base, _, method = name.partition("__")
    if method not in METHODS:
        return None
    if base.startswith("silu_and_mul_i"):
        return _act(method)
    if base.startswith(engine_ops.MOE_PREFIX):
        return _fused_experts() if method == "forward_cuda" and base in engine_ops.shipped_moe() \
            else None
    if not base.startswith(("rmsnorm_h", "fused_add_rmsnorm_residual_h")):
        return None
    eps = engine_ops.shipped_eps(base)
    if eps is None:
        return None
    return (_norm if base.startswith("rmsnorm_h") else _fused)(method, eps)


__getattr__ = bridge.module_originals(__name__, _make)
