"""One ranking rule: the winner `fib retune` prints is the solution dispatch serves."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
import torch

import fib_runtime as fib
from fib_runtime.cli.main import main
from fib_runtime.hardware import current_hardware
from fib_runtime.keys import Key
from fib_runtime.ranking import rank
from fib_runtime.schema import Definition, Solution, Trace
from fib_runtime.store import TraceDB
from tests import factories
from tests.dispatch.helpers import SCALE_CODE

DEF = "toy_norm_h8"


def _trace(workload_id: str, solution: str | None, latency: float, hardware: str,
           status: str = "PASSED") -> Trace:
    data = factories.trace(DEF, solution or "", batch=4, latency=latency, hardware=hardware,
                           status=status)
    data["workload"]["uuid"] = workload_id
    if solution is None:
        data["solution"] = data["evaluation"] = None
    return Trace.from_dict(data)


@pytest.fixture
def skewed_db(tmp_path: Path) -> TraceDB:
    """Three workloads of one key. `spiky` is fastest on two and very slow on the third
    (median 1, mean 4); `steady` takes 2 on each (median and mean 2): the median says spiky,
    the mean says steady."""
    db = TraceDB.open(tmp_path / "db", create=True)
    db.add_definition(Definition.from_dict(factories.definition(DEF)))
    for name, tag in (("spiky", 1), ("steady", 2)):
        db.add_solution(Solution.from_dict(factories.solution(
            name, DEF, code=SCALE_CODE.format(tag=tag), hardware=("any",))))
    hardware = current_hardware().name
    workloads = [str(uuid.uuid4()) for _ in range(3)]
    db.append_workloads(_trace(w, None, 1.0, hardware) for w in workloads)
    db.append_traces([_trace(w, "spiky", latency, hardware)
                      for w, latency in zip(workloads, (1.0, 1.0, 10.0), strict=True)])
    db.append_traces([_trace(w, "steady", 2.0, hardware) for w in workloads])
    return db


def test_retune_prints_the_winner_dispatch_serves(skewed_db: TraceDB, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))
    assert main(["retune", str(skewed_db.root), "--devices", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "evaluated: 0 (none)" in out  # everything was measured already: nothing re-timed
    printed = re.search(r"batch_size=4\s+(\S+)", out)
    assert printed is not None, out
    with fib.enable_apply(skewed_db.root, {"check_interval_s": 0}):
        served = fib.explain(DEF, {"batch_size": 4})

        @fib.apply(DEF)
        def original(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
            return x * weight

        tag = float(original(torch.ones(4, 8), torch.ones(8))[0, 0]) - 1.0
    assert printed.group(1) == served.decision == "spiky"
    assert tag == 1.0  # the call really ran spiky


def test_a_solution_failing_on_one_workload_of_a_key_is_not_ranked_there(
        skewed_db: TraceDB) -> None:
    hardware = current_hardware().name
    workload = skewed_db.traces_for(DEF)[0].workload.uuid
    skewed_db.append_traces([_trace(workload, "spiky", 1.0, hardware, "INCORRECT_NUMERICAL")])
    fresh = TraceDB.open(skewed_db.root)
    results = rank(fresh.definitions[DEF], fresh.traces_for(DEF, current_hardware().key),
                   fresh.solutions, current_hardware().key)
    key: Key = (4,)
    assert results[key].ranking.names == ("steady",)
    assert results[key].rejected == {"spiky": "INCORRECT_NUMERICAL"}


def test_the_latest_trace_of_a_workload_supersedes(skewed_db: TraceDB) -> None:
    hardware = current_hardware().name
    for trace in skewed_db.traces_for(DEF):
        if trace.solution == "steady":
            skewed_db.append_traces([_trace(trace.workload.uuid, "steady", 0.5, hardware)])
    fresh = TraceDB.open(skewed_db.root)
    results = rank(fresh.definitions[DEF], fresh.traces_for(DEF), fresh.solutions,
                   current_hardware().key)
    assert results[(4,)].ranking.names == ("steady", "spiky")
    assert results[(4,)].ranking.latencies_ms == (0.5, 1.0)
