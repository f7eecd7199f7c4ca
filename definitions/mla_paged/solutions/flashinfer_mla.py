"""Multi-head latent attention (decode and causal prefill, one token a page) through
FlashInfer's BatchMLAPagedAttentionWrapper."""

import math

import torch

FIB_SOLUTIONS = [
    {
        "variant": "flashinfer_mla",
        "entry_points": {
            "mla_paged_decode_h16_ckv512_kpe64_ps1": "run_decode",
            "mla_paged_prefill_causal_h16_ckv512_kpe64_ps1": "run_prefill",
        },
        "language": "python",
        "destination_passing_style": False,
        "target_hardware": ["nvidia"],
        "dependencies": ["flashinfer", "torch"],
        "description": (
            "flashinfer.mla.BatchMLAPagedAttentionWrapper (backend 'auto': FA3 on Hopper, FA2 "
            "elsewhere; decode as one query a sequence, not causal). plan() runs once per "
            "workload, NOT in every call: again only when an index tensor is another one or "
            "was written since (kept alive, its version compared), as an engine plans once "
            "per step for all its layers; the measured latency is run() alone. lse is base "
            "2. Rows of queries that see no token are set to zero / -inf after the run "
            "(only for workloads that have them). Wrapper and workspace cached per device."
        ),
    },
]

_WORKSPACE_BYTES = 128 * 1024 * 1024
_WRAPPERS: dict[torch.device, object] = {}
_PLANNED: dict[torch.device, "_Plan"] = {}


class _Plan:
    """The index tensors the wrapper was planned for (kept alive), their versions, the other
    planned values and the rows that see no token."""

    def __init__(self, tensors: tuple, extra: tuple, blind: torch.Tensor | None) -> None:
        self.tensors, self.extra, self.blind = tensors, extra, blind
        self.versions = [t._version for t in tensors]

    def matches(self, tensors: tuple, extra: tuple) -> bool:
        same = all(a is b for a, b in zip(tensors, self.tensors, strict=True))
        return same and extra == self.extra and self.versions == [t._version for t in tensors]


def _wrapper(device: torch.device):
    import flashinfer.mla

    wrapper = _WRAPPERS.get(device)
    if wrapper is None:
        workspace = torch.zeros(_WORKSPACE_BYTES, dtype=torch.uint8, device=device)
        wrapper = _WRAPPERS[device] = flashinfer.mla.BatchMLAPagedAttentionWrapper(workspace)
    return wrapper


def _run(q_nope: torch.Tensor, q_pe: torch.Tensor, ckv_cache: torch.Tensor,
         kpe_cache: torch.Tensor, qo_indptr: torch.Tensor, kv_indptr: torch.Tensor,
         kv_indices: torch.Tensor, sm_scale: float, causal: bool,
         index_tensors: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    total_q, heads, d_ckv = q_nope.shape
    if total_q == 0 or kv_indptr.shape[0] < 2:  # FlashInfer's plan rejects an empty batch
        lse = torch.full((total_q, heads), -math.inf, dtype=torch.float32, device=q_nope.device)
        return torch.zeros_like(q_nope), lse
    import flashinfer  # noqa: F401  (fail with ImportError before touching the device)

    wrapper = _wrapper(q_nope.device)
    extra = (float(sm_scale), causal, total_q)
    planned = _PLANNED.get(q_nope.device)
    if planned is None or not planned.matches(index_tensors, extra):
        kv_lengths = (kv_indptr[1:] - kv_indptr[:-1]).to(torch.int32)
        wrapper.plan(qo_indptr, kv_indptr, kv_indices, kv_lengths, heads, d_ckv,
                     q_pe.shape[-1], 1, causal, float(sm_scale), q_nope.dtype, ckv_cache.dtype)
        q_lengths = qo_indptr[1:] - qo_indptr[:-1]
        blind_count = (q_lengths - kv_lengths).clamp(min=0)
        blind = None
        if bool(blind_count.any()):
            seq = torch.repeat_interleave(torch.arange(q_lengths.shape[0], device=q_nope.device),
                                          q_lengths.long(), output_size=total_q)
            local = torch.arange(total_q, device=q_nope.device) - qo_indptr[seq]
            blind = local < blind_count[seq]
        planned = _PLANNED[q_nope.device] = _Plan(index_tensors, extra, blind)
    output, lse = wrapper.run(q_nope, q_pe, ckv_cache, kpe_cache, return_lse=True)
    if planned.blind is not None:
        output.masked_fill_(planned.blind[:, None, None], 0.0)
        lse.masked_fill_(planned.blind[:, None], -math.inf)
    return output, lse


@torch.no_grad()
def run_decode(q_nope: torch.Tensor, q_pe: torch.Tensor, ckv_cache: torch.Tensor,
               kpe_cache: torch.Tensor, kv_indptr: torch.Tensor, kv_indices: torch.Tensor,
               sm_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """mla_paged_decode_h16_ckv512_kpe64_ps1: (output, base-2 lse)."""
    qo_indptr = torch.arange(kv_indptr.shape[0], dtype=torch.int32, device=kv_indptr.device)
    return _run(q_nope, q_pe, ckv_cache, kpe_cache, qo_indptr, kv_indptr, kv_indices,
                sm_scale, False, (kv_indptr, kv_indices))


@torch.no_grad()
def run_prefill(q_nope: torch.Tensor, q_pe: torch.Tensor, ckv_cache: torch.Tensor,
                kpe_cache: torch.Tensor, qo_indptr: torch.Tensor, kv_indptr: torch.Tensor,
                kv_indices: torch.Tensor, sm_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """mla_paged_prefill_causal_h16_ckv512_kpe64_ps1: (output, base-2 lse)."""
    return _run(q_nope, q_pe, ckv_cache, kpe_cache, qo_indptr, kv_indptr, kv_indices,
                sm_scale, True, (qo_indptr, kv_indptr, kv_indices))
