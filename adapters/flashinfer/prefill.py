"""BatchPrefillWithPagedKVCacheWrapper and BatchPrefillWithRaggedKVCacheWrapper .plan / .run
with covered prefill calls routed to fib-runtime's
gqa_paged_prefill_causal_h{qo}_kv{kv}_d{d}_ps{page} and gqa_ragged_prefill_causal_h{qo}_kv{kv}_d{d}
definitions.

`plan()` runs FlashInfer's own plan (the wrapper stays usable unchanged) and keeps on the
wrapper what a routed run needs: the device copies of the index tensors FlashInfer's plan left
on it (`_qo_indptr_buf`, `_paged_kv_indptr_buf` / `_kv_indptr_buf`, ...; under CUDA graphs its
fixed buffers), sm_scale, and why the plan is not covered when it is not: HND layout, a page
size without definitions, not causal, a custom mask, RoPE, a window, a soft-cap, fp16 QK
reduction, another head_dim for V, multi-item scoring, other dtypes. `run()` routes when the
plan and the call are covered (no fp8 scales, sinks, run-time window, other lse base or
layout); the output is written into `out` (allocated with `torch.empty_like(q)` when absent,
as FlashInfer does) and the lse into the caller's `lse`, or a new one when `return_lse` asks
for it without a buffer, or else a scratch buffer kept on the wrapper (grown, never shrunk).

Each definition has one call site whose fallback is FlashInfer's own run on the planned
wrapper of the call in flight; retune's candidate in its place is `originals.<definition>`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from fib_runtime.adapters import bridge
from fib_runtime.adapters.flashinfer import originals
from fib_runtime.adapters.flashinfer.counters import guard, routed, unchanged

PAGE_SIZES = (1, 16)
_STATE = "_fib_prefill_plan"
_LSE = "_fib_prefill_lse"
# plan() arguments no definition models, and the value that means "not used"
_UNUSED = {"custom_mask": None, "packed_custom_mask": None, "prefix_len_ptr": None,
           "token_pos_in_items_ptr": None, "max_item_len_ptr": None, "use_fp16_qk_reduction":
           False, "block_tables": None}
_RUN_UNUSED = {"q_scale": None, "k_scale": None, "v_scale": None, "o_scale": None,
               "sinks": None, "kv_cache_sf": None, "lse_base": "log2", "lse_layout": "NH",
               "skip_softmax_threshold_scale_factor": None, "use_fp16_softmax": None,
               "uses_spcompress": None}


def definition_name(paged: bool, num_qo_heads: int, num_kv_heads: int, head_dim: int,
                    page_size: int = 1) -> str:
    if paged:
        return (f"gqa_paged_prefill_causal_h{num_qo_heads}_kv{num_kv_heads}_d{head_dim}"
                f"_ps{page_size}")
    return f"gqa_ragged_prefill_causal_h{num_qo_heads}_kv{num_kv_heads}_d{head_dim}"


class _Plan:
    """What a routed run needs from the last plan of a wrapper."""

    __slots__ = ("fn", "indices", "kv_indptr", "last", "qo_indptr", "reason", "sm_scale",
                 "wrapper")

    def __init__(self, wrapper: Any, paged: bool, page_size: int, fn: Callable[..., Any] | None,
                 reason: str | None, sm_scale: float) -> None:
        self.wrapper, self.fn, self.reason, self.sm_scale = wrapper, fn, reason, sm_scale
        self.qo_indptr = getattr(wrapper, "_qo_indptr_buf", None)
        self.kv_indptr = getattr(wrapper, "_paged_kv_indptr_buf" if paged else "_kv_indptr_buf",
                                 None)
        self.indices = getattr(wrapper, "_paged_kv_indices_buf", None) if paged else None
        self.last = getattr(wrapper, "_paged_kv_last_page_len_buf", None) \
            if paged and page_size > 1 else None

    def indexes(self) -> tuple[Any, ...]:
        """The definition's index inputs, in its order."""
        if self.indices is None:
            return self.qo_indptr, self.kv_indptr
        if self.last is None:
            return self.qo_indptr, self.kv_indptr, self.indices
        return self.qo_indptr, self.kv_indptr, self.indices, self.last


def plan_reason(wrapper: Any, plan: dict[str, Any], paged: bool) -> str | None:
    """Why a plan (its arguments by name) is not covered, or None when it is."""
    if getattr(wrapper, "_kv_layout", "NHD") != "NHD":
        return "layout"
    if paged and plan["page_size"] not in PAGE_SIZES:
        return "page_size"
    if not plan.get("causal"):
        return "not_causal"
    for name, unused in _UNUSED.items():
        value = plan.get(name, unused)
        if value is not unused and (unused is None or value != unused):
            return name
    if plan.get("pos_encoding_mode", "NONE") != "NONE":
        return "pos_encoding"
    window = plan.get("window_left")
    if window is not None and window >= 0:
        return "window"
    if plan.get("logits_soft_cap"):
        return "soft_cap"
    if plan.get("head_dim_vo") not in (None, plan["head_dim_qk"]):
        return "head_dim_vo"
    q_dtype = plan.get("q_data_type")
    if q_dtype not in (torch.bfloat16, "bfloat16") or any(
            plan.get(k) not in (None, torch.bfloat16, "bfloat16")
            for k in ("kv_data_type", "o_data_type")):
        return "dtype"
    return None


