"""Attention routing through transformers' `AttentionInterface`.

Routing a model registers `fib_sdpa` in transformers' `AttentionInterface` (this module's
`attention_forward`) and in its `AttentionMaskInterface` (transformers' own `sdpa_mask`, so
the model builds exactly the masks it builds for "sdpa"), and sets the model config's
`_attn_implementation` to it ("sdpa" again after `remove`). Only models on "sdpa" are
routed, so every call not covered goes to transformers' own
`sdpa_attention_forward` unchanged, counted by reason (`stats()`).

A call is covered when it is what the `gqa_ragged_prefill_causal_h{Q}_kv{K}_d{D}`
definition computes: no mask (transformers passes none for plain causal attention without
padding: a prefill with q_len == kv_len, or a decode step with q_len 1, which sees every
cached key, as the definition's query aligned to the end of its keys does), no dropout,
causal, no sliding window, soft-cap, sinks or position bias, bfloat16, the definition's heads
and head_dim, no autograd. The batch is a ragged batch with uniform offsets; the call's
`scaling` is the definition's `sm_scale`. A prefill into a longer pre-allocated cache with no
mask (a static cache's first step) reads the first q_len keys, as transformers' sdpa does.
Under torch.compile every call is transformers' sdpa (not counted).

Prefill tensors are made contiguous (every solution takes them); a decode step's keys at
batch 1 are a strided view of the cache (no copy per step), which solutions that take any
layout serve and others leave to the original (counted by dispatch as `layout`).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import torch
from fib_runtime.adapters.transformers.forwards import ROUTE, needs_grad
from torch import nn

IMPLEMENTATION = "fib_sdpa"
# keyword arguments of an attention call that no ragged-prefill definition models
_UNMODELED = {"sliding_window": "sliding_window", "softcap": "soft_cap", "s_aux": "sinks",
              "sinks": "sinks", "position_bias": "position_bias"}
# "routed" -> calls handed to the definition's site; any other key: a reason, calls that went
# to transformers' sdpa unchanged
calls: Counter[str] = Counter()
_offsets: dict[tuple[int, int, int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}


def definition_name(heads: int, kv_heads: int, head_dim: int) -> str:
    return f"gqa_ragged_prefill_causal_h{heads}_kv{kv_heads}_d{head_dim}"


def stats() -> dict[str, Any]:
    """Calls routed to fib-runtime, and calls left to transformers' sdpa by reason."""
    return {"routed": calls["routed"],
            "unchanged": {reason: n for reason, n in calls.items() if reason != "routed"}}


def reset() -> None:
    calls.clear()


def _sdpa(*args: Any, **kwargs: Any) -> Any:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(*args, **kwargs)


def reason(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
           attention_mask: Any, dropout: float, is_causal: bool | None,
           kwargs: dict[str, Any]) -> str | None:
    """Why a call is not covered by the module's route, or None when it is."""
    route = module.__dict__.get(ROUTE)
    if route is None:
        return "not_routed"
    if attention_mask is not None:
        return "mask"
    if dropout:
        return "dropout"
    for name, why in _UNMODELED.items():
        if kwargs.get(name) is not None:
            return why
    if not (is_causal if is_causal is not None else getattr(module, "is_causal", True)):
        return "not_causal"
    if query.dtype != route.dtype or key.dtype != route.dtype or value.dtype != route.dtype:
        return "dtype"
    if (query.shape[1], key.shape[1], query.shape[3]) != route.shape:
        return "shape"
    if query.shape[2] > key.shape[2]:
        return "q_longer_than_kv"
    if needs_grad(query, key, value):
        return "grad"
    return None


def attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor,
                      value: torch.Tensor, attention_mask: Any, dropout: float = 0.0,
                      scaling: float | None = None, is_causal: bool | None = None,
                      **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention signature ([batch, heads, len, head_dim] in, [batch, q_len,
    heads, head_dim] out): covered calls through the definition's site, others to sdpa."""
    if torch.compiler.is_compiling():  # first: dynamo never reads the route or the counters
        return _sdpa(module, query, key, value, attention_mask, dropout=dropout,
                     scaling=scaling, is_causal=is_causal, **kwargs)
    why = reason(module, query, key, value, attention_mask, dropout, is_causal, kwargs)
    if why is not None:
        calls[why] += 1
        return _sdpa(module, query, key, value, attention_mask, dropout=dropout,
                     scaling=scaling, is_causal=is_causal, **kwargs)
    batch, heads, n, dim = query.shape
    if n > 1 and key.shape[2] > n:  # no mask: keys past q_len are a static cache's empty slots
        key, value = key[:, :, :n], value[:, :, :n]
    kv_heads, length = key.shape[1], key.shape[2]
    q = query.transpose(1, 2).reshape(batch * n, heads, dim)
    k = key.transpose(1, 2).reshape(batch * length, kv_heads, dim)
    v = value.transpose(1, 2).reshape(batch * length, kv_heads, dim)
    if n > 1:
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    qo_indptr, kv_indptr = _indptr(batch, n, length, query.device)
    scale = scaling if scaling is not None else 1.0 / math.sqrt(dim)
    calls["routed"] += 1
    output = module.__dict__[ROUTE].site(q, k, v, qo_indptr, kv_indptr, scale)[0]
    return output.view(batch, n, heads, dim), None


def _indptr(batch: int, n: int, length: int,
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform int32 offsets of `batch` sequences of n queries and `length` keys, made once
    per step (its layers share them; only the last step's are kept)."""
    key = (batch, n, length, device)
    found = _offsets.get(key)
    if found is None:
        rows = torch.arange(batch + 1, dtype=torch.int32, device=device)
        found = (rows * n, rows * length)
        _offsets.clear()
        _offsets[key] = found
    return found


def register() -> None:
    """Make `fib_sdpa` known to transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(IMPLEMENTATION, attention_forward)
    AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


def bind(module: nn.Module, route: Any) -> None:
    """Route an attention module; its config's attention becomes `fib_sdpa`."""
    register()
    module.__dict__[ROUTE] = route
    module.config._attn_implementation = IMPLEMENTATION


def unbind(module: nn.Module) -> None:
    """Forget a routed attention module (its route is gone): its config's attention is sdpa
    again (the only one routed)."""
    config = getattr(module, "config", None)
    if config is not None and config._attn_implementation == IMPLEMENTATION:
        config._attn_implementation = "sdpa"
