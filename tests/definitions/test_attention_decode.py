"""Paged GQA decode definitions and solutions on CPU (Triton kernels run in the interpreter)."""

import ast
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from attention_helpers import (
    DEFINITIONS,
    OP_DIR,
    REPO,
    assert_matches,
    declared_solutions,
    decode_inputs,
    import_solution,
    load_definition,
    official_definition,
    reference,
    signature,
    solution_files,
)

OFFICIAL = REPO.parent / "shared" / "flashinfer-trace" / "definitions" / "gqa_paged"
KV_HEADS = sorted(DEFINITIONS)
# Tiny batches: single short sequence, odd lengths with an empty one in the middle, all empty.
LENGTHS = [[1], [5, 0, 70], [0, 0]]


def official(name: str) -> dict:
    return official_definition(OFFICIAL, name)


@pytest.mark.parametrize("kv_heads", KV_HEADS)
def test_definition_matches_official(kv_heads: int) -> None:
    ours = load_definition(DEFINITIONS[kv_heads])
    assert signature(ours) == signature(official(ours["name"]))


@pytest.mark.parametrize("kv_heads", KV_HEADS)
def test_reference_agrees_with_official_reference(kv_heads: int) -> None:
    ours = load_definition(DEFINITIONS[kv_heads])
    theirs = official(ours["name"])
    inputs = decode_inputs([3, 0, 9, 1], kv_heads, seed=kv_heads)
    out, lse = reference(ours)(*inputs.values())
    assert torch.isneginf(lse[1]).all() and not out[1].any()
    assert_matches((out, lse), reference(theirs)(*inputs.values()), "official reference")


def test_fib_solutions_declarations() -> None:
    variants = []
    for path in solution_files():
        functions = {
            node.name: [a.arg for a in node.args.args]
            for node in ast.parse(path.read_text()).body
            if isinstance(node, ast.FunctionDef)
        }
        for entry in declared_solutions(path):
            assert entry["language"] in {"python", "triton"}, path
            assert entry["destination_passing_style"] is False, path
            assert isinstance(entry["description"], str) and entry["description"], path
            assert entry["entry_point"] in functions, (path, entry["entry_point"])
            for name in entry["definitions"]:
                assert (OP_DIR / f"{name}.json").exists(), (path, name)
                inputs = list(load_definition(name)["inputs"])
                assert functions[entry["entry_point"]] == inputs, (path, entry["variant"])
            variants.append(entry["variant"])
    assert len(variants) == len(set(variants)) >= 4, variants


def _triton():
    return import_solution(OP_DIR / "solutions" / "triton_decode.py")


def _triton_runs() -> dict:
    module = _triton()
    return {
        "single_pass": module.run_single_pass,
        "split_kv_auto": module.run_split_kv,
        # Three chunks of 16 tokens: several partials per sequence, some of them empty.
        "split_kv_3": lambda *args: module.decode(*args, num_splits=3, block_n=16),
    }


@pytest.mark.parametrize("kv_heads", KV_HEADS)
@pytest.mark.parametrize("lengths", LENGTHS, ids=str)
@pytest.mark.parametrize("run", ["single_pass", "split_kv_auto", "split_kv_3"])
def test_triton_matches_reference(kv_heads: int, lengths: list[int], run: str) -> None:
    inputs = decode_inputs(lengths, kv_heads, seed=len(lengths))
    want = reference(load_definition(DEFINITIONS[kv_heads]))(*inputs.values())
    assert_matches(_triton_runs()[run](*inputs.values()), want, run)


@pytest.mark.parametrize("kv_heads", KV_HEADS)
@pytest.mark.parametrize("lengths", [*LENGTHS, [40, 3, 17, 0, 128]], ids=str)
def test_torch_matches_reference(kv_heads: int, lengths: list[int]) -> None:
    run = import_solution(OP_DIR / "solutions" / "torch_decode.py").run
    inputs = decode_inputs(lengths, kv_heads, seed=7)
    want = reference(load_definition(DEFINITIONS[kv_heads]))(*inputs.values())
    assert_matches(run(*inputs.values()), want, "torch_padded")


def test_split_count_fills_the_gpu_and_stays_one_for_big_batches() -> None:
    choose = _triton().choose_num_splits
    cpu = torch.device("cpu")
    assert choose(1, 8, 4096, cpu) * 8 >= 132  # one long sequence: spread over the SMs
    assert choose(1, 8, 64, cpu) == 1  # too short to be worth a merge pass
    assert choose(256, 8, 256 * 4096, cpu) == 1  # batch x heads already fills the GPU
    assert choose(4, 4, 4 * 512, cpu) == 4  # capped by chunks of >= 128 tokens
    assert choose(1, 8, 2**20, cpu) == 64  # capped to keep the merge tile in registers


def test_flashinfer_solution_imports_without_flashinfer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "flashinfer", None)  # makes `import flashinfer` fail
    module = import_solution(OP_DIR / "solutions" / "flashinfer_decode.py")
    assert [e["variant"] for e in module.FIB_SOLUTIONS] == ["flashinfer_decode"]
    with pytest.raises(ImportError):
        module.run(*decode_inputs([2], 8).values())
