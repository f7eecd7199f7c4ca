"""Ranks agree: a 4-process gloo group where one rank's database differs, and where a reload
lands on one rank first, serves one choice per key on every rank (dispatch/ranks.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.dispatch.helpers import SCALE_CODE, make_db

REPO = Path(__file__).resolve().parents[2]
WORLD = 4


def test_four_ranks_serve_one_table_through_a_differing_database_and_a_one_rank_reload(
        tmp_path: Path):
    for rank in range(WORLD):
        # rank 2 measured `two` faster at 8; every other rank measured `one` faster
        fast, slow = ("two", "one") if rank == 2 else ("one", "two")
        make_db(tmp_path / f"db{rank}", {"one": SCALE_CODE.format(tag=1),
                                          "two": SCALE_CODE.format(tag=2)},
                [(fast, 8, 0.010, "cpu"), (slow, 8, 0.020, "cpu"),
                 ("one", 32, 0.010, "cpu"), ("two", 32, 0.020, "cpu")])
    env = {**os.environ, "FIB_CACHE_PATH": str(tmp_path / "cache"), "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([sys.executable, "-m", "tests.dispatch.rank_worker", str(r),
                                 str(WORLD), str(tmp_path / "store"), str(tmp_path / f"db{r}"),
                                 str(tmp_path / f"out{r}.json")], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for r in range(WORLD)]
    for worker in workers:
        output, _ = worker.communicate(timeout=300)
        assert worker.returncode == 0, output
    phases = [json.loads((tmp_path / f"out{r}.json").read_text()) for r in range(WORLD)]
    # At enable rank 2 built another table: every rank serves rank 0's.
    assert [p["enable"] for p in phases] == [{"8": "one", "32": "one"}] * WORLD
    assert [p["unchanged_sync_reloaded"] for p in phases] == [False] * WORLD
    # Rank 1's database changed alone: every rank reloads at the sync, and serves rank 0's
    # table, which has not changed (rank 1 too, although its own would serve `two` at 32).
    assert [p["one_rank_changed_own_view"] for p in phases] == [False, True, False, False]
    assert [p["one_rank_changed_sync_reloaded"] for p in phases] == [True] * WORLD
    assert [p["one_rank_changed"] for p in phases] == [{"8": "one", "32": "one"}] * WORLD
    # Every rank's changed: the new choice at 32 everywhere, rank 2's own at 8 still not.
    assert [p["all_changed"] for p in phases] == [{"8": "one", "32": "two"}] * WORLD
    for p in phases:
        assert p["agreement"].get("failed", 0) == 0 and p["agreement"]["problem"] is None
        assert p["agreement"]["adopted"] == 3  # rank 2 differs at every load


def test_a_rank_that_cannot_agree_serves_the_originals_and_says_why(tmp_path: Path):
    """The exchange fails (here: no process group at all): the tables are dropped, so
    every call runs the engine's own function, and the group's stats say why."""
    from collections import Counter

    from fib_runtime.dispatch.ranks import RankGroup
    from fib_runtime.dispatch.runtime import Runtime

    make_db(tmp_path / "db", {"one": SCALE_CODE.format(tag=1)}, [("one", 8, 0.010, "cpu")])
    group = RankGroup.__new__(RankGroup)
    group.ranks, group.rank, group.leader, group.group = [0, 1], 0, 0, None
    group.agreement, group.last_problem = Counter(), None
    runtime = Runtime(tmp_path / "db", ranks=group)
    assert dict(runtime.tables) == {}
    stats = group.stats()
    assert stats["failed"] == 1 and stats["problem"]
    assert runtime.sync() is False  # nor can the ranks agree on a reload: nothing changes