def run_reason(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """Why a run's options are not covered, or None when they are."""
    if args:
        return "positional_options"
    for name, value in kwargs.items():
        if name == "window_left":
            if value is not None and value >= 0:
                return "window"
        elif name == "enable_pdl":
            continue
        elif name not in _RUN_UNUSED:
            return "unknown_option"
        elif value != _RUN_UNUSED[name]:
            return "fp8_scales" if name.endswith("_scale") else name
    return None


def lse_buffer(wrapper: Any, rows: int, heads: int, device: Any) -> torch.Tensor:
    """A [rows, heads] float32 view of the wrapper's scratch lse (grown, never shrunk)."""
    buffer = wrapper.__dict__.get(_LSE)
    if buffer is None or buffer.shape[0] < rows or buffer.shape[1] != heads:
        buffer = torch.empty((max(rows, 1), heads), dtype=torch.float32, device=device)
        wrapper.__dict__[_LSE] = buffer
    return buffer[:rows]


def wrap(paged: bool, plan0: Callable[..., Any], run0: Callable[..., Any]
         ) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The replacements of a prefill wrapper's plan and run (paged or ragged)."""
    signature = inspect.signature(plan0)
    function = "prefill.paged.run" if paged else "prefill.ragged.run"
    sites: dict[str, Callable[..., Any]] = {}

    def planned_run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *rest: Any) -> Any:
        """FlashInfer's run on the wrapper of the routed call in flight (the site's fallback),
        with the definition's signature."""
        plan: _Plan = guard.active
        outputs = rest[len(plan.indexes()) + 1:]
        kv = ((k, v),) if paged else (k, v)
        if outputs:
            run0(plan.wrapper, q, *kv, out=outputs[0], lse=outputs[1], return_lse=True)
            return outputs
        return run0(plan.wrapper, q, *kv, return_lse=True)

    def site_for(name: str) -> Callable[..., Any]:
        site = sites.get(name)
        if site is None:
            bridge.start()
            site = sites.setdefault(name, bridge.eager_site(name, planned_run,
                                                              getattr(originals, name)).call)
        return site

    def plan(self: Any, *args: Any, **kwargs: Any) -> None:
        plan0(self, *args, **kwargs)
        if guard.active:
            return
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        given = {**bound.arguments, **bound.arguments.get("kwargs", {})}
        reason = plan_reason(self, given, paged)
        page_size = given.get("page_size", 1) if paged else 1
        fn = None
        if reason is None and getattr(self, "_qo_indptr_buf", None) is None:
            reason = "wrapper_state"  # a FlashInfer whose plan keeps its buffers elsewhere
        if reason is None:
            fn = site_for(definition_name(paged, given["num_qo_heads"], given["num_kv_heads"],
                                          given["head_dim_qk"], page_size))
        scale = given.get("sm_scale")
        scale = float(scale) if scale is not None else 1.0 / math.sqrt(given["head_dim_qk"])
        self.__dict__[_STATE] = _Plan(self, paged, page_size, fn, reason, scale)

    def run(self: Any, q: torch.Tensor, *args: Any, out: torch.Tensor | None = None,
            lse: torch.Tensor | None = None, return_lse: bool = False, **kwargs: Any) -> Any:
        state: _Plan | None = self.__dict__.get(_STATE)
        if state is not None and not guard.active:
            kv, options = (args[:1], args[1:]) if paged else (args[:2], args[2:])
            reason = state.reason
            if reason is None and (options or kwargs):
                reason = run_reason(options, kwargs)
            if reason is None:
                pair = kv[0] if paged and kv else kv
                if pair.__class__ is not tuple or len(pair) != 2 or \
                        q.dtype != torch.bfloat16 or pair[0].dtype != torch.bfloat16:
                    reason = "kv_format"
            if reason is None:
                next(routed[function])
                return _routed(state, q, pair[0], pair[1], out, lse, return_lse)
            unchanged[function, reason] += 1
        return run0(self, q, *args, out=out, lse=lse, return_lse=return_lse, **kwargs)

    return plan, run


def _routed(plan: _Plan, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            out: torch.Tensor | None, lse: torch.Tensor | None, return_lse: bool) -> Any:
    if out is None:
        out = torch.empty_like(q)
    if lse is None:
        lse = torch.empty((q.shape[0], q.shape[1]), dtype=torch.float32, device=q.device) \
            if return_lse else lse_buffer(plan.wrapper, q.shape[0], q.shape[1], q.device)
    guard.active = plan  # the fallback reads the wrapper from it; re-entry reaches FlashInfer
    try:
        plan.fn(q, k, v, *plan.indexes(), plan.sm_scale, out, lse)  # type: ignore[misc]
    finally:
        guard.active = False
    return (out, lse) if return_lse else out
