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
written into `out` (allocated with `torch.empty_like(q)` when absent, as FlashInfer does) and
a scratch lse kept on the wrapper and sized at plan time (destination-passing): a routed
call allocates nothing else.

Each definition has one call site (`bridge.eager_site`) whose fallback runs FlashInfer's
own `run` on the planned wrapper of the call in flight: when FlashInfer is the fastest
candidate, dispatch calls that directly. The candidate retune times in its place is
`originals.<definition>`, FlashInfer's run on a wrapper it plans only when the index
tensors change, as an engine plans once per step for all its layers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from fib_runtime.adapters import bridge
from fib_runtime.adapters.flashinfer import originals
from fib_runtime.adapters.flashinfer.counters import guard, routed, unchanged

if TYPE_CHECKING:
    from fib_runtime.dispatch.sites import Site

# The order of plan()'s optional arguments when passed positionally (FlashInfer's older API)
LEGACY_PLAN_ARGS = ("pos_encoding_mode", "window_left", "logits_soft_cap", "q_data_type",
                    "kv_data_type", "o_data_type", "data_type", "sm_scale")
PAGE_SIZES = (1, 16)  # page sizes with definitions: SGLang's default 1, vLLM's default 16
_STATE = "_fib_plan"
_LSE = "_fib_lse"  # the wrapper's scratch lse buffer (grown, never shrunk)
_KNOWN = "_fib_plans"  # per wrapper: a plan's arguments -> what they decide (_Covered)
KNOWN_PLANS = 64  # the most argument sets a wrapper remembers (then it starts again)


def definition_name(num_qo_heads: int, num_kv_heads: int, head_dim: int,
                    page_size: int) -> str:
    return f"gqa_paged_decode_h{num_qo_heads}_kv{num_kv_heads}_d{head_dim}_ps{page_size}"


class _Plan:
    """What a routed run needs from the last plan of a wrapper."""

    __slots__ = ("indices", "indptr", "last", "lse", "n_inputs", "reason", "site", "sm_scale",
                 "wrapper")

    def __init__(self, wrapper: Any, covered: _Covered) -> None:
        self.wrapper = wrapper
        self.site, self.reason, self.sm_scale, self.lse, self.n_inputs = covered
        # FlashInfer's plan leaves the device copies on the wrapper (under CUDA graphs, its
        # fixed buffers, the indices one oversized): the routed run reads those.
        self.indptr = getattr(wrapper, "_paged_kv_indptr_buf", None)
        self.indices = getattr(wrapper, "_paged_kv_indices_buf", None)
        self.last = getattr(wrapper, "_paged_kv_last_page_len_buf", None)


# What a plan's arguments decide, the same at every plan made with them: the site, why the
# plan is not covered (or None), sm_scale, the scratch lse and the definition's input count.
_Covered = tuple["Site | None", "str | None", float, "torch.Tensor | None", int]


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


def _scratch_lse(wrapper: Any, batch: int, heads: int, device: Any) -> torch.Tensor:
    """A [batch, heads] float32 view of the wrapper's scratch lse buffer. The buffer only
    grows, and a CUDA-graph wrapper's batch is fixed, so a recorded run's lse stays valid."""
    buffer = wrapper.__dict__.get(_LSE)
    if buffer is None or buffer.shape[0] < batch or buffer.shape[1] != heads:
        buffer = torch.empty((max(batch, 1), heads), dtype=torch.float32, device=device)
        wrapper.__dict__[_LSE] = buffer
    return buffer[:batch]


