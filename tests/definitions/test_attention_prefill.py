"""GQA prefill definitions (ragged, paged at page sizes 1 and 16) and their solutions on the CPU:
the references against the official ones and on the official workloads' shapes, the torch
solution and the Triton kernel (in the interpreter) against the reference with retune's
tolerances, over uneven sequences, prefixes, empty sequences and queries that see no key."""

import json
import math
import sys
import uuid
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from attention_helpers import REPO, official_definition, reference, signature
from catalogue_cases import DEFINITIONS, entry

from fib_runtime.measure.compare import check_outputs
from fib_runtime.measure.inputs import materialise
from fib_runtime.schema import Definition, Workload

TRACE = REPO.parent / "shared" / "flashinfer-trace"
OURS = REPO / "definitions"
OFFICIAL_NAMES = [f"gqa_ragged_prefill_causal_h32_kv{kv}_d128" for kv in (8, 4)] + \
    [f"gqa_paged_prefill_causal_h32_kv{kv}_d128_ps1" for kv in (8, 4)]
NAMES = OFFICIAL_NAMES + [f"gqa_paged_prefill_causal_h32_kv{kv}_d128_ps16" for kv in (8, 4)]
# (queries, keys) per sequence: a prefix (append), an empty sequence, a fresh prefill over
# several key tiles, one token, keys shorter than queries (the first queries see none).
SEQUENCES = [(5, 9), (0, 0), (37, 37), (1, 1), (6, 2), (3, 40)]


def ours(name: str) -> dict:
    op_type = "gqa_ragged" if "ragged" in name else "gqa_paged"
    return json.loads((OURS / op_type / f"{name}.json").read_text())


def _official(name: str) -> dict:
    folder = TRACE / "definitions" / ("gqa_ragged" if "ragged" in name else "gqa_paged")
    return official_definition(folder, name)


def _kv_heads(name: str) -> int:
    return int(name.split("_kv")[1].split("_")[0])


def prefill_inputs(name: str, sequences: list[tuple[int, int]], seed: int = 0,
                   spare_pages: int = 5) -> list:
    """Inputs of a prefill definition, in its order, for (queries, keys) per sequence; pages
    shuffled in the pool (paged), the last page of a sequence partly filled (page size 16)."""
    gen = torch.Generator().manual_seed(seed)
    kv_heads = _kv_heads(name)
    page_size = int(name.split("_ps")[1]) if "_ps" in name else 0
    q_lens = [q for q, _ in sequences]
    kv_lens = [k for _, k in sequences]

    def offsets(lengths: list[int]) -> torch.Tensor:
        return torch.tensor([0, *lengths]).cumsum(0).to(torch.int32)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen).bfloat16()

    q = randn(sum(q_lens), 32, 128) * 2  # a peaked softmax exercises the running max
    scale = 1.0 / math.sqrt(128)
    if not page_size:
        total = sum(kv_lens)
        return [q, randn(total, kv_heads, 128), randn(total, kv_heads, 128), offsets(q_lens),
                offsets(kv_lens), scale]
    pages = [math.ceil(k / page_size) for k in kv_lens]
    num_pages = sum(pages) + spare_pages
    indices = torch.randperm(num_pages, generator=gen)[:sum(pages)].to(torch.int32)
    cache = [randn(num_pages, page_size, kv_heads, 128) for _ in range(2)]
    args = [q, *cache, offsets(q_lens), offsets(pages), indices]
    if page_size > 1:
        last = [k - (p - 1) * page_size if p else 1 for k, p in zip(kv_lens, pages, strict=True)]
        args.append(torch.tensor(last, dtype=torch.int32))
    return [*args, scale]


def _check(name: str, got: tuple, want: tuple, label: str) -> None:
    """retune's check (the definition's dtype tolerances), -inf rows included."""
    result = check_outputs(DEFINITIONS[name], got, want)
    assert result.status.value == "PASSED", f"{label}: {result.log}"
    assert torch.equal(torch.isneginf(got[1]), torch.isneginf(want[1])), label


@pytest.mark.parametrize("name", OFFICIAL_NAMES)
def test_definition_matches_official(name: str) -> None:
    assert signature(ours(name)) == signature(_official(name))


@pytest.mark.parametrize("name", OFFICIAL_NAMES)
def test_reference_agrees_with_official_reference(name: str) -> None:
    """Where every query sees a key, as the official reference; a query that sees none gets a
    zero row and lse -inf (the official one gives NaN there)."""
    args = prefill_inputs(name, SEQUENCES, seed=_kv_heads(name))
    out, lse = reference(ours(name))(*args)
    theirs, their_lse = reference(_official(name))(*args)
    blind = torch.isneginf(lse).all(dim=1)
    assert blind.sum() == 4  # sequence (6, 2): its first four queries
    assert not out[blind].any()
    _check(name, (out[~blind], lse[~blind]), (theirs[~blind], their_lse[~blind]), "official")


