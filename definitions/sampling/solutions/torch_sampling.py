"""Top-k / top-p sampling from probabilities in batched PyTorch (runs on CPU and GPU)."""

import torch

FIB_SOLUTIONS = [
    {
        "variant": "torch",
        "entry_points": {
            "top_k_sampling_from_probs_v*": "top_k_sampling",
            "top_k_top_p_sampling_from_probs_v*": "top_k_top_p_sampling",
            "top_p_sampling_from_probs_v*": "top_p_sampling",
        },
        "language": "python",
        "destination_passing_style": False,
        "target_hardware": ["any"],
        "dependencies": ["torch"],
        "description": (
            "Batched PyTorch: the rows' most probable tokens (torch.topk of the largest k when "
            "every row filters by k, else a full descending sort), the top-k and top-p masks on "
            "the sorted values, one torch.multinomial over the batch. Reads k on the host (one "
            "sync), so it is not CUDA-graph capturable."
        ),
    },
]


def _sorted(probs, top_k):
    """Descending values and their ids: only the largest k columns when every row keeps k."""
    vocab = probs.shape[1]
    if top_k is not None and probs.shape[0]:
        k = top_k.to(torch.int64)
        valid = (k > 0) & (k < vocab)
        if bool(valid.all()):
            return torch.topk(probs, int(k.max()), dim=-1)
    return torch.sort(probs, dim=-1, descending=True)


@torch.no_grad()
def _sample(probs, top_k, top_p):
    probs = probs.to(torch.float32)
    values, ids = _sorted(probs, top_k)
    ranks = torch.arange(values.shape[1], device=probs.device)
    if top_k is not None:
        k = top_k.to(torch.int64).unsqueeze(1)
        keep_all = (k <= 0) | (k >= probs.shape[1])
        values = values * ((ranks < k) | keep_all)
        values = values / values.sum(-1, keepdim=True)
    if top_p is not None:
        before = values.cumsum(-1) - values
        values = values * ((before <= top_p.to(torch.float32).unsqueeze(1)) | (ranks == 0))
    if values.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=probs.device)
    picked = torch.multinomial(values, 1)
    return ids.gather(1, picked).squeeze(1).to(torch.int64)


def top_k_sampling(probs, top_k):
    return _sample(probs, top_k, None)


def top_k_top_p_sampling(probs, top_k, top_p):
    return _sample(probs, top_k, top_p)


def top_p_sampling(probs, top_p):
    return _sample(probs, None, top_p)
