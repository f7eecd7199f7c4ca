"""FlashInfer's own prefill and MLA with each definition's signature (see originals.py):

- `gqa_ragged_prefill_causal_h{Q}_kv{K}_d{D}(q, k, v, qo_indptr, kv_indptr, sm_scale,
  output=None, lse=None)`: a `BatchPrefillWithRaggedKVCacheWrapper` run;
- `gqa_paged_prefill_causal_h{Q}_kv{K}_d{D}_ps{P}(q, k_cache, v_cache, qo_indptr, kv_indptr,
  kv_indices, [kv_last_page_len,] sm_scale, output=None, lse=None)`: a
  `BatchPrefillWithPagedKVCacheWrapper` run;
- `mla_paged_decode_h{H}_ckv{C}_kpe{P}_ps1(q_nope, q_pe, ckv_cache, kpe_cache, kv_indptr,
  kv_indices, sm_scale, output=None, lse=None)` and `mla_paged_prefill_causal_...` (with
  qo_indptr before kv_indptr): a `BatchMLAPagedAttentionWrapper` run (decode: one query a
  sequence, not causal);

each planned again only when an index tensor is another one or was written since its plan
(its `_version`), as an engine plans once per step for all its layers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
from fib_runtime.adapters.flashinfer.counters import saved

RAGGED = re.compile(r"gqa_ragged_prefill_causal_h(\d+)_kv(\d+)_d(\d+)")
PAGED = re.compile(r"gqa_paged_prefill_causal_h(\d+)_kv(\d+)_d(\d+)_ps(\d+)")
MLA = re.compile(r"mla_paged_(decode|prefill_causal)_h(\d+)_ckv(\d+)_kpe(\d+)_ps1")
_WORKSPACE_BYTES = 256 << 20


def make(name: str) -> Callable[..., Any] | None:
    """The original of a prefill or MLA definition (None: not one)."""
    mla = MLA.fullmatch(name)
    if mla:
        return _mla(mla.group(1) == "decode", *(int(g) for g in mla.groups()[1:]))
    ragged, paged = RAGGED.fullmatch(name), PAGED.fullmatch(name)
    if ragged is None and paged is None:
        return None
    import flashinfer.prefill

    cls = (flashinfer.prefill.BatchPrefillWithPagedKVCacheWrapper if paged
           else flashinfer.prefill.BatchPrefillWithRaggedKVCacheWrapper)
    plan0, run0 = saved(cls, "plan") or cls.plan, saved(cls, "run") or cls.run
    qo, kv, dim = (int(g) for g in (paged or ragged).groups()[:3])  # type: ignore[union-attr]
    page_size = int(paged.group(4)) if paged else 0
    n_index = 2 if not paged else (3 if page_size == 1 else 4)
    wrappers: dict[torch.device, Any] = {}
    planned: dict[torch.device, tuple[Any, ...]] = {}

    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *rest: Any) -> Any:
        indexes, sm_scale, outputs = rest[:n_index], rest[n_index], rest[n_index + 1:]
        wrapper = wrappers.get(q.device)
        if wrapper is None:
            workspace = torch.zeros(_WORKSPACE_BYTES, dtype=torch.uint8, device=q.device)
            wrapper = wrappers[q.device] = cls(workspace, "NHD")
        seen = (*((t, t._version) for t in indexes), float(sm_scale))
        if planned.get(q.device) != seen:
            common = {"causal": True, "sm_scale": float(sm_scale), "q_data_type": q.dtype,
                      "kv_data_type": k.dtype}
            if not paged:
                plan0(wrapper, *indexes, qo, kv, dim, **common)
            else:
                last = indexes[3] if page_size > 1 else \
                    (indexes[1][1:] - indexes[1][:-1]).clamp(max=1).to(torch.int32)
                plan0(wrapper, *indexes[:3], last, qo, kv, dim, page_size, **common)
            planned[q.device] = seen  # holds the tensors: their memory is not reused meanwhile
        kv_args = ((k, v),) if paged else (k, v)
        return run0(wrapper, q, *kv_args, out=outputs[0] if outputs else None,
                    lse=outputs[1] if len(outputs) > 1 else None, return_lse=True)

    return run


def _mla(decode: bool, heads: int, d_ckv: int, d_kpe: int) -> Callable[..., Any]:
    import flashinfer.mla

    cls = flashinfer.mla.BatchMLAPagedAttentionWrapper
    plan0, run0 = saved(cls, "plan") or cls.plan, saved(cls, "run") or cls.run
    wrappers: dict[torch.device, Any] = {}
    planned: dict[torch.device, tuple[Any, ...]] = {}
    n_index = 2 if decode else 3

    def run(q_nope: torch.Tensor, q_pe: torch.Tensor, ckv: torch.Tensor, kpe: torch.Tensor,
            *rest: Any) -> Any:
        indexes, sm_scale, outputs = rest[:n_index], rest[n_index], rest[n_index + 1:]
        wrapper = wrappers.get(q_nope.device)
        if wrapper is None:
            workspace = torch.zeros(_WORKSPACE_BYTES, dtype=torch.uint8, device=q_nope.device)
            wrapper = wrappers[q_nope.device] = cls(workspace)
        seen = (*((t, t._version) for t in indexes), float(sm_scale))
        if planned.get(q_nope.device) != seen:
            kv_indptr, kv_indices = indexes[-2:]
            qo_indptr = torch.arange(kv_indptr.shape[0], dtype=torch.int32,
                                     device=kv_indptr.device) if decode else indexes[0]
            lengths = (kv_indptr[1:] - kv_indptr[:-1]).to(torch.int32)
            plan0(wrapper, qo_indptr, kv_indptr, kv_indices, lengths, heads, d_ckv, d_kpe, 1,
                  not decode, float(sm_scale), q_nope.dtype, ckv.dtype)
            planned[q_nope.device] = seen
        return run0(wrapper, q_nope, q_pe, ckv, kpe, out=outputs[0] if outputs else None,
                    lse=outputs[1] if len(outputs) > 1 else None, return_lse=True)

    return run
