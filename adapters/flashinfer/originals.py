"""FlashInfer's own functions with each definition's signature and constants: the engine's
path as an importable candidate (`fib_runtime.adapters.flashinfer.originals.<definition>`).

One module-level function per definition, made on first access (see
`bridge.module_originals`), so that retune in another process imports and times exactly
what the adapter's call sites fall back to, and dispatch calls it directly where it is the
fastest. Each calls FlashInfer's own function (the one the adapter replaced, when it is
installed), never the adapter's replacement:

- `rmsnorm_h{H}(hidden_states, weight, output=None)`: `flashinfer.norm.rmsnorm` at the
  definition's eps;
- `fused_add_rmsnorm_residual_h{H}(hidden_states, residual, weight, output=None,
  residual_out=None)`: `flashinfer.norm.fused_add_rmsnorm`, in place when the outputs alias
  the inputs (the engine's call), on copies otherwise;
- `silu_and_mul_i{I}(gate_up, output=None)`: `flashinfer.activation.silu_and_mul`;
- `gqa_paged_decode_h{Q}_kv{K}_d{D}_ps{P}(q, k_cache, v_cache, kv_indptr, kv_indices,
  [kv_last_page_len,] sm_scale, output=None, lse=None)`: a
  `BatchDecodeWithPagedKVCacheWrapper` run, planned again only when an index tensor is a
  new one or was written since the last plan (its `_version`), as an engine plans once per
  step for all its layers;
- the prefill and MLA definitions: see attention_originals.py;
- `top_k_sampling_from_probs_v{V}(probs, top_k)`, `top_k_top_p_sampling_from_probs_v{V}(probs,
  top_k, top_p)`, `top_p_sampling_from_probs_v{V}(probs, top_p)`: `flashinfer.sampling`'s
  function of that name, its int32 ids widened to the definitions' int64.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
from fib_runtime.adapters import bridge
from fib_runtime.adapters.flashinfer import attention_originals
from fib_runtime.adapters.flashinfer.counters import saved

from fib_runtime import engine_ops

_DECODE = re.compile(r"gqa_paged_decode_h(\d+)_kv(\d+)_d(\d+)_ps(\d+)")
_SAMPLING = re.compile(r"(top_k_sampling_from_probs|top_k_top_p_sampling_from_probs|"
                       r"top_p_sampling_from_probs)_v\d+")
_WORKSPACE_BYTES = 128 << 20


def own(module: str, name: str) -> Callable[..., Any]:
    """FlashInfer's own `flashinfer.<module>.<name>` (the adapter's saved one if installed)."""
    import importlib

    owner = importlib.import_module(f"flashinfer.{module}")
    return saved(owner, name) or getattr(owner, name)


def _rmsnorm(eps: float) -> Callable[..., Any]:
    rmsnorm = own("norm", "rmsnorm")

    def run(hidden_states: torch.Tensor, weight: torch.Tensor,
            output: torch.Tensor | None = None) -> torch.Tensor:
        return rmsnorm(hidden_states, weight, eps, out=output)

    return run


def _fused(eps: float) -> Callable[..., Any]:
    fused = own("norm", "fused_add_rmsnorm")

    def run(hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
            output: torch.Tensor | None = None,
            residual_out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if output is hidden_states and residual_out is residual:  # the engine's own call
            fused(hidden_states, residual, weight, eps)
            return output, residual_out
        x = hidden_states.clone() if output is None else output.copy_(hidden_states)
        r = residual.clone() if residual_out is None else residual_out.copy_(residual)
        fused(x, r, weight, eps)
        return x, r

    return run


def _silu() -> Callable[..., Any]:
    silu = own("activation", "silu_and_mul")

    def run(gate_up: torch.Tensor, output: torch.Tensor | None = None) -> torch.Tensor:
        return silu(gate_up, out=output)

    return run


class _Planned:
    """A decode wrapper per device and the identity of the index tensors it was planned for."""

    def __init__(self) -> None:
        self.wrappers: dict[torch.device, Any] = {}
        self.planned: dict[torch.device, tuple[Any, ...]] = {}

    def wrapper(self, q: torch.Tensor, k_cache: torch.Tensor, kv_indptr: torch.Tensor,
                kv_indices: torch.Tensor, last: torch.Tensor | None, sm_scale: float,
                heads: tuple[int, int, int, int]) -> Any:
        device = q.device
        seen = (kv_indptr.data_ptr(), kv_indptr._version, kv_indices.data_ptr(),
                kv_indices._version, None if last is None else (last.data_ptr(), last._version),
                q.shape[0], float(sm_scale))
        wrapper = self.wrappers.get(device)
        if wrapper is not None and self.planned.get(device) == seen:
            return wrapper
        if wrapper is None:
            import flashinfer.decode

            workspace = torch.zeros(_WORKSPACE_BYTES, dtype=torch.uint8, device=device)
            wrapper = self.wrappers[device] = \
                flashinfer.decode.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD")
        qo, kv, d, page = heads
        if last is None:  # one token a page: the last page holds 1 token (0 when empty)
            last = (kv_indptr[1:] - kv_indptr[:-1]).clamp(max=1).to(torch.int32)
            cls = type(wrapper)
        plan = saved(cls, "plan") or cls.plan  # FlashInfer's own plan, not the adapter's
        plan(wrapper, kv_indptr, kv_indices, last, qo, kv, d, page, q_data_type=q.dtype,
             kv_data_type=k_cache.dtype, sm_scale=float(sm_scale))
        self.planned[device] = seen
        return wrapper


def _decode(heads: tuple[int, int, int, int]) -> Callable[..., Any]:
    import flashinfer.decode

    cls = flashinfer.decode.BatchDecodeWithPagedKVCacheWrapper
    run0 = saved(cls, "run") or cls.run
    planned = _Planned()
    paged = heads[3] != 1

    def run(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
            kv_indptr: torch.Tensor, kv_indices: torch.Tensor, *rest: Any) -> Any:
        last = rest[0] if paged else None
        sm_scale, outputs = (rest[1], rest[2:]) if paged else (rest[0], rest[1:])
        wrapper = planned.wrapper(q, k_cache, kv_indptr, kv_indices, last, sm_scale, heads)
        o, lse = run0(wrapper, q, (k_cache, v_cache), out=outputs[0] if outputs else None,
                      lse=outputs[1] if len(outputs) > 1 else None, return_lse=True)
        return o, lse

    return run


def _sampling(function: str) -> Callable[..., Any]:
    sample = own("sampling", function)

    def run(probs: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return sample(probs, *params).to(torch.int64)

    return run


def _make(name: str) -> Callable[..., Any] | None:
    """The original of a definition the adapter routes (None: not one)."""
    if "_prefill_" in name or name.startswith("mla_"):
        return attention_originals.make(name)
    sampling = _SAMPLING.fullmatch(name)
    if sampling:
        return _sampling(sampling.group(1))
    decode = _DECODE.fullmatch(name)
    if decode:
        return _decode(tuple(int(g) for g in decode.groups()))  # type: ignore[arg-type]
    if name.startswith("silu_and_mul_i"):
        return _silu()
    eps = engine_ops.shipped_eps(name) if name.startswith(("rmsnorm_h", "fused_add_")) \
        else None
    if eps is None:
        return None
    return _rmsnorm(eps) if name.startswith("rmsnorm_h") else _fused(eps)


__getattr__ = bridge.module_originals(__name__, _make)
