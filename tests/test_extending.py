"""docs/extending.md done once: a toy op added as two files (a definition JSON and a solution
module) in a catalogue folder of its own, installed into a database, measured and served
through fib.apply on the CPU, with no edit of library code."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import fib_runtime as fib
from fib_runtime.catalogue import install, load_catalogue
from fib_runtime.cli.main import main
from fib_runtime.dispatch.explain import explain
from fib_runtime.store import TraceDB

NAME = "toy_scale_h4"
DEFINITION = {
    "name": NAME, "op_type": "toy_scale", "description": "y = 2 * x, row by row.",
    "axes": {"batch_size": {"type": "var"}, "hidden_size": {"type": "const", "value": 4}},
    "inputs": {"x": {"shape": ["batch_size", "hidden_size"], "dtype": "float32"}},
    "outputs": {"y": {"shape": ["batch_size", "hidden_size"], "dtype": "float32"}},
    "reference": "import torch\n\n\ndef run(x):\n    return x * 2.0\n",
}
SOLUTION = '''"""The toy op by addition."""

FIB_SOLUTIONS = [
    {
        "variant": "add",
        "definitions": ["toy_scale_h*"],
        "entry_point": "scale",
        "language": "python",
        "target_hardware": ["any"],
        "dependencies": ["torch"],
    },
]


def scale(x):
    return x + x
'''


def write_op(catalogue: Path) -> list[Path]:
    """The files the recipe "An op" of docs/extending.md asks for."""
    folder = catalogue / "toy_scale"
    (folder / "solutions").mkdir(parents=True)
    files = [folder / f"{NAME}.json", folder / "solutions" / "add.py"]
    files[0].write_text(json.dumps(DEFINITION, indent=2))
    files[1].write_text(SOLUTION)
    return files


def test_a_toy_op_takes_two_files_and_is_served(tmp_path: Path) -> None:
    files = write_op(tmp_path / "catalogue")
    assert len(files) == 2 and {p.name for p in (tmp_path / "catalogue").rglob("*")
                                if p.is_file()} == {p.name for p in files}
    catalogue = load_catalogue(tmp_path / "catalogue")
    assert list(catalogue.definitions) == [NAME]
    assert [s.name for s in catalogue.solutions] == [f"{NAME}__add"]
    db = TraceDB.open(tmp_path / "db", create=True)
    assert install(db, catalogue) == (1, 1)

    def engine_scale(x: torch.Tensor) -> torch.Tensor:  # a closure: not a candidate itself
        return x * 2.0

    scale = fib.apply(NAME)(engine_scale)
    with fib.enable_capture(db):
        scale(torch.randn(8, 4))
    assert main(["retune", str(db.root), "--devices", "cpu", "--warmup", "1", "--iters", "5",
                 "--no-progress"]) == 0
    x = torch.randn(8, 4)
    with fib.enable_apply(db.root):
        assert torch.equal(scale(x), x + x)
        assert explain(NAME, {"batch_size": 8}).decision == f"{NAME}__add"
        stats = fib.stats()[NAME]
    assert stats["hits"] == 1 and stats["fallbacks"] == {}
