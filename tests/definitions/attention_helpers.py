"""Paged decode attention definitions, their solutions and random inputs (tests, benchmarks)."""

import importlib.util
import json
import math
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

from fib_runtime.catalogue import declared_entries

REPO = Path(__file__).resolve().parents[2]
OP_DIR = REPO / "definitions" / "gqa_paged"
DEFINITIONS = {8: "gqa_paged_decode_h32_kv8_d128_ps1", 4: "gqa_paged_decode_h32_kv4_d128_ps1"}
NUM_QO_HEADS = 32
HEAD_DIM = 128


def load_definition(name: str) -> dict:
    """The definition's JSON as a dict."""
    return json.loads((OP_DIR / f"{name}.json").read_text())


def official_definition(folder: Path, name: str) -> dict:
    """The official definition `name` from `folder` (the test skips when it is absent)."""
    path = folder / f"{name}.json"
    if not path.exists():
        pytest.skip(f"official FlashInfer Trace data not found at {folder}")
    return json.loads(path.read_text())


def signature(spec: dict) -> dict:
    """Everything that must agree with the official definition (descriptions may differ)."""
    strip = lambda fields: {  # noqa: E731
        name: {k: v for k, v in field.items() if k != "description"}
        for name, field in fields.items()
    }
    return {
        "name": spec["name"],
        "op_type": spec["op_type"],
        "axes": strip(spec["axes"]),
        "inputs": list(strip(spec["inputs"]).items()),  # order is the calling convention
        "outputs": list(strip(spec["outputs"]).items()),
        "constraints": spec.get("constraints", []),
    }


def reference(definition: dict) -> Callable:
    """The definition's reference `run`, executed from its source text."""
    namespace: dict = {}
    exec(compile(definition["reference"], definition["name"], "exec"), namespace)
    return namespace["run"]


def solution_files() -> list[Path]:
    """The built-in solution files of the decode attention definitions."""
    return sorted((OP_DIR / "solutions").glob("*decode*.py"))


def declared_solutions(path: Path) -> list[dict]:
    """The file's FIB_SOLUTIONS literal, read without importing the file."""
    return declared_entries(path)


def import_solution(path: Path) -> ModuleType:
    """Import a solution file by path, as the database build does with its single source."""
    spec = importlib.util.spec_from_file_location(f"gqa_paged_solution_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def solutions(hardware: set[str]) -> list[tuple[str, Callable]]:
    """(variant, entry point) of every solution of the page-size-1 decode definitions whose
    target_hardware meets `hardware` (the page-size-16 ones take other inputs)."""
    found = []
    for path in solution_files():
        entries = [
            e for e in declared_solutions(path)
            if set(e["definitions"]) & set(DEFINITIONS.values())
            and (not e["target_hardware"] or hardware & set(e["target_hardware"]))
        ]
        if entries:
            module = import_solution(path)
            found += [(e["variant"], getattr(module, e["entry_point"])) for e in entries]
    return found


def uneven_lengths(batch: int, mean_len: int, seed: int) -> list[int]:
    """Sequence lengths drawn uniformly from [mean/2, 3*mean/2], so they differ within a batch."""
    gen = torch.Generator().manual_seed(seed)
    low, high = max(1, mean_len // 2), mean_len + mean_len // 2
    return torch.randint(low, high + 1, (batch,), generator=gen).tolist()


def decode_inputs(
    lengths: list[int],
    num_kv_heads: int,
    device: str | torch.device = "cpu",
    seed: int = 0,
    spare_pages: int = 7,
) -> dict[str, object]:
    """Inputs of gqa_paged_decode_h32_kv{num_kv_heads}_d128_ps1, by name, in definition order.

    kv_indptr is the running sum of lengths (length batch+1, last value = number of indices);
    kv_indices is a random permutation of the pool's pages, so no sequence is contiguous, and
    the pool has spare_pages pages that no sequence uses.
    """
    gen = torch.Generator().manual_seed(seed)
    batch, total = len(lengths), sum(lengths)
    num_pages = total + spare_pages
    indptr = torch.zeros(batch + 1, dtype=torch.int32)
    indptr[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int64), 0).to(torch.int32)
    indices = torch.randperm(num_pages, generator=gen)[:total].to(torch.int32)

    dev_gen = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=dev_gen, device=device, dtype=torch.bfloat16)

    return {
        # A larger query norm makes the softmax peaked, which exercises the running max.
        "q": randn(batch, NUM_QO_HEADS, HEAD_DIM) * 2,
        "k_cache": randn(num_pages, 1, num_kv_heads, HEAD_DIM),
        "v_cache": randn(num_pages, 1, num_kv_heads, HEAD_DIM),
        "kv_indptr": indptr.to(device),
        "kv_indices": indices.to(device),
        "sm_scale": 1.0 / math.sqrt(HEAD_DIM),
    }


def assert_matches(got: tuple, want: tuple, label: str) -> None:
    """(output, lse) against the reference's, with bfloat16-output tolerances; -inf must match."""
    (out, lse), (ref_out, ref_lse) = got, want
    assert out.shape == ref_out.shape and out.dtype == torch.bfloat16, label
    assert lse.shape == ref_lse.shape and lse.dtype == torch.float32, label
    torch.testing.assert_close(out.float(), ref_out.float(), atol=1e-2, rtol=2e-2,
                               msg=lambda m: f"{label} output: {m}")
    torch.testing.assert_close(lse, ref_lse, atol=2e-3, rtol=1e-3,
                               msg=lambda m: f"{label} lse: {m}")
