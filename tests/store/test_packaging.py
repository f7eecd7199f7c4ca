"""A fresh install can write tensor dumps: safetensors needs numpy, which we must declare."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from fib_runtime.schema import SafetensorsInput
from fib_runtime.store import TraceDB


def test_numpy_is_a_declared_dependency() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)\]", pyproject, re.S | re.M)
    assert block is not None
    names = {re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].lower()
             for d in re.findall(r'"([^"]+)"', block.group(1))}
    assert {"numpy", "safetensors", "torch"} <= names


def test_a_tensor_dump_is_written_and_read_back(tmp_path: Path) -> None:
    import numpy  # noqa: F401 - what safetensors.torch.save needs to write bytes

    db = TraceDB.open(tmp_path, create=True)
    tensors = {"kv_indptr": torch.arange(5, dtype=torch.int32),
               "x": torch.randn(3, 8, dtype=torch.bfloat16)}
    rel = "blob/workloads/op/def/def_0.safetensors"
    assert db.save_tensors(rel, tensors) > 0
    for key, tensor in tensors.items():
        assert torch.equal(db.load_tensor(SafetensorsInput(rel, key)), tensor)
