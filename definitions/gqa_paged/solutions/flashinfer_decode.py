"""Paged GQA decode attention through FlashInfer's batch decode wrapper."""

import math

import torch

FIB_SOLUTIONS = [
    {
        "variant": "flashinfer_decode",
        "definitions": [
            "gqa_paged_decode_h32_kv8_d128_ps1",
            "gqa_paged_decode_h32_kv4_d128_ps1",
        ],
        "entry_point": "run",
        "language": "python",
        "destination_passing_style": False,
        "target_hardware": ["nvidia"],
        "dependencies": ["flashinfer", "torch"],
        "description": (
            "flashinfer.decode.BatchDecodeWithPagedKVCacheWrapper (NHD layout, CUDA-core decode "
            "kernel, FlashInfer's own split-KV scheduling). plan() runs inside every call, so its "
            "cost (a host copy of kv_indptr, hence a device sync) is part of the measured "
            "latency; an engine that plans once per step for all layers pays it less often. "
            "FlashInfer's lse is already base 2. Rows of empty sequences are set to zero / -inf "
            "afterwards (two small kernels). The wrapper and its workspace are cached per device."
        ),
    },
]

_WORKSPACE_BYTES = 128 * 1024 * 1024
_WRAPPERS: dict[torch.device, object] = {}


def _wrapper(device: torch.device):
    """The device's decode wrapper; it owns the workspace buffers, so they are made once."""
    import flashinfer

    wrapper = _WRAPPERS.get(device)
    if wrapper is None:
        workspace = torch.zeros(_WORKSPACE_BYTES, dtype=torch.uint8, device=device)
        wrapper = flashinfer.decode.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD")
        _WRAPPERS[device] = wrapper
    return wrapper


@torch.no_grad()
def run(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    sm_scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (output, base-2 lse) as the definition does."""
    batch, num_qo_heads, head_dim = q.shape
    if batch == 0:  # FlashInfer's plan rejects an empty batch
        lse = torch.empty(0, num_qo_heads, dtype=torch.float32, device=q.device)
        return torch.empty_like(q), lse
    import flashinfer  # noqa: F401  (fail with ImportError before touching the device)

    wrapper = _wrapper(q.device)
    num_kv_heads = k_cache.shape[2]
    # One token per page: the last page of a sequence holds 1 token, or 0 when it is empty.
    last_page_len = (kv_indptr[1:] - kv_indptr[:-1]).clamp(max=1).to(torch.int32)
    wrapper.plan(
        kv_indptr,
        kv_indices,
        last_page_len,
        num_qo_heads,
        num_kv_heads,
        head_dim,
        k_cache.shape[1],
        q_data_type=q.dtype,
        kv_data_type=k_cache.dtype,
        sm_scale=float(sm_scale),
    )
    output, lse = wrapper.run(q, (k_cache, v_cache), return_lse=True)
    # Empty sequences: FlashInfer 0.6.4 (seen on H200) writes a zero row but lse ~ -49998.4,
    # a finite sentinel; the definition wants -inf. Both are forced to the definition's values.
    empty = kv_indptr[1:] == kv_indptr[:-1]
    output.masked_fill_(empty[:, None, None], 0.0)
    lse.masked_fill_(empty[:, None], -math.inf)
    return output, lse
