"""MLA paged decode and causal prefill (page size 1) on the CPU: the references against the
official ones and on the official workloads' shapes, the torch solution and the Triton kernel
(in the interpreter, split-KV decode included) against the reference with retune's
tolerances."""

import json
import math
import sys
import uuid
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from attention_helpers import REPO, official_definition, reference, signature
from catalogue_cases import DEFINITIONS, entry, import_file, solution_file

from fib_runtime.measure.compare import check_outputs
from fib_runtime.measure.inputs import materialise
from fib_runtime.schema import Workload

TRACE = REPO.parent / "shared" / "flashinfer-trace"
DECODE = "mla_paged_decode_h16_ckv512_kpe64_ps1"
PREFILL = "mla_paged_prefill_causal_h16_ckv512_kpe64_ps1"
NAMES = [DECODE, PREFILL]
SCALE = 1 / math.sqrt(192)
# (queries, tokens) per sequence: append over a prefix, empty, fresh prompt, blind queries
SEQUENCES = [(5, 9), (0, 0), (37, 37), (1, 1), (6, 2), (3, 40)]
DECODE_LENGTHS = [9, 0, 70, 1, 33]


def ours(name: str) -> dict:
    return json.loads((REPO / "definitions" / "mla_paged" / f"{name}.json").read_text())


def mla_inputs(name: str, sequences: list[tuple[int, int]], seed: int = 0) -> list:
    """Inputs in definition order; decode takes sequences of one query (their token counts)."""
    gen = torch.Generator().manual_seed(seed)
    q_lens = [q for q, _ in sequences]
    kv_lens = [k for _, k in sequences]
    num_pages = sum(kv_lens) + 5
    indices = torch.randperm(num_pages, generator=gen)[:sum(kv_lens)].to(torch.int32)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen).bfloat16()

    def offsets(lengths: list[int]) -> torch.Tensor:
        return torch.tensor([0, *lengths]).cumsum(0).to(torch.int32)

    rows = sum(q_lens)
    head = [randn(rows, 16, 512), randn(rows, 16, 64), randn(num_pages, 1, 512),
            randn(num_pages, 1, 64)]
    if name == DECODE:
        return [*head, offsets(kv_lens), indices, SCALE]
    return [*head, offsets(q_lens), offsets(kv_lens), indices, SCALE]


def _check(name: str, got: tuple, want: tuple, label: str) -> None:
    result = check_outputs(DEFINITIONS[name], got, want)
    assert result.status.value == "PASSED", f"{label}: {result.log}"
    assert torch.equal(torch.isneginf(got[1]), torch.isneginf(want[1])), label


def _cases(name: str) -> list[tuple[int, int]]:
    return [(1, k) for k in DECODE_LENGTHS] if name == DECODE else SEQUENCES


def _official(name: str) -> dict:
    return official_definition(TRACE / "definitions" / "mla_paged", name)


@pytest.mark.parametrize("name", NAMES)
def test_definition_matches_official(name: str) -> None:
    assert signature(ours(name)) == signature(_official(name))


@pytest.mark.parametrize("name", NAMES)
def test_reference_agrees_with_official_reference(name: str) -> None:
    args = mla_inputs(name, _cases(name), seed=1)
    out, lse = reference(ours(name))(*args)
    theirs = reference(_official(name))(*args)
    blind = torch.isneginf(lse).all(dim=1)
    assert int(blind.sum()) == (1 if name == DECODE else 4)  # an empty sequence / 4 queries
    assert not out[blind].any()
    _check(name, (out[~blind], lse[~blind]), (theirs[0][~blind], theirs[1][~blind]), "official")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("variant", ["torch_mla", "triton_mla"])
def test_solutions_match_reference(name: str, variant: str) -> None:
    args = mla_inputs(name, _cases(name), seed=4)
    _check(name, entry(f"{name}__{variant}")(*args), reference(ours(name))(*args), variant)


def _triton():
    return import_file(solution_file(f"{DECODE}__triton_mla"))


def _config(block_t: int = 1, block_n: int = 16, **kw: int):
    return _triton().Config(block_t=block_t, block_n=block_n, num_warps=4, **kw)


@pytest.mark.parametrize(("splits", "block_n"), [(3, 16), (8, 16), (2, 32)])
def test_triton_decode_split_over_tokens(splits: int, block_n: int) -> None:
    """Several programs a sequence, some with nothing to read; the merge pass combines them."""
    args = mla_inputs(DECODE, _cases(DECODE), seed=splits)
    got = _triton().attend(*args[:4], None, *args[4:], _config(block_n=block_n), splits)
    _check(DECODE, got, reference(ours(DECODE))(*args), f"splits {splits}")


# uneven, empty (first, last, in a row) and one-token sequences; chunks cross sequences
CHUNK_LENGTHS = [0, 9, 0, 70, 1, 33, 0, 0, 5, 2, 130, 0]


@pytest.mark.parametrize(("chunk", "block_n"), [(16, 16), (32, 16), (48, 16), (64, 32), (512, 16)])
def test_triton_decode_in_equal_chunks_of_the_batch(chunk: int, block_n: int) -> None:
    """A program per `chunk` tokens of the whole batch, one partial per sequence it touches;
    the merge finds each sequence's partials from kv_indptr."""
    args = mla_inputs(DECODE, [(1, k) for k in CHUNK_LENGTHS], seed=chunk)
    got = _triton().attend_decode_chunks(*args, _config(block_n=block_n), chunk)
    _check(DECODE, got, reference(ours(DECODE))(*args), f"chunk {chunk}")


