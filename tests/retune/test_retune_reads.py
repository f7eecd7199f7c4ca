"""A retune given a database path reads its traces one definition and hardware key at a
time (the plan's "measured already" and the summary), never the whole database at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from fib_runtime.retuning import retune
from fib_runtime.store import TraceDB
from tests.retune.helpers import DEF, SOLUTIONS, make_db

FAST = {"warmup": 1, "iters": 3, "progress": False, "devices": "cpu"}


def test_a_resumed_retune_holds_no_stored_trace(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))
    db = make_db(tmp_path / "db", {n: SOLUTIONS[n] for n in ("good", "wrong_value")},
                 batches=(2, 3))
    first = retune(db, **FAST)
    assert len(first.outcomes) == 4
    held: dict[int, int] = {}  # per TraceDB: the most traces its indexes held
    read: list[tuple[int, str, int]] = []
    index, stored = TraceDB._index_trace, TraceDB.stored_traces

    def counting(self: TraceDB, trace) -> None:
        index(self, trace)
        held[id(self)] = max(held.get(id(self), 0), self.records_held()[1])

    def reading(self: TraceDB, definition: str, hardware: str, *args) -> list:
        found = stored(self, definition, hardware, *args)
        read.append((id(self), definition, len(found)))
        return found

    monkeypatch.setattr(TraceDB, "_index_trace", counting)
    monkeypatch.setattr(TraceDB, "stored_traces", reading)
    again = retune(db.root, **FAST)  # a later process, given the path
    assert again.outcomes == [] and again.skipped == 4  # what is stored was read
    [retunes_db] = {i for i, _, _ in read}
    assert held.get(retunes_db, 0) == 0  # and never held by retune's database
    assert {(d, n) for _, d, n in read} == {(DEF, 4)}  # read per definition and key
    assert again.table() == retune(TraceDB.open(db.root), **FAST).table()
