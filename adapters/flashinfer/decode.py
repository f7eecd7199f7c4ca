"""BatchDecodeWithPagedKVCacheWrapper.plan / run with covered decode calls routed to
fib-runtime's gqa_paged_decode_h{qo}_kv{kv}_d{d}_ps{page} definitions.

`plan()` runs FlashInfer's own plan (so the wrapper stays usable unchanged) and keeps the
plan-time state on the wrapper: the indptr / indices / last_page_len tensors (under CUDA
graphs the wrapper's fixed buffers, the indices one oversized: the definition's
num_kv_indices axis is then the buffer's length, and solutions read only what indptr
spans), heads, head_dim, page size, sm_scale, and whether anything the definitions do not
model was asked for (HND layout, RoPE, a window, a soft-cap, other dtypes). `run(q,
(k_cache, v_cache), out=...)` routes when the plan and the call are covered: no return_lse,
sinks, fp8 scales, run-time window or multi-token queries. The definition's outputs are
written into `out` (allocated when absent) and a scratch lse (destination-passing).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from fib_runtime.adapters import routing
from fib_runtime.adapters.flashinfer.counters import guard, routed, unchanged

PAGE_SIZES = (1, 16)  # page sizes with definitions: SGLang's default 1, vLLM's default 16
_STATE = "_fib_plan"


def definition_name(num_qo_heads: int, num_kv_heads: int, head_dim: int,
                    page_size: int) -> str:
    return f"gqa_paged_decode_h{num_qo_heads}_kv{num_kv_heads}_d{head_dim}_ps{page_size}"


def _plan_reason(wrapper: Any, page_size: int, pos_encoding_mode: str, window_left: int,
                 logits_soft_cap: float | None, q_dtype: Any, kv_dtype: Any,
                 o_dtype: Any) -> str | None:
    """Why a plan is not covered, or None when it is."""
    if getattr(wrapper, "_kv_layout", "NHD") != "NHD":
        return "layout"
    if page_size not in PAGE_SIZES:
        return "page_size"
    if pos_encoding_mode != "NONE":
        return "pos_encoding"
    if window_left is not None and window_left >= 0:
        return "window"
    if logits_soft_cap:
        return "soft_cap"
    if any(d not in (None, torch.bfloat16, "bfloat16") for d in (kv_dtype, o_dtype)) or \
            q_dtype not in (torch.bfloat16, "bfloat16"):
        return "dtype"
    return None


def wrap(plan0: Callable[..., Any], run0: Callable[..., Any]
         ) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The replacements of the wrapper's plan and run."""
    fallbacks: dict[int, Callable[..., Any]] = {}
    eager: dict[str, Callable[..., Any] | None] = {}  # definition -> call site, or None

    def fallback_for(page_size: int) -> Callable[..., Any]:
        """FlashInfer itself with the definition's signature (needs the wrapper, kept in
        the plan state that the routed call passes along through a closure)."""
        fn = fallbacks.get(page_size)
        if fn is None:
            def flashinfer_decode(q: torch.Tensor, k_cache: torch.Tensor,
                                  v_cache: torch.Tensor, *rest: Any) -> Any:
                state = _current.state
                n_in = 6 if page_size == 1 else 7
                outputs = rest[n_in - 3:]
                out = outputs[0] if outputs else None
                o, lse = run0(state["wrapper"], q, (k_cache, v_cache), out=out,
                              lse=outputs[1] if len(outputs) > 1 else None, return_lse=True)
                return outputs if outputs else (o, lse)
            fn = fallbacks[page_size] = flashinfer_decode
        return fn

    def plan(self: Any, indptr: torch.Tensor, indices: torch.Tensor,
             last_page_len: torch.Tensor, num_qo_heads: int, num_kv_heads: int, head_dim: int,
             page_size: int, pos_encoding_mode: str = "NONE", window_left: int = -1,
             logits_soft_cap: float | None = None, q_data_type: Any = "float16",
             kv_data_type: Any = None, o_data_type: Any = None, data_type: Any = None,
             sm_scale: float | None = None, **kwargs: Any) -> None:
        plan0(self, indptr, indices, last_page_len, num_qo_heads, num_kv_heads, head_dim,
              page_size, pos_encoding_mode, window_left, logits_soft_cap, q_data_type,
              kv_data_type, o_data_type, data_type, sm_scale, **kwargs)
        if guard.active:
            return
        q_dtype = data_type if data_type is not None else q_data_type
        reason = _plan_reason(self, page_size, pos_encoding_mode, window_left,
                              logits_soft_cap, q_dtype, kv_data_type or q_dtype, o_data_type)
        fn = None
        if reason is None and getattr(self, "_paged_kv_indptr_buf", None) is None:
            reason = "wrapper_state"  # a FlashInfer whose plan keeps its buffers elsewhere
        if reason is None:
            name = definition_name(num_qo_heads, num_kv_heads, head_dim, page_size)
            if name not in eager:  # first plan of this definition: is it served here? (kept)
                routing.start()
                eager[name] = routing.eager_wrapper(name, fallback_for(page_size)) \
                    if routing.served(name) else None
            fn = eager[name]
            if fn is None:
                reason = "not_served"
        # FlashInfer's plan leaves the device copies on the wrapper (under CUDA graphs, its
        # fixed buffers, the indices one oversized): the routed run reads those.
        self.__dict__[_STATE] = {
            "wrapper": self, "fn": fn, "reason": reason, "page_size": page_size,
            "indptr": getattr(self, "_paged_kv_indptr_buf", None),
            "indices": getattr(self, "_paged_kv_indices_buf", None),
            "last_page_len": getattr(self, "_paged_kv_last_page_len_buf", None),
            "sm_scale": float(sm_scale) if sm_scale is not None else 1.0 / math.sqrt(head_dim),
        }

    def run(self: Any, q: torch.Tensor, paged_kv_cache: Any, *args: Any,
            out: torch.Tensor | None = None, lse: torch.Tensor | None = None,
            return_lse: bool = False, **kwargs: Any) -> Any:
        state = self.__dict__.get(_STATE)
        if state is not None and not guard.active:
            reason = state["reason"] or _run_reason(q, paged_kv_cache, args, return_lse,
                                                    kwargs)
            if reason is not None:
                unchanged["decode.run", reason] += 1
            else:
                routed["decode.run"] += 1
                return _routed(state, q, paged_kv_cache, out)
        return run0(self, q, paged_kv_cache, *args, out=out, lse=lse, return_lse=return_lse,
                    **kwargs)

    return plan, run


