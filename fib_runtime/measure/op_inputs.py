"""Built-in input makers by op type, for inputs the naming rules cannot make.

- `sampling`: `probs` rows are softmax distributions of N(0, s^2) logits (s from 1 to 4, so
  both flat and peaked rows occur); `top_k` in [1, 64] with every fourth row 0 (no
  filtering); `top_p` in [0.5, 0.95] with every fourth row 1.0.
- `moe` (the bfloat16 family, with a `top_k` axis): distinct expert ids per token, routing
  weights that sum to 1, and weights scaled by 1/sqrt(fan-in), so activations keep the
  magnitude of a trained model's instead of growing with the hidden size.

A maker registered for a definition or its family (`inputs.register_inputs`) wins over these.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fib_runtime.schema import TensorSpec
from fib_runtime.tensors import torch_dtype


def sampling_inputs(name: str, spec: TensorSpec, axes: Mapping[str, int], gen: Any) -> Any:
    import torch

    rows = axes.get("batch_size", 1)
    every_fourth = torch.arange(rows) % 4 == 3
    if name == "probs":
        scale = 1.0 + 3.0 * torch.rand(rows, 1, generator=gen)
        logits = torch.randn(rows, axes["vocab_size"], generator=gen) * scale
        return torch.softmax(logits, dim=-1).to(torch_dtype(spec.dtype))
    if name == "top_k":
        k = torch.randint(1, 65, (rows,), generator=gen)
        return torch.where(every_fourth, 0, k).to(torch_dtype(spec.dtype))
    if name == "top_p":
        p = 0.5 + 0.45 * torch.rand(rows, generator=gen)
        return torch.where(every_fourth, 1.0, p).to(torch_dtype(spec.dtype))
    return None


def moe_inputs(name: str, spec: TensorSpec, axes: Mapping[str, int], gen: Any) -> Any:
    import torch

    if not spec.shape or "top_k" not in axes:  # the bfloat16 family only
        return None
    shape = tuple(axes[a] for a in spec.shape)
    if name == "topk_ids":  # distinct experts per token, uniform over the experts
        scores = torch.rand(shape[0], axes["num_experts"], generator=gen)
        return scores.topk(axes["top_k"], dim=-1).indices.to(torch_dtype(spec.dtype))
    if name == "topk_weights":  # a renormalised softmax top-k: positive, summing to 1
        weights = torch.rand(shape, generator=gen) + 0.1
        return (weights / weights.sum(-1, keepdim=True)).to(torch_dtype(spec.dtype))
    if name in ("w13", "w2"):  # one expert at a time: no float32 copy of all the weights
        weights = torch.empty(shape, dtype=torch_dtype(spec.dtype))
        for expert in weights:
            expert.copy_(torch.randn(shape[1:], generator=gen).div_(math.sqrt(shape[-1])))
        return weights
    return None


BY_OP_TYPE = {"sampling": sampling_inputs, "moe": moe_inputs}
