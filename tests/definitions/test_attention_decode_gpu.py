"""Paged GQA decode solutions against the reference on the GPU, over batch x mean KV length."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from attention_helpers import (
    DEFINITIONS,
    assert_matches,
    decode_inputs,
    load_definition,
    reference,
    solutions,
    uneven_lengths,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
BATCHES = [1, 4, 16, 64, 256]
MEAN_LENS = [64, 512, 4096]


@pytest.fixture(scope="module")
def gpu_solutions() -> list:
    found = solutions({"any", "nvidia"})
    assert len(found) >= 4, [variant for variant, _ in found]
    return found


def _check_all(gpu_solutions: list, kv_heads: int, lengths: list[int], seed: int) -> None:
    inputs = decode_inputs(lengths, kv_heads, device="cuda", seed=seed)
    args = list(inputs.values())
    want = reference(load_definition(DEFINITIONS[kv_heads]))(*args)
    failures = []
    for variant, run in gpu_solutions:
        try:
            assert_matches(run(*args), want, variant)
        except AssertionError as error:
            failures.append(f"{variant}: {error}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("mean_len", MEAN_LENS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("kv_heads", sorted(DEFINITIONS))
def test_solutions_match_reference_on_grid(
    gpu_solutions: list, kv_heads: int, batch: int, mean_len: int
) -> None:
    seed = 1000 * batch + mean_len + kv_heads
    _check_all(gpu_solutions, kv_heads, uneven_lengths(batch, mean_len, seed), seed)


@pytest.mark.parametrize("kv_heads", sorted(DEFINITIONS))
def test_solutions_handle_empty_sequences(gpu_solutions: list, kv_heads: int) -> None:
    _check_all(gpu_solutions, kv_heads, [0, 17, 0, 3000, 0, 1], seed=kv_heads)