@pytest.mark.parametrize("kv_heads", [8, 4])
def test_paged_references_equal_the_ragged_one_on_the_same_tokens(kv_heads: int) -> None:
    ragged = f"gqa_ragged_prefill_causal_h32_kv{kv_heads}_d128"
    q, k, v, qo_indptr, kv_indptr, scale = prefill_inputs(ragged, SEQUENCES)
    want = reference(ours(ragged))(q, k, v, qo_indptr, kv_indptr, scale)
    for page_size in (1, 16):
        name = f"gqa_paged_prefill_causal_h32_kv{kv_heads}_d128_ps{page_size}"
        args = prefill_inputs(name, SEQUENCES, seed=3)
        args[0] = q
        cache_k, cache_v, pages_indptr, indices = args[1], args[2], args[4], args[5]
        # The ragged keys written into the pages the paged inputs chose for them.
        for b, (_, kv_len) in enumerate(SEQUENCES):
            for t in range(kv_len):
                page = indices[int(pages_indptr[b]) + t // page_size]
                cache_k[page, t % page_size] = k[int(kv_indptr[b]) + t]
                cache_v[page, t % page_size] = v[int(kv_indptr[b]) + t]
        got = reference(ours(name))(*args)
        assert torch.equal(got[0], want[0]) and torch.allclose(got[1], want[1]), page_size


def _official_workloads(name: str, limit: int = 3) -> list[dict]:
    """The smallest official workloads of `name` (axes; index tensors are not published, so
    they are generated from the axes as retune does), the KV pool capped at 4096 pages."""
    op_type = "gqa_ragged" if "ragged" in name else "gqa_paged"
    path = TRACE / "workloads" / op_type / f"{name}.jsonl"
    if not path.exists():
        pytest.skip(f"official workloads not found at {path}")
    axes = [json.loads(line)["workload"]["axes"] for line in path.read_text().splitlines()]
    small = sorted((a for a in axes if a["total_q"] <= 256), key=lambda a: -a["total_q"])
    chosen = []
    for a in small:
        if a not in chosen:
            chosen.append(a)
    for a in chosen:
        if "num_pages" in a:
            a["num_pages"] = min(a["num_pages"], max(4096, a["num_kv_indices"]))
    return chosen[:limit]


def _materialise(definition: Definition, axes: dict) -> list:
    inputs = {n: {"type": "random"} for n in definition.inputs if n != "sm_scale"}
    workload = Workload.from_dict({"uuid": str(uuid.uuid4()), "axes": axes, "inputs": {
        **inputs, "sm_scale": {"type": "scalar", "value": 1 / math.sqrt(128)}}})
    return materialise(definition, workload, alternates=0).args


@pytest.mark.parametrize("name", OFFICIAL_NAMES)
def test_solutions_on_the_official_workloads_shapes(name: str) -> None:
    """The reference runs on the official workloads' shapes (small ones) and the torch and
    Triton solutions agree with it there (Triton in the interpreter on the smaller ones)."""
    definition = DEFINITIONS[name]
    workloads = _official_workloads(name)
    assert workloads
    for axes in workloads:
        args = _materialise(definition, axes)
        want = reference(ours(name))(*args)
        assert want[0].shape == (axes["total_q"], 32, 128)
        _check(name, entry(f"{name}__torch_prefill")(*args), want, f"torch {axes}")
        if axes["total_q"] <= 64:
            _check(name, entry(f"{name}__triton_prefill")(*args), want, f"triton {axes}")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("variant", ["torch_prefill", "triton_prefill"])
def test_solutions_match_reference(name: str, variant: str) -> None:
    args = prefill_inputs(name, SEQUENCES, seed=11)
    want = reference(ours(name))(*args)
    _check(name, entry(f"{name}__{variant}")(*args), want, variant)


def _triton_module():
    from catalogue_cases import import_file, solution_file

    return import_file(solution_file("gqa_ragged_prefill_causal_h32_kv8_d128__triton_prefill"))


@pytest.mark.parametrize("blocks", [(2, 16, 4), (8, 32, 4), (16, 16, 4)], ids=str)
def test_triton_tiles_of_other_sizes(blocks: tuple[int, int, int]) -> None:
    """Other query blocks and key tiles: more or fewer programs per sequence, diagonal tiles
    that start mid-block; the program-to-sequence search must still find every sequence."""
    module = _triton_module()
    name = "gqa_paged_prefill_causal_h32_kv4_d128_ps16"
    sequences = [*SEQUENCES, (20, 20), (0, 5), (9, 30)]
    args = prefill_inputs(name, sequences, seed=5)
    want = reference(ours(name))(*args)
    got = module.prefill(args[0], args[1], args[2], args[3], args[4], args[5], args[6],
                         args[7], blocks=blocks)
    _check(name, got, want, str(blocks))


def test_triton_block_sizes_fill_the_gpu() -> None:
    choose = _triton_module().block_sizes
    assert choose(16384, 4, interpreted=False) == (32, 64, 8)  # 128-row tiles
    assert choose(100, 4, interpreted=False) == (16, 64, 4)  # few queries: 64-row tiles
    assert choose(100, 8, interpreted=False) == (8, 64, 4)
