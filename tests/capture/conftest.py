"""Capture test helpers: a database with a toy norm and a toy paged-attention definition."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fib_runtime.capture import disable_capture
from fib_runtime.schema import Definition, Trace
from fib_runtime.store import TraceDB
from tests.factories import definition

REPO = Path(__file__).resolve().parents[2]

PAGED = {
    "name": "toy_paged_decode_h2_d4", "op_type": "gqa_paged",
    "axes": {"batch_size": {"type": "var"}, "num_heads": {"type": "const", "value": 2},
             "head_dim": {"type": "const", "value": 4}, "len_indptr": {"type": "var"},
             "num_kv_indices": {"type": "var"}},
    "inputs": {"q": {"shape": ["batch_size", "num_heads", "head_dim"], "dtype": "float32"},
               "kv_indptr": {"shape": ["len_indptr"], "dtype": "int32"},
               "kv_indices": {"shape": ["num_kv_indices"], "dtype": "int32"},
               "sm_scale": {"shape": None, "dtype": "float32"}},
    "outputs": {"o": {"shape": ["batch_size", "num_heads", "head_dim"], "dtype": "float32"}},
    "reference": "def run(q, kv_indptr, kv_indices, sm_scale):\n    return q * sm_scale\n",
}
NORM = "toy_norm_h8"


@pytest.fixture(autouse=True)
def _capture_off() -> Iterator[None]:
    """No test leaves a session open (each would keep a writer thread and signal handlers)."""
    yield
    disable_capture()


@pytest.fixture
def db(tmp_path: Path) -> TraceDB:
    return make_db(tmp_path)


def make_db(root: Path) -> TraceDB:
    database = TraceDB.open(root, create=True)
    database.add_definition(Definition.from_dict(definition()))
    database.add_definition(Definition.from_dict(PAGED))
    return database


def paged_args(lengths: list[int], *, scale: float = 0.5) -> tuple[Any, ...]:
    """Arguments of the toy paged definition for sequences of the given KV lengths."""
    import torch

    indptr = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    indices = torch.randperm(max(1, sum(lengths)), dtype=torch.int32)[:sum(lengths)]
    q = torch.randn(len(lengths), 2, 4)
    return (q, indptr, indices, scale)


def lines(root: Path, op_type: str = "rmsnorm", name: str = NORM) -> list[dict[str, Any]]:
    path = root / "workloads" / op_type / f"{name}.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] \
        if path.exists() else []


def run_child(code: str, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    """Start a Python child with the repository importable."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.update(kwargs.pop("env", {}))
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def capture_in_processes(root: Path, worker: str, processes: int, per_process: int,
                         env: dict[str, str] | None = None,
                         out: Callable[[str], None] | None = None) -> list[Trace]:
    """Run `processes` copies of the `worker` script (argv: root, index, count), then parse
    every workload line they wrote for NORM (the file must end with a newline). `out` is
    given each worker's last line of output."""
    children = [run_child(worker, str(root), str(w), str(per_process), env=env or {})
                for w in range(processes)]
    for child in children:
        stdout, err = child.communicate(timeout=240)
        assert child.returncode == 0, err
        if out is not None:
            out(stdout.strip().splitlines()[-1])
    raw = (root / f"workloads/rmsnorm/{NORM}.jsonl").read_bytes().split(b"\n")
    assert raw[-1] == b""  # the file ends with a newline
    return [Trace.from_dict(orjson.loads(line)) for line in raw[:-1]]  # each line parses
