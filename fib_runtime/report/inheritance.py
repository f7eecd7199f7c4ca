"""What inheriting another GPU model's rankings costs, measured where both exist (`fib
report`): per definition and pair of GPU models of one architecture, at the keys both
measured, the sibling's winner timed here over this GPU's own fastest."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fib_runtime.hardware import arch_of_key
from fib_runtime.keys import Key
from fib_runtime.ranking import DEVICE, rank
from fib_runtime.render import render_table
from fib_runtime.store import TraceDB


@dataclass(frozen=True)
class Penalty:
    """`here` serving `sibling`'s winners at the `keys` both measured (device time)."""

    definition: str
    here: str
    sibling: str
    keys: int
    geomean: float  # the sibling's winner's latency here over the fastest here
    worst: float
    worst_key: Key


def inheritance_penalties(db: TraceDB, names: list[str] | None = None) -> list[Penalty]:
    """Every same-architecture pair of GPU models with keys measured on both (one definition
    read at a time: `TraceDB.each_definition`)."""
    wanted = set(names) if names else None
    penalties = []
    for name in db.each_definition():
        definition = db.definitions.get(name)
        if definition is None or (wanted is not None and name not in wanted):
            continue
        models = [k for k in db.hardware_keys(name) if arch_of_key(k) is not None]
        ranked = {k: rank(definition, db.traces_for(name, k), db.solutions, k, timing=DEVICE)
                  for k in models}
        for here in models:
            own = ranked[here]
            for sibling in models:
                if sibling == here or arch_of_key(sibling) != arch_of_key(here):
                    continue
                ratios: dict[Key, float] = {}
                for key, theirs in ranked[sibling].items():
                    mine = own.get(key)
                    if mine is None or not mine.ranking.names or not theirs.ranking.names:
                        continue
                    latency = dict(zip(mine.ranking.names, mine.ranking.latencies_ms,
                                       strict=True)).get(theirs.ranking.names[0])
                    if latency is not None and mine.ranking.latencies_ms[0] > 0:
                        ratios[key] = latency / mine.ranking.latencies_ms[0]
                if ratios:
                    worst = max(ratios, key=ratios.__getitem__)
                    geomean = math.exp(sum(map(math.log, ratios.values())) / len(ratios))
                    penalties.append(Penalty(name, here, sibling, len(ratios), geomean,
                                             ratios[worst], worst))
    return penalties


def penalty_table(penalties: list[Penalty]) -> str:
    rows = [[p.definition, p.here, p.sibling, p.keys, f"{p.geomean:.3f}x", f"{p.worst:.3f}x",
             str(p.worst_key)] for p in penalties]
    return "inheritance: another GPU model's winners timed here, over the fastest here " \
        "(device time, keys both measured)\n" + render_table(
            ["definition", "GPU", "inheriting from", "keys", "geomean", "worst", "worst at"],
            rows)
