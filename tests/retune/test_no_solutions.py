"""A database captured into without the catalogue holds workloads and the recorded original,
and no solution to compare it with: retune says what to run (`fib catalogue install DB`)
instead of a table of one candidate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fib_runtime as fib
from fib_runtime.catalogue import AUTHOR
from fib_runtime.cli.main import main
from fib_runtime.schema import Status
from fib_runtime.store import TraceDB
from tests.retune.helpers import make_db

RETUNE = ["--iters", "1", "--warmup", "0", "--no-progress", "--devices", "cpu"]


@fib.apply("rmsnorm_h4096")
def norm(hidden_states: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    x = hidden_states.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
    return (x * weight.float()).to(hidden_states.dtype)


def test_capture_then_retune_says_to_install_the_catalogue(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "db"
    with fib.enable_capture(db, {"flush_interval_s": 3600}):
        for batch in (1, 3):
            norm(torch.randn(batch, 4096).bfloat16(), torch.ones(4096).bfloat16())
    assert main(["retune", str(db), *RETUNE]) == 0
    out = capsys.readouterr().out
    assert (f"note: rmsnorm_h4096: {db} holds no solution for it but the original, so "
            f"retune has nothing to compare it with: `fib catalogue install {db}` adds the "
            "shipped solutions; then retune again") in out

    assert main(["catalogue", "install", str(db)]) == 0
    assert main(["retune", str(db), "--definition", "rmsnorm_h4096", *RETUNE]) == 0
    out = capsys.readouterr().out
    assert "fib catalogue install" not in out
    # The shipped CPU solutions were measured on both workloads and passed. (Capture records
    # the original of every decorated rmsnorm_h4096 in this process, so those are not counted.)
    loaded = TraceDB.open(db)
    measured = {(t.solution, t.workload.axes["batch_size"]) for t in loaded.traces_for(
        "rmsnorm_h4096") if t.evaluation.status is Status.PASSED
        and loaded.solutions[t.solution].author == AUTHOR}
    assert {b for _, b in measured} == {1, 3} and len(measured) >= 2, out


def test_a_definition_of_ones_own_says_to_add_a_solution(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = make_db(tmp_path / "db", {})  # a toy definition with workloads, no solution at all
    assert main(["retune", str(db.root), *RETUNE]) == 0
    assert (f"note: toy_norm_h8: {db.root} holds no solution for it, and the built-in "
            "catalogue has none: add one (`TraceDB.add_solution`); then retune again"
            ) in capsys.readouterr().out