def _run_reason(q: torch.Tensor, paged_kv_cache: Any, args: tuple[Any, ...],
                return_lse: bool, kwargs: dict[str, Any]) -> str | None:
    if return_lse:
        return "return_lse"
    if args or any(kwargs.get(k) is not None for k in ("q_scale", "k_scale", "v_scale")):
        return "fp8_scales"
    if kwargs.get("sinks") is not None:
        return "sinks"
    window = kwargs.get("window_left")
    if window is not None and window >= 0:
        return "window"
    if kwargs.get("q_len_per_req", 1) not in (None, 1) or \
            kwargs.get("skip_softmax_threshold_scale_factor") is not None:
        return "multi_token"
    if not isinstance(paged_kv_cache, tuple | list) or q.dtype != torch.bfloat16 or \
            paged_kv_cache[0].dtype != torch.bfloat16:
        return "kv_format"
    return None


class _Current:
    """The plan state of the routed call in flight (the fallback needs its wrapper)."""

    state: ClassVar[dict[str, Any]] = {}


_current = _Current()


def _routed(state: dict[str, Any], q: torch.Tensor, paged_kv_cache: Any,
            out: torch.Tensor | None) -> torch.Tensor:
    k_cache, v_cache = paged_kv_cache
    head = (q, k_cache, v_cache, state["indptr"], state["indices"])
    args = (*head, state["sm_scale"]) if state["page_size"] == 1 else \
        (*head, state["last_page_len"], state["sm_scale"])
    _current.state = state
    guard.active = True
    try:
        if out is None:  # value-returning: the solution's own output, no copy
            return state["fn"](*args)[0]
        # out=: destination-passing into the caller's buffer (a scratch lse beside it)
        lse = torch.empty(q.shape[:2], dtype=torch.float32, device=q.device)
        state["fn"](*args, out, lse)
        return out
    finally:
        guard.active = False
