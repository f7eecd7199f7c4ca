"""Causal GQA prefill attention through FlashInfer's batch prefill wrappers (ragged and paged).
Serves the gqa_ragged prefill definitions too."""

import math

import torch

FIB_SOLUTIONS = [
    {
        "variant": "flashinfer_prefill",
        "entry_points": {
            "gqa_ragged_prefill_causal_h32_kv*_d128": "run_ragged",
            "gqa_paged_prefill_causal_h32_kv*_d128_ps1": "run_paged_ps1",
            "gqa_paged_prefill_causal_h32_kv*_d128_ps16": "run_paged",
        },
        "language": "python",
        "destination_passing_style": False,
        "target_hardware": ["nvidia"],
        "dependencies": ["flashinfer", "torch"],
        "description": (
            "flashinfer.prefill.BatchPrefillWithRaggedKVCacheWrapper / "
            "BatchPrefillWithPagedKVCacheWrapper (NHD, causal, backend 'auto': FA3 on Hopper, "
            "FA2 elsewhere). plan() runs once per workload, NOT in every call: it is run again "
            "only when an index tensor is a new one or was written since (its data pointer or "
            "version changed), as an engine plans once per step for all its layers; so the "
            "measured latency is run() alone. FlashInfer's lse is already base 2. Where a "
            "sequence has more queries than keys, its first queries see no key: the plan "
            "marks them and each run sets their rows to the definition's zero / -inf (two "
            "small kernels, only for such workloads). The wrappers and their workspaces are "
            "cached per device."
        ),
    },
]

_WORKSPACE_BYTES = 256 * 1024 * 1024
_WORKSPACES: dict[torch.device, torch.Tensor] = {}
_WRAPPERS: dict[tuple[str, torch.device], object] = {}
_PLANNED: dict[tuple[str, torch.device], "_Plan"] = {}


def _wrapper(kind: str, device: torch.device):
    """The device's ragged or paged prefill wrapper (one shared workspace per device)."""
    import flashinfer.prefill

    wrapper = _WRAPPERS.get((kind, device))
    if wrapper is None:
        workspace = _WORKSPACES.get(device)
        if workspace is None:
            workspace = _WORKSPACES[device] = torch.zeros(_WORKSPACE_BYTES, dtype=torch.uint8,
                                                          device=device)
        cls = (flashinfer.prefill.BatchPrefillWithRaggedKVCacheWrapper if kind == "ragged"
               else flashinfer.prefill.BatchPrefillWithPagedKVCacheWrapper)
        wrapper = _WRAPPERS[kind, device] = cls(workspace, "NHD")
    return wrapper


class _Plan:
    """The index tensors a wrapper was planned for (kept alive, so that their memory is not
    handed to another workload's), their versions (a write in place bumps it), the other
    planned values, and the rows that see no key."""

    def __init__(self, tensors: tuple, extra: tuple, blind: torch.Tensor | None) -> None:
        self.tensors, self.extra, self.blind = tensors, extra, blind
        self.versions = [None if t is None else t._version for t in tensors]

    def matches(self, tensors: tuple, extra: tuple) -> bool:
        same = all(a is b for a, b in zip(tensors, self.tensors, strict=True))
        return same and extra == self.extra and \
            self.versions == [None if t is None else t._version for t in tensors]


def _blind_rows(qo_indptr: torch.Tensor, kv_lengths: torch.Tensor,
                total_q: int) -> torch.Tensor | None:
    """The query rows that see no key (sequence b's first q_len - kv_len queries), or None
    when every row sees one. Made at plan time, once per workload."""
    q_lengths = qo_indptr[1:] - qo_indptr[:-1]
    blind = (q_lengths - kv_lengths).clamp(min=0)
    if not bool(blind.any()):
        return None
    seq = torch.repeat_interleave(torch.arange(q_lengths.shape[0], device=qo_indptr.device),
                                  q_lengths.long(), output_size=total_q)
    local = torch.arange(total_q, device=qo_indptr.device) - qo_indptr[seq]
    return local < blind[seq]


