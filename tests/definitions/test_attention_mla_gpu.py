"""The MLA Triton solution on the GPU at the official workloads' shapes (uneven batches of 16
and 64 decodes over thousands of tokens, a few queries over long caches, a long causal prompt)
and under every launch configuration the benchmark sweeps, against the reference."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from attention_helpers import reference
from test_attention_mla import DECODE, PREFILL, _check, mla_inputs, ours
from test_attention_mla_bench_variants import bench

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _uneven(count: int, total: int, seed: int) -> list[int]:
    """Random cut points, as fib retune generates the official workloads' lengths."""
    gen = torch.Generator().manual_seed(seed)
    cuts = sorted((torch.randperm(total - 1, generator=gen)[:count - 1] + 1).tolist())
    return [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]


SHAPES = {
    "decode b16": (DECODE, [(1, k) for k in _uneven(16, 14857, 1)]),
    "decode b64": (DECODE, [(1, k) for k in _uneven(64, 22745, 2)]),
    "decode b1 long": (DECODE, [(1, 2708)]),
    "decode with empties": (DECODE, [(1, k) for k in (0, 3000, 0, 1, 5, 0)]),
    "prefill 22 over long": (PREFILL, [(1, 1 + k) for k in _uneven(22, 17737, 3)]),
    "prefill appends": (PREFILL, [(q, q + k) for q, k in zip(_uneven(5, 805, 4), (9, 0, 300, 0, 1),
                                                            strict=True)]),
    "prefill long prompt": (PREFILL, [(3000, 3000), (100, 2000), (0, 5), (40, 10)]),
}


def _on_gpu(args: list) -> list:
    return [a.cuda() if torch.is_tensor(a) else a for a in args]


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_triton_mla_matches_reference_at_official_shapes(shape: str) -> None:
    name, sequences = SHAPES[shape]
    args = _on_gpu(mla_inputs(name, sequences, seed=7))
    want = reference(ours(name))(*args)
    for label, run in {"shipped": None, **bench.mla_variants(name, args)}.items():
        got = run() if run else bench.entry(f"{name}__triton_mla")(*args)
        _check(name, got, want, f"{shape} {label}")