def wrap(plan0: Callable[..., Any], run0: Callable[..., Any]
         ) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The replacements of the wrapper's plan and run."""
    sites: dict[str, Site] = {}  # definition -> its call site

    def planned_run(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    *rest: Any) -> Any:
        """FlashInfer's run on the wrapper of the routed call in flight (the site's fallback:
        the engine's own path), with the definition's signature."""
        plan: _Plan = guard.active
        outputs = rest[plan.n_inputs - 3:]
        if outputs:
            if outputs[1] is plan.lse:  # the adapter's scratch: nobody reads it, as FlashInfer
                run0(plan.wrapper, q, (k_cache, v_cache), out=outputs[0])  # is called
            else:
                run0(plan.wrapper, q, (k_cache, v_cache), out=outputs[0], lse=outputs[1],
                     return_lse=True)
            return outputs
        return run0(plan.wrapper, q, (k_cache, v_cache), return_lse=True)

    def site_for(name: str) -> Site:
        """The definition's call site (dispatch off or the definition not served: it calls
        FlashInfer's run itself)."""
        site = sites.get(name)
        if site is None:
            bridge.start()
            site = sites.setdefault(name, bridge.eager_site(name, planned_run,
                                                              getattr(originals, name)))
        return site

    def cover(wrapper: Any, batch: int, num_qo_heads: int, num_kv_heads: int, head_dim: int,
              page_size: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Covered:
        """What the plan's arguments decide (see _Covered)."""
        options = {**dict(zip(LEGACY_PLAN_ARGS, args, strict=False)), **kwargs}
        q_dtype = options.get("data_type") or options.get("q_data_type", "float16")
        reason = _plan_reason(wrapper, page_size, options.get("pos_encoding_mode", "NONE"),
                              options.get("window_left", -1), options.get("logits_soft_cap"),
                              q_dtype, options.get("kv_data_type") or q_dtype,
                              options.get("o_data_type"))
        site = lse = None
        if reason is None and getattr(wrapper, "_paged_kv_indptr_buf", None) is None:
            reason = "wrapper_state"  # a FlashInfer whose plan keeps its buffers elsewhere
        if reason is None:
            site = site_for(definition_name(num_qo_heads, num_kv_heads, head_dim, page_size))
            lse = _scratch_lse(wrapper, batch, num_qo_heads, wrapper._paged_kv_indptr_buf.device)
        sm_scale = options.get("sm_scale")
        scale = float(sm_scale) if sm_scale is not None else 1.0 / math.sqrt(head_dim)
        return site, reason, scale, lse, 6 if page_size == 1 else 7

    def plan(self: Any, indptr: torch.Tensor, indices: torch.Tensor,
             last_page_len: torch.Tensor, num_qo_heads: int, num_kv_heads: int, head_dim: int,
             page_size: int, *args: Any, **kwargs: Any) -> None:
        # FlashInfer's plan gets the call exactly as made: options passed positionally go
        # through its deprecation path (a warning per call) only when the caller's do.
        plan0(self, indptr, indices, last_page_len, num_qo_heads, num_kv_heads, head_dim,
              page_size, *args, **kwargs)
        if guard.active:
            return
        # An engine plans every step with the same few argument sets: what they decide is
        # remembered per wrapper (a tensor option, e.g. seq_lens, makes the set new each time).
        batch = indptr.shape[0] - 1
        key = (batch, num_qo_heads, num_kv_heads, head_dim, page_size, args, *kwargs.items())
        known = self.__dict__.get(_KNOWN)
        if known is None:
            known = self.__dict__[_KNOWN] = {}
        try:
            covered = known.get(key)
        except (TypeError, RuntimeError):  # an unhashable option, or tensors compared
            covered = key = None
        if covered is None:
            covered = cover(self, batch, num_qo_heads, num_kv_heads, head_dim, page_size,
                            args, kwargs)
            if key is not None:
                if len(known) >= KNOWN_PLANS:
                    known.clear()
                known[key] = covered
        self.__dict__[_STATE] = _Plan(self, covered)

    def run(self: Any, q: torch.Tensor, paged_kv_cache: Any, *args: Any,
            out: torch.Tensor | None = None, lse: torch.Tensor | None = None,
            return_lse: bool = False, **kwargs: Any) -> Any:
        state: _Plan | None = self.__dict__.get(_STATE)
        if state is not None and not guard.active:
            reason = state.reason
            if reason is None and (args or kwargs or return_lse):
                reason = _run_reason(args, return_lse, kwargs)
            if reason is None and (paged_kv_cache.__class__ is not tuple
                                   or q.dtype != torch.bfloat16
                                   or paged_kv_cache[0].dtype != torch.bfloat16):
                reason = "kv_format"
            if reason is None:
                if not state.site.direct:  # direct: the site would only call FlashInfer's run
                    next(routed["decode.run"])
                    return _routed(state, q, paged_kv_cache, out)
            else:
                unchanged["decode.run", reason] += 1
        return run0(self, q, paged_kv_cache, *args, out=out, lse=lse, return_lse=return_lse,
                    **kwargs)

    return plan, run


def _run_reason(args: tuple[Any, ...], return_lse: bool, kwargs: dict[str, Any]) -> str | None:
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
    return None


def _routed(plan: _Plan, q: torch.Tensor, paged_kv_cache: Any,
            out: torch.Tensor | None) -> torch.Tensor:
    k_cache, v_cache = paged_kv_cache
    if out is None:
        out = torch.empty_like(q)
    guard.active = plan  # the fallback reads the wrapper from it; re-entry reaches FlashInfer
    try:
        if plan.n_inputs == 6:
            plan.site.call(q, k_cache, v_cache, plan.indptr,  # type: ignore[union-attr]
                           plan.indices, plan.sm_scale, out, plan.lse)
        else:
            plan.site.call(q, k_cache, v_cache, plan.indptr,  # type: ignore[union-attr]
                           plan.indices, plan.last, plan.sm_scale, out, plan.lse)
        return out
    finally:
        guard.active = False