def _finish(result: tuple[torch.Tensor, torch.Tensor],
            blind: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    output, lse = result
    if blind is not None:
        output.masked_fill_(blind[:, None, None], 0.0)
        lse.masked_fill_(blind[:, None], -math.inf)
    return output, lse


def _empty(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lse = torch.full((q.shape[0], q.shape[1]), -math.inf, dtype=torch.float32, device=q.device)
    return torch.zeros_like(q), lse


@torch.no_grad()
def run_ragged(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qo_indptr: torch.Tensor,
               kv_indptr: torch.Tensor, sm_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """gqa_ragged_prefill_causal_*: (output, base-2 lse)."""
    if q.shape[0] == 0 or qo_indptr.shape[0] < 2:  # FlashInfer's plan rejects an empty batch
        return _empty(q)
    import flashinfer  # noqa: F401  (fail with ImportError before touching the device)

    wrapper = _wrapper("ragged", q.device)
    tensors, extra = (qo_indptr, kv_indptr), (float(sm_scale), k.shape[1], q.shape[0])
    planned = _PLANNED.get(("ragged", q.device))
    if planned is None or not planned.matches(tensors, extra):
        wrapper.plan(qo_indptr, kv_indptr, q.shape[1], k.shape[1], q.shape[2], causal=True,
                     sm_scale=float(sm_scale), q_data_type=q.dtype, kv_data_type=k.dtype)
        blind = _blind_rows(qo_indptr, kv_indptr[1:] - kv_indptr[:-1], q.shape[0])
        planned = _PLANNED["ragged", q.device] = _Plan(tensors, extra, blind)
    return _finish(wrapper.run(q, k, v, return_lse=True), planned.blind)


def _paged(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
           qo_indptr: torch.Tensor, kv_indptr: torch.Tensor, kv_indices: torch.Tensor,
           kv_last_page_len: torch.Tensor | None,
           sm_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    if q.shape[0] == 0 or qo_indptr.shape[0] < 2:
        return _empty(q)
    import flashinfer  # noqa: F401

    wrapper = _wrapper("paged", q.device)
    tensors = (qo_indptr, kv_indptr, kv_indices, kv_last_page_len)
    extra = (float(sm_scale), k_cache.shape[1], k_cache.shape[2], q.shape[0])
    planned = _PLANNED.get(("paged", q.device))
    if planned is None or not planned.matches(tensors, extra):
        pages = kv_indptr[1:] - kv_indptr[:-1]
        if kv_last_page_len is None:  # one token a page: the last page holds 1 (0 if empty)
            kv_last_page_len = pages.clamp(max=1).to(torch.int32)
        wrapper.plan(qo_indptr, kv_indptr, kv_indices, kv_last_page_len, q.shape[1],
                     k_cache.shape[2], q.shape[2], k_cache.shape[1], causal=True,
                     sm_scale=float(sm_scale), q_data_type=q.dtype, kv_data_type=k_cache.dtype)
        kv_lengths = torch.where(pages > 0, (pages - 1) * k_cache.shape[1] + kv_last_page_len, 0)
        blind = _blind_rows(qo_indptr, kv_lengths, q.shape[0])
        planned = _PLANNED["paged", q.device] = _Plan(tensors, extra, blind)
    return _finish(wrapper.run(q, (k_cache, v_cache), return_lse=True), planned.blind)


@torch.no_grad()
def run_paged_ps1(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                  qo_indptr: torch.Tensor, kv_indptr: torch.Tensor, kv_indices: torch.Tensor,
                  sm_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """gqa_paged_prefill_causal_*_ps1: (output, base-2 lse)."""
    return _paged(q, k_cache, v_cache, qo_indptr, kv_indptr, kv_indices, None, sm_scale)


@torch.no_grad()
def run_paged(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
              qo_indptr: torch.Tensor, kv_indptr: torch.Tensor, kv_indices: torch.Tensor,
              kv_last_page_len: torch.Tensor,
              sm_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """gqa_paged_prefill_causal_*_ps16: (output, base-2 lse)."""
    return _paged(q, k_cache, v_cache, qo_indptr, kv_indptr, kv_indices, kv_last_page_len,
                  sm_scale)
