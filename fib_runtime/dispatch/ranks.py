"""One table across the ranks of a tensor-parallel group (`fib.enable_apply(..., ranks=...)`).

Each rank dispatches on its own; if two ranks of a group served different solutions for one
key (a trace one node has and another lacks, a reload landing on one rank first), their
outputs could differ and collectives would wait on the slowest. With a `RankGroup` the ranks
agree at every load:

- at enable and at each reload, every rank compiles (or reads) its tables as usual, then the
  ranks exchange a digest of them over a gloo group of fib-runtime's own (never the engine's
  NCCL group, whose streams it would disturb); when the digests differ, the lowest rank's
  tables (the served-table lines of dispatch/served.py) are broadcast and every rank serves
  those, counted in `agreement`;
- reloads happen only at `Runtime.sync()`, which the engine calls on every rank at the same
  point of its loop (between steps): the ranks tell each other whether their database
  changed, and all reload together when one did, so a hot reload switches every rank at
  that one point; the background watcher is off;
- a rank that cannot agree (a collective that fails or times out) serves the engine's own
  functions (empty tables) and says why in `agreement`.

Nothing of this runs on a hit: the served maps are built from the agreed tables as before.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from fib_runtime.dispatch.served import LazyTables, table_lines
from fib_runtime.dispatch.table import DefinitionTable

log = logging.getLogger("fib_runtime.dispatch")
TIMEOUT = timedelta(seconds=60)


class RankGroup:
    """The ranks of `group` (a torch.distributed process group; None: the whole world),
    agreeing over a gloo group of their own. Made on every rank of the world at the same
    point (torch.distributed.new_group is collective)."""

    def __init__(self, group: Any = None, timeout: timedelta = TIMEOUT) -> None:
        import torch.distributed as dist

        ranks = sorted(dist.get_process_group_ranks(group)) if group is not None \
            else list(range(dist.get_world_size()))
        self.ranks = ranks
        self.leader = ranks[0]
        self.rank = dist.get_rank()
        self.group = dist.new_group(ranks, backend="gloo", timeout=timeout)
        self.agreement: Counter[str] = Counter()  # agreed | adopted | failed
        self.last_problem: str | None = None

    def agree(self, tables: Mapping[str, DefinitionTable]) -> Mapping[str, DefinitionTable]:
        """The tables every rank of the group serves: these when all ranks built the same,
        else the lowest rank's; empty (the originals) when the ranks cannot agree."""
        import torch.distributed as dist

        try:
            lines = table_lines(tables)
            digest = _digest(lines)
            digests: list[Any] = [None] * len(self.ranks)
            dist.all_gather_object(digests, digest, group=self.group)
            if len(set(digests)) == 1:
                self.agreement["agreed"] += 1
                return tables
            box = [lines if self.rank == self.leader else None]
            dist.broadcast_object_list(box, src=self.leader, group=self.group)
            self.agreement["adopted"] += 1
            if digest != digests[0]:
                log.warning("rank %d: its decision tables differ from rank %d's; serving "
                            "rank %d's", self.rank, self.leader, self.leader)
            return LazyTables(box[0])
        except Exception as exc:  # a rank that cannot agree serves the originals
            self.agreement["failed"] += 1
            self.last_problem = f"{type(exc).__name__}: {exc}"
            log.error("rank %d could not agree on decision tables (%s); serving the "
                      "original functions", self.rank, self.last_problem)
            return {}

    def any_changed(self, changed: bool) -> bool:
        """Whether the database of any rank changed (every rank calls this together)."""
        import torch.distributed as dist

        flags: list[Any] = [None] * len(self.ranks)
        dist.all_gather_object(flags, bool(changed), group=self.group)
        return any(flags)

    def stats(self) -> dict[str, Any]:
        return {"ranks": self.ranks, "leader": self.leader, **dict(self.agreement),
                "problem": self.last_problem}


def _digest(lines: Mapping[str, bytes]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(lines):
        h.update(name.encode() + b"\0" + lines[name] + b"\n")
    return h.hexdigest()
