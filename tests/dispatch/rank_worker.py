"""One rank of tests/dispatch/test_ranks.py, a process of a gloo group:

    python -m tests.dispatch.rank_worker RANK WORLD STORE_FILE DB OUT_JSON

Serves DB with a RankGroup and writes, per phase, the solution it serves at each key: after
enable; after a reload that landed on rank 1 only (its database changed, then every rank
called sync); after every rank's database changed the same way."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist

from fib_runtime.dispatch.ranks import RankGroup
from fib_runtime.dispatch.runtime import Runtime
from fib_runtime.schema import Trace
from fib_runtime.store import TraceDB
from tests.factories import trace


def served(runtime: Runtime) -> dict[str, str]:
    rankings = runtime.tables["toy_norm_h8"].for_timing("device")
    return {str(key[0]): ranking.names[0] for key, ranking in sorted(rankings.items())}


def two_wins_at_32(root: Path) -> None:
    TraceDB.open(root).append_traces([Trace.from_dict(trace(
        solution="two", batch=32, latency=0.001, hardware="cpu")) for _ in range(2)])


def main() -> None:
    rank, world = int(sys.argv[1]), int(sys.argv[2])
    store, root, out = Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5])
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=world)
    group = RankGroup()
    runtime = Runtime(root, ranks=group)
    phases: dict[str, object] = {"enable": served(runtime)}
    phases["unchanged_sync_reloaded"] = runtime.sync()
    dist.barrier()
    if rank == 1:
        two_wins_at_32(root)
    dist.barrier()
    phases["one_rank_changed_own_view"] = runtime.changed()
    phases["one_rank_changed_sync_reloaded"] = runtime.sync()
    phases["one_rank_changed"] = served(runtime)
    dist.barrier()
    if rank != 1:
        two_wins_at_32(root)
    dist.barrier()
    runtime.sync()
    phases["all_changed"] = served(runtime)
    phases["agreement"] = group.stats()
    out.write_text(json.dumps(phases))
    runtime.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
