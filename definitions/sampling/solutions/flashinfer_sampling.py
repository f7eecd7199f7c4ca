"""Top-k / top-p sampling through FlashInfer's sorting-free CUDA kernels (imported on call)."""

import torch

FIB_SOLUTIONS = [
    {
        "variant": "flashinfer",
        "entry_points": {
            "top_k_sampling_from_probs_v*": "top_k_sampling",
            "top_k_top_p_sampling_from_probs_v*": "top_k_top_p_sampling",
            "top_p_sampling_from_probs_v*": "top_p_sampling",
        },
        "language": "python",
        "destination_passing_style": False,
        "target_hardware": ["nvidia"],
        "dependencies": ["flashinfer", "torch"],
        "description": (
            "flashinfer.sampling.top_k_sampling_from_probs / top_k_top_p_sampling_from_probs "
            "(filter_apply_order='top_k_first') / top_p_sampling_from_probs: rejection sampling "
            "without a sort. k outside (0, vocab) is passed as vocab (no filtering, the "
            "definition's contract); the int32 ids are widened to int64."
        ),
    },
]


def _k(probs, top_k):
    vocab = probs.shape[1]
    k = top_k.to(torch.int32)
    return torch.where((k > 0) & (k < vocab), k, vocab)


@torch.no_grad()
def top_k_sampling(probs, top_k):
    if probs.shape[0] == 0:  # FlashInfer's kernels reject an empty batch
        return torch.empty(0, dtype=torch.int64, device=probs.device)
    import flashinfer.sampling

    return flashinfer.sampling.top_k_sampling_from_probs(probs, _k(probs, top_k)).to(torch.int64)


@torch.no_grad()
def top_k_top_p_sampling(probs, top_k, top_p):
    if probs.shape[0] == 0:  # FlashInfer's kernels reject an empty batch
        return torch.empty(0, dtype=torch.int64, device=probs.device)
    import flashinfer.sampling

    return flashinfer.sampling.top_k_top_p_sampling_from_probs(
        probs, _k(probs, top_k), top_p.to(torch.float32), filter_apply_order="top_k_first"
    ).to(torch.int64)


@torch.no_grad()
def top_p_sampling(probs, top_p):
    if probs.shape[0] == 0:  # FlashInfer's kernels reject an empty batch
        return torch.empty(0, dtype=torch.int64, device=probs.device)
    import flashinfer.sampling

    return flashinfer.sampling.top_p_sampling_from_probs(probs, top_p.to(torch.float32)).to(
        torch.int64)
