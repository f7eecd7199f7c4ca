"""Several workers share the work; the results do not depend on which worker ran what."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import pytest

import fib_runtime.retuning.executor as executor
from fib_runtime.retuning import resolve_devices, retune
from fib_runtime.retuning.worker import WorkerHandle
from fib_runtime.store import TraceDB
from tests.retune.helpers import DEF, SOLUTIONS, make_db

SLOW = """import time
import torch

def run(x, weight):
    time.sleep(0.03)
    return x * weight
"""


class CountingHandle(WorkerHandle):
    """A worker handle that counts the workloads it prepared."""

    made: ClassVar[list[CountingHandle]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prepared = 0
        CountingHandle.made.append(self)

    def request(self, kind: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.prepared += kind == "prepare"
        return super().request(kind, payload, timeout)


def test_two_workers_split_the_workloads_with_identical_results(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))
    db = make_db(tmp_path / "db", {"slow": (SLOW, False), "wrong_value": SOLUTIONS["wrong_value"]},
                 batches=(1, 2, 3, 4))
    fast = {"warmup": 1, "iters": 3, "progress": False}
    retune(db, devices="cpu", **fast)
    single = {(t.solution, t.workload.uuid): t.evaluation for t in db.traces_for(DEF)}

    monkeypatch.setattr(executor, "resolve_devices", lambda _devices: ["cpu", "cpu"])
    monkeypatch.setattr(executor, "WorkerHandle", CountingHandle)
    CountingHandle.made.clear()
    summary = retune(db, force=True, **fast)
    assert [h.prepared > 0 for h in CountingHandle.made] == [True, True]
    assert Counter((o.solution, o.workload) for o in summary.outcomes) == Counter(
        {key: 1 for key in single})
    latest = {(t.solution, t.workload.uuid): t.evaluation
              for t in TraceDB.open(db.root).traces_for(DEF)}
    for key, first in single.items():
        again = latest[key]
        assert again.status == first.status
        assert again.correctness == first.correctness  # the same inputs on every worker


def test_resolve_devices_on_a_cpu_machine() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only answers")
    assert resolve_devices(None) == ["cpu"] == resolve_devices("all") == resolve_devices("cpu")