def _grids(monkeypatch: pytest.MonkeyPatch, module, launcher: str) -> list:
    grids = []
    launch = getattr(module, launcher)
    monkeypatch.setattr(module, launcher, lambda grid, *a, **k: (grids.append(grid),
                                                                  launch(grid, *a, **k)))
    return grids


def test_triton_decode_balances_uneven_sequences(monkeypatch: pytest.MonkeyPatch) -> None:
    """One long sequence among short ones (the official batch-16/64 workloads' shape): every
    program reads at most one chunk, so the long one is spread over many programs."""
    module = _triton()
    lengths = [600, 3, 5, 0, 7, 2, 1, 9]
    args = mla_inputs(DECODE, [(1, k) for k in lengths], seed=5)
    grids = _grids(monkeypatch, module, "_launch_chunks")
    got = module.run_decode(*args)
    _check(DECODE, got, reference(ours(DECODE))(*args), "uneven")
    chunk = module.decode_chunk(sum(lengths), args[0].device, module.INTERPRETER_CONFIG)
    assert grids == [(-(-sum(lengths) // chunk), 1, 1)] and chunk <= 64


# a few queries a sequence over long caches (the official total_q = 22 workload's shape)
FEW_OVER_LONG = [(1, 700), (2, 90), (0, 50), (1, 1), (3, 260), (1, 0)]


def test_triton_prefill_splits_few_queries_over_long_caches(
        monkeypatch: pytest.MonkeyPatch) -> None:
    module = _triton()
    args = mla_inputs(PREFILL, FEW_OVER_LONG, seed=11)
    grids = _grids(monkeypatch, module, "_launch")
    got = module.run_prefill(*args)
    _check(PREFILL, got, reference(ours(PREFILL))(*args), "few over long")
    assert len(grids) == 1 and grids[0][1] > 1, grids  # split over the tokens, then merged


@pytest.mark.parametrize(("block_t", "splits"), [(1, 3), (2, 5), (4, 2)])
def test_triton_prefill_split_over_tokens(block_t: int, splits: int) -> None:
    """Causal limits per query inside each chunk, blind queries and empty sequences."""
    args = mla_inputs(PREFILL, [*SEQUENCES, (2, 90), (9, 30)], seed=block_t)
    got = _triton().attend(*args, _config(block_t=block_t), splits)
    _check(PREFILL, got, reference(ours(PREFILL))(*args), f"block_t {block_t} x {splits}")


@pytest.mark.parametrize(("block_t", "block_n"), [(2, 16), (4, 32)])
def test_triton_prefill_query_blocks(block_t: int, block_n: int) -> None:
    args = mla_inputs(PREFILL, [*SEQUENCES, (9, 30), (20, 70)], seed=9)
    got = _triton().attend(*args, _config(block_t, block_n))
    _check(PREFILL, got, reference(ours(PREFILL))(*args), f"block_t {block_t}")


@pytest.mark.parametrize("name", NAMES)
def test_triton_no_queries(name: str) -> None:
    """No query at all (prefill: sequences of cached tokens only; decode: an empty batch)."""
    args = mla_inputs(name, [(0, 5), (0, 0)] if name == PREFILL else [], seed=1)
    out, lse = entry(f"{name}__triton_mla")(*args)
    assert out.shape == (0, 16, 512) and lse.shape == (0, 16)


def test_split_rules() -> None:
    module = _triton()
    cpu = torch.device("cpu")  # 132 multiprocessors assumed
    config = module.Config(block_t=2, block_n=32, num_warps=4, split=2, min_chunk=64)
    assert module.decode_chunk(75145, cpu, config) == 288  # 264 programs of <= 288 tokens
    assert module.decode_chunk(1857, cpu, config) == 64  # at least min_chunk
    assert module.prefill_splits(22, 22, 17759, cpu, config) == 12  # 264 / 22 programs
    assert module.prefill_splits(3, 1, 100, cpu, config) == 2  # ~64 tokens a chunk
    assert module.prefill_splits(8192, 1, 16384, cpu, config) == 1  # blocks fill the GPU
    assert module.prefill_splits(1, 1, 10**6, cpu, config) == 64  # capped


@pytest.mark.parametrize("name", NAMES)
def test_solutions_on_the_official_workloads_shapes(name: str) -> None:
    """The smallest official workloads (index tensors generated from the axes as retune does,
    the pool capped at 4096 tokens): the reference runs; torch and Triton agree with it."""
    path = TRACE / "workloads" / "mla_paged" / f"{name}.jsonl"
    if not path.exists():
        pytest.skip(f"official workloads not found at {path}")
    workloads = [json.loads(line)["workload"] for line in path.read_text().splitlines()]
    small = sorted(workloads, key=lambda w: w["axes"]["num_kv_indices"])[:3]
    definition = DEFINITIONS[name]
    for workload in small:
        axes = dict(workload["axes"])
        axes["num_pages"] = min(axes["num_pages"], max(4096, axes["num_kv_indices"]))
        inputs = {n: {"type": "random"} for n in definition.inputs if n != "sm_scale"}
        inputs["sm_scale"] = workload["inputs"]["sm_scale"]
        args = materialise(definition, Workload.from_dict(
            {"uuid": str(uuid.uuid4()), "axes": axes, "inputs": inputs}), alternates=0).args
        want = reference(ours(name))(*args)
        assert want[0].shape[1:] == (16, 512)
        for variant in ("torch_mla", "triton_mla"):
            _check(name, entry(f"{name}__{variant}")(*args), want, f"{variant} {axes}")
