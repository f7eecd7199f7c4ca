"""BatchMLAPagedAttentionWrapper.plan / run with covered calls routed to fib-runtime's
mla_paged_decode_h{H}_ckv{C}_kpe{P}_ps1 and mla_paged_prefill_causal_h{H}_ckv{C}_kpe{P}_ps1
definitions.

`plan()` runs FlashInfer's own plan and keeps on the wrapper what a routed run needs: the
device copies of the index tensors FlashInfer's plan left on it (`_qo_indptr_buf`,
`_kv_indptr_buf`, `_kv_indices_buf`), sm_scale, which definition the plan is (decode when
every sequence has one query, causal or not; causal prefill otherwise) and, when it is none,
why: a page size other than 1, not causal with several queries, kv_len_arr other than the
page counts, another dtype, the profiler, options of newer FlashInfers (metadata, scales).
Reading the plan's offsets costs a host copy, which FlashInfer's own plan makes anyway.
`run()` routes a covered call with no profiler buffer, run-time kv_len / page_table, natural-
log lse or scales; outputs as in prefill.py (`out` in place, lse into the caller's buffer, a
new one for `return_lse`, else the wrapper's scratch).
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
from fib_runtime.adapters.flashinfer.prefill import lse_buffer

FUNCTION = "mla.run"
_STATE = "_fib_mla_plan"
_PLAN_OPTIONS = {"use_profiler": False, "metadata": None, "cum_seq_lens_q": None,
                 "block_tables": None, "seq_lens": None, "max_q_len": None,
                 "query_layout": None, "kv_cache_layout": None, "lse_mode": "none",
                 "output_dtype": None, "output_scale": "none", "scale_mode": "default",
                 "skip_softmax": False, "enable_pdl": None, "use_sinks": False}
_RUN_OPTIONS = {"profiler_buffer": None, "kv_len": None, "page_table": None,
                "return_lse_base_on_e": False, "o_scale": None, "query": None,
                "kv_cache": None, "ckv_scale": None, "ckv_scale_arr": None, "kpe_scale": None,
                "sinks": None, "skip_softmax_threshold_scale_factor": None,
                "bmm1_scale": None, "bmm2_scale": None}


def definition_name(decode: bool, heads: int, d_ckv: int, d_kpe: int) -> str:
    stage = "decode" if decode else "prefill_causal"
    return f"mla_paged_{stage}_h{heads}_ckv{d_ckv}_kpe{d_kpe}_ps1"


class _Plan:
    __slots__ = ("decode", "fn", "indexes", "reason", "sm_scale", "wrapper")

    def __init__(self, wrapper: Any, decode: bool, fn: Callable[..., Any] | None,
                 reason: str | None, sm_scale: float) -> None:
        self.wrapper, self.decode, self.fn, self.reason, self.sm_scale = \
            wrapper, decode, fn, reason, sm_scale
        kv = (getattr(wrapper, "_kv_indptr_buf", None), getattr(wrapper, "_kv_indices_buf", None))
        self.indexes = kv if decode else (getattr(wrapper, "_qo_indptr_buf", None), *kv)


def plan_reason(wrapper: Any, plan: dict[str, Any]) -> tuple[bool, str | None]:
    """(decode, why the plan is not covered or None)."""
    qo = plan["qo_indptr"].to("cpu")
    kv = plan["kv_indptr"].to("cpu")
    decode = bool(((qo[1:] - qo[:-1]) == 1).all())
    if getattr(wrapper, "_backend", "auto") == "cutlass":
        return decode, "backend"
    if plan.get("page_size") != 1:
        return decode, "page_size"
    if not decode and not plan.get("causal"):
        return decode, "not_causal"
    for name, unused in _PLAN_OPTIONS.items():
        if _used(plan.get(name, unused), unused):
            return decode, name
    if any(plan.get(k) not in (torch.bfloat16, "bfloat16")
           for k in ("q_data_type", "kv_data_type")):
        return decode, "dtype"
    if not torch.equal(plan["kv_len_arr"].to("cpu").long(), (kv[1:] - kv[:-1]).long()):
        return decode, "kv_len"
    return decode, None


def run_reason(kwargs: dict[str, Any]) -> str | None:
    for name, value in kwargs.items():
        if name not in _RUN_OPTIONS:
            return "unknown_option"
        if _used(value, _RUN_OPTIONS[name]):
            return name
    return None


def _used(value: Any, unused: Any) -> bool:
    """Whether an option is set to something other than its "not used" value."""
    return value is not unused and (unused is None or value != unused)


def wrap(plan0: Callable[..., Any], run0: Callable[..., Any]
         ) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The replacements of BatchMLAPagedAttentionWrapper.plan and run."""
    signature = inspect.signature(plan0)
    sites: dict[str, Callable[..., Any]] = {}

    def planned_run(q_nope: torch.Tensor, q_pe: torch.Tensor, ckv: torch.Tensor,
                    kpe: torch.Tensor, *rest: Any) -> Any:
        """FlashInfer's run on the wrapper of the routed call in flight (the site's fallback)."""
        plan: _Plan = guard.active
        outputs = rest[len(plan.indexes) + 1:]
        if outputs:
            run0(plan.wrapper, q_nope, q_pe, ckv, kpe, out=outputs[0], lse=outputs[1],
                 return_lse=True)
            return outputs
        return run0(plan.wrapper, q_nope, q_pe, ckv, kpe, return_lse=True)

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
        decode, reason = plan_reason(self, given)
        if reason is None and getattr(self, "_kv_indices_buf", None) is None:
            reason = "wrapper_state"
        fn = None
        if reason is None:
            fn = site_for(definition_name(decode, given["num_heads"], given["head_dim_ckv"],
                                          given["head_dim_kpe"]))
        scale = given.get("sm_scale")
        scale = float(scale) if scale is not None else \
            1.0 / math.sqrt(given["head_dim_ckv"] + given["head_dim_kpe"])
        self.__dict__[_STATE] = _Plan(self, decode, fn, reason, scale)

    def run(self: Any, q_nope: Any = None, q_pe: Any = None, ckv_cache: Any = None,
            kpe_cache: Any = None, out: torch.Tensor | None = None,
            lse: torch.Tensor | None = None, return_lse: bool = False, **kwargs: Any) -> Any:
        state: _Plan | None = self.__dict__.get(_STATE)
        if state is not None and not guard.active:
            reason = state.reason
            if reason is None and kwargs:
                reason = run_reason(kwargs)
            if reason is None and not (
                    all(t.__class__ is torch.Tensor and t.dtype == torch.bfloat16
                        for t in (q_nope, q_pe, ckv_cache, kpe_cache))
                    and ckv_cache.dim() == 3):
                reason = "kv_format"
            if reason is None:
                next(routed[FUNCTION])
                return _routed(state, q_nope, q_pe, ckv_cache, kpe_cache, out, lse, return_lse)
            unchanged[FUNCTION, reason] += 1
        return run0(self, q_nope, q_pe, ckv_cache, kpe_cache, out=out, lse=lse,
                    return_lse=return_lse, **kwargs)

    return plan, run


def _routed(plan: _Plan, q_nope: torch.Tensor, q_pe: torch.Tensor, ckv: torch.Tensor,
            kpe: torch.Tensor, out: torch.Tensor | None, lse: torch.Tensor | None,
            return_lse: bool) -> Any:
    if out is None:
        out = torch.empty_like(q_nope)
    if lse is None:
        rows, heads = q_nope.shape[0], q_nope.shape[1]
        lse = torch.empty((rows, heads), dtype=torch.float32, device=q_nope.device) \
            if return_lse else lse_buffer(plan.wrapper, rows, heads, q_nope.device)
    guard.active = plan
    try:
        plan.fn(q_nope, q_pe, ckv, kpe, *plan.indexes,  # type: ignore[misc]
                plan.sm_scale, out, lse)
    finally:
        guard.active = False
    return (out, lse) if return_lse else out
