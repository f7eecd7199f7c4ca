"""Traffic-weighted retune: capture counts each key's calls beside the records, a budgeted
retune measures the most-called keys first and the next one resumes, and the summary says
how much of the captured traffic the measured keys cover."""

from __future__ import annotations

from pathlib import Path

import pytest

from fib_runtime.capture import disable_capture, enable_capture
from fib_runtime.hardware import current_hardware
from fib_runtime.original import ORIGINAL_AUTHOR
from fib_runtime.retuning import plan as plan_module
from fib_runtime.retuning import retune
from fib_runtime.retuning.plan import trusted_only, workload_tasks
from fib_runtime.retuning.traffic import by_traffic, coverage
from fib_runtime.schema import Definition, Solution, Trace
from fib_runtime.store import TraceDB, append_traffic, read_traffic
from tests import factories
from tests.retune.helpers import DEF, SOLUTIONS, make_db

FAST = {"warmup": 1, "iters": 3, "progress": False, "devices": "cpu"}
CALLS = {1: 5, 2: 400, 3: 1, 4: 90}  # batch -> captured calls


def test_capture_appends_each_keys_calls_at_every_flush(tmp_path: Path) -> None:
    db = TraceDB.open(tmp_path / "db", create=True)
    db.add_definition(Definition.from_dict(factories.definition()))
    try:
        session = enable_capture(db, {"flush_interval_s": 3600})
        record = session.recorder_for(DEF)
        for batch, n in ((4, 10), (8, 3)):
            for _ in range(n):
                record((batch,), ())
        session.flush()
        hardware = current_hardware().key
        assert read_traffic(db.root, db.definitions[DEF]) == {(hardware, (4,)): 10,
                                                               (hardware, (8,)): 3}
        for _ in range(5):
            record((4,), ())
        session.flush()
        session.flush()  # nothing new: nothing appended
        assert read_traffic(db.root, db.definitions[DEF]) == {(hardware, (4,)): 15,
                                                               (hardware, (8,)): 3}
        assert session.stats()["definitions"][DEF]["seen"] == 18
    finally:
        disable_capture()
    # Beside the records: the decisions' fingerprint and the trace files do not see them.
    assert (db.root / ".fib" / "traffic" / f"{DEF}.jsonl").is_file()


@pytest.fixture
def busy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TraceDB:
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))
    db = make_db(tmp_path / "db", {"good": SOLUTIONS["good"]}, batches=tuple(CALLS))
    append_traffic(db.root, db.definitions[DEF], "CPU", {(b,): n for b, n in CALLS.items()})
    return db


def test_work_is_ordered_by_calls_times_the_expected_gain(busy: TraceDB) -> None:
    items, _ = trusted_only(busy, workload_tasks(busy, None, None))
    key = current_hardware().key
    order = [dict(i.workload.workload.axes)["batch_size"]
             for i in by_traffic(busy, items, key)]
    assert order == [2, 4, 1, 3]
    # Measured: the original 100x slower than the best at batch 1, as fast at batch 4. Batch
    # 1's 5 calls now weigh 500, ahead of batch 2's 400 (whose nearest measured key, 4,
    # promises no gain); batch 3 is nearest to 4 too.
    hardware = current_hardware().name
    busy.add_solution(factories_original())
    busy.append_traces([Trace.from_dict(t) for t in (
        factories.trace(DEF, "good", 1, latency=0.001, hardware=hardware),
        factories.trace(DEF, ORIGINAL, 1, latency=0.100, hardware=hardware),
        factories.trace(DEF, "good", 4, latency=0.010, hardware=hardware),
        factories.trace(DEF, ORIGINAL, 4, latency=0.010, hardware=hardware))])
    fresh = TraceDB.open(busy.root, traces=False)  # as retune opens it: traces read per key
    items, _ = trusted_only(fresh, workload_tasks(fresh, None, None))
    order = [dict(i.workload.workload.axes)["batch_size"]
             for i in by_traffic(fresh, items, key)]
    assert order == [1, 2, 4, 3]


ORIGINAL = f"{DEF}__original__engine.norm"


def factories_original() -> Solution:
    """A solution recorded as the engine's own function (what capture writes)."""
    data = factories.solution(ORIGINAL, DEF)
    data["author"] = ORIGINAL_AUTHOR
    return Solution.from_dict(data)


def test_a_budgeted_retune_measures_the_heavy_keys_first_and_the_next_resumes(
        busy: TraceDB, monkeypatch: pytest.MonkeyPatch) -> None:
    take = plan_module.Plan.take

    def budget_spent_after_two(self, item, info):  # the budget runs out after two workloads
        todo = take(self, item, info)
        if todo:
            self.taken = getattr(self, "taken", 0) + 1
            if self.taken == 2:
                self.deadline = 0.0
        return todo

    monkeypatch.setattr(plan_module.Plan, "take", budget_spent_after_two)
    first = retune(busy, budget=3600.0, **FAST)
    measured = {o.workload for o in first.outcomes}
    uuids = {dict(w.workload.axes)["batch_size"]: w.workload.uuid
             for w in busy.distinct_workloads(DEF)}
    assert measured == {uuids[2], uuids[4]}  # 400 and 90 calls: the heaviest two
    assert first.deferred == 2
    assert first.traffic == (490, 496)
    assert "captured calls whose key is measured here: 98.8% (490 of 496)" in first.table()
    monkeypatch.setattr(plan_module.Plan, "take", take)
    rest = retune(busy.root, **FAST)  # a path: opened without traces, as the CLI does
    assert {o.workload for o in rest.outcomes} == {uuids[1], uuids[3]}
    assert rest.skipped == 2 and rest.deferred == 0 and rest.traffic == (496, 496)
    assert coverage(TraceDB.open(busy.root, traces=False), [DEF],
                    [current_hardware().key]) == (496, 496)
