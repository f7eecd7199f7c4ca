"""Re-judge saved `bench_choice.py` runs offline (no GPU): is a miss the choice rule's, or
noise?

For saved runs of the same grid and held-out sizes, per definition and regime (goal: the
chosen candidate's time over the fastest's, geomean <= 1.03 and worst <= 1.10):

- `as run`: the run's own verdict (its dispatched choice, its own held-out timings);
- `cross`: run A's dispatched choices judged with run B's timings (the same choice, another
  process's measurement of it);
- `noise`: how much the same candidate's held-out time moves between two runs (median and
  worst of |log ratio|, as a ratio), the floor any judge of one run has;
- `old rule` / `new rule`: choices made by the ranking rule before and after the pooled
  tie-break (`fib_runtime.ranking.pooled`). Where a run saved its retune rankings
  (`retune.rankings`, bench_choice.py writes them), exactly: re-settled from them (device
  ranking included), judged with the run's own held-out timings. Otherwise simulated: the
  rule ranks run A's held-out timings as if they were measured (no spread known: the floor
  alone; no device time), at each size and, leaving it out, interpolated between its
  neighbours; judged with run B's timings.

    python3 benchmarks/rejudge_choice.py RUN.json [RUN.json ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, print_table

from fib_runtime.keys import Key
from fib_runtime.ranking import Candidate, Ranking, interpolated, nearest_key, settle

GOAL_GEOMEAN, GOAL_WORST = 1.03, 1.10
Times = dict[tuple[str, str, int], dict[str, float]]  # (definition, timing, size) -> times


def load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    data["name"] = path.stem
    return data


def size_of(axes: dict[str, int]) -> int:
    return next(iter(axes.values()))


def times_of(run: dict[str, Any]) -> Times:
    times: Times = defaultdict(dict)
    for row in run["held_out"]:
        times[(row["definition"], row["timing"], size_of(row["axes"]))][row["solution"]] = \
            row["latency_ms"]
    return times


def chosen_of(run: dict[str, Any]) -> dict[tuple[str, str, int], str]:
    return {(p["definition"], p["timing"], size_of(p["axes"])): p["chosen"]
            for p in run["points"]}


def ratio(times: dict[str, float], chosen: str) -> float | None:
    return times[chosen] / min(times.values()) if chosen in times and times else None


def verdict(ratios: Iterable[float | None]) -> dict[str, Any]:
    values = [r for r in ratios if r is not None]
    if not values:
        return {"geomean": math.nan, "worst": math.nan, "met": False}
    geomean = math.exp(statistics.fmean(math.log(v) for v in values))
    return {"geomean": geomean, "worst": max(values),
            "met": geomean <= GOAL_GEOMEAN and max(values) <= GOAL_WORST}


def judged(choices: dict[tuple[str, str, int], str], times: Times
           ) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (definition, timing): the verdict of `choices` against `times`, and the worst
    point."""
    by_group: dict[tuple[str, str], list[tuple[int, float | None, str]]] = defaultdict(list)
    for (name, timing, size), chosen in choices.items():
        if (name, timing, size) in times:
            by_group[(name, timing)].append((size, ratio(times[(name, timing, size)], chosen),
                                             chosen))
    out = {}
    for group, points in by_group.items():
        result = verdict(r for _, r, _ in points)
        worst = max(points, key=lambda p: p[1] or 0.0)
        result["worst_at"], result["worst_chosen"] = worst[0], short(worst[2])
        out[group] = result
    return out


def short(name: str) -> str:
    return "original" if "__original__" in name else name.split("__")[-1]


def rankings_from(times: Times, name: str, timing: str, sizes: Iterable[int],
                  pool: bool) -> dict[Key, Ranking]:
    """Settle each size's candidates from held-out timings as if measured (spread 0)."""
    cands = {(s,): [Candidate(n, t, 0.0, "__original__" in n)
                    for n, t in times[(name, timing, s)].items()]
             for s in sizes if (name, timing, s) in times}
    across = {k: {c.name: (c.median, c.spread) for c in cs} for k, cs in cands.items()}
    return {k: settle(cs, timing, None, across if pool else None) for k, cs in cands.items()}


def simulated(source: Times, pool: bool) -> dict[tuple[str, str, int], str]:
    """The rule's choice at every point of `source`: measured there (all sizes ranked), and
    held out (the size left out, interpolated between its neighbours, else the nearest);
    keyed by (definition, timing, size, how) flattened into the definition name."""
    choices = {}
    groups = {(n, t) for n, t, _ in source}
    for name, timing in groups:
        sizes = sorted(s for n, t, s in source if (n, t) == (name, timing))
        every = rankings_from(source, name, timing, sizes, pool)
        for size in sizes:
            choices[(name + " [measured]", timing, size)] = every[(size,)].names[0]
            rest = rankings_from(source, name, timing, [s for s in sizes if s != size], pool)
            between = interpolated(rest, (size,), timing, None, pool)
            if between is None:
                between = rest[nearest_key(rest, (size,))]  # type: ignore[index]
            choices[(name + " [held out]", timing, size)] = between.names[0]
    return choices


def relabelled(times: Times) -> Times:
    """`times` under both labels `simulated` gives its points."""
    out: Times = {}
    for (name, timing, size), value in times.items():
        for how in (" [measured]", " [held out]"):
            out[(name + how, timing, size)] = value
    return out


def exact(run: dict[str, Any], pool: bool) -> dict[tuple[str, str, int], str]:
    """The rule's choice at each held-out point, re-settled from the run's saved retune
    rankings (device ranking as the tie-break, as dispatch does)."""
    saved = run["retune"]["rankings"]
    choices = {}
    for point in run["points"]:
        name, timing, size = point["definition"], point["timing"], size_of(point["axes"])
        by_timing = saved.get(name, {})
        if timing not in by_timing:
            continue
        device = {tuple(r["key"]): dict(zip(r["names"], zip(r["latencies_ms"], r["spreads"],
                                                             strict=True), strict=True))
                  for r in by_timing.get("device", [])}
        cands = {tuple(r["key"]): [Candidate(n, lat, sp, n in r["originals"],
                                             *device.get(tuple(r["key"]), {}).get(n, (None,
                                                                                      0.0)))
                                   for n, lat, sp in zip(r["names"], r["latencies_ms"],
                                                         r["spreads"], strict=True)]
                 for r in by_timing[timing]}
        across = {k: {c.name: (c.median, c.spread) for c in cs} for k, cs in cands.items()}
        rankings = {k: settle(cs, timing, None, across if pool else None)
                    for k, cs in cands.items()}
        key = (size,)
        ranking = rankings.get(key) or interpolated(rankings, key, timing, None, pool) or \
            rankings[nearest_key(rankings, key)]  # type: ignore[index]
        choices[(name, timing, size)] = ranking.names[0]
    return choices


def noise_between(a: Times, b: Times) -> dict[str, float]:
    """How much one candidate's held-out time moves between two runs: the median and worst
    ratio (as >= 1), over every candidate and over the fastest of each point."""
    every, fastest = [], []
    for point, times in a.items():
        other = b.get(point, {})
        for name, value in times.items():
            if name in other:
                every.append(math.exp(abs(math.log(value / other[name]))))
        if times and other:
            best = min(times, key=times.__getitem__)
            if best in other:
                fastest.append(math.exp(abs(math.log(times[best] / other[best]))))
    return {"median": statistics.median(every), "worst": max(every),
            "fastest_median": statistics.median(fastest), "fastest_worst": max(fastest)}


def row(how: str, group: tuple[str, str], result: dict[str, Any]) -> list[Any]:
    return [how, group[0], group[1], f"{result['geomean']:.3f}", f"{result['worst']:.3f}",
            result["worst_at"], result["worst_chosen"], "yes" if result["met"] else "NO"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=RESULTS / "rejudge_choice.json")
    args = parser.parse_args()
    runs = [load(p) for p in args.runs]
    label = {r["name"]: f"r{i}" for i, r in enumerate(runs, 1)}
    times = {r["name"]: times_of(r) for r in runs}
    out: dict[str, Any] = {"runs": label, "rows": [], "noise": {}, "totals": []}
    rows = []

    def add(how: str, results: dict[tuple[str, str], dict[str, Any]]) -> None:
        for group in sorted(results):
            rows.append(row(how, group, results[group]))
            out["rows"].append({"judged": how, "definition": group[0], "timing": group[1],
                                **results[group]})
        met = sum(r["met"] for r in results.values())
        worst = max(results.values(), key=lambda r: r["worst"])
        out["totals"].append({"judged": how, "met": met, "of": len(results),
                              "worst": worst["worst"]})

    for run in runs:
        name = label[run["name"]]
        add(f"{name} as run", judged(chosen_of(run), times[run["name"]]))
        if "rankings" in run.get("retune", {}):
            for pool, rule in ((False, "old rule"), (True, "new rule")):
                choices = exact(run, pool)
                add(f"{name} {rule} (exact)", judged(choices, times[run["name"]]))
            same = sum(choices.get(point) == chosen for point, chosen in chosen_of(run).items())
            out["totals"][-1]["as_dispatched"] = f"{same}/{len(run['points'])}"
            print(f"{name}: the new rule re-settled agrees with dispatch's choice at "
                  f"{same} of {len(run['points'])} points")
    for a, b in itertools.permutations(runs, 2):
        pair = f"{label[a['name']]}->{label[b['name']]}"
        add(f"{pair} cross", judged(chosen_of(a), times[b["name"]]))
        for pool, rule in ((False, "old rule"), (True, "new rule")):
            add(f"{pair} {rule} (sim)", judged(simulated(times[a["name"]], pool),
                                               relabelled(times[b["name"]])))
        out["noise"][pair] = noise_between(times[a["name"]], times[b["name"]])
    for name, short_name in label.items():
        print(f"{short_name} = {name}")
    print_table(["judged", "definition", "timing", "geomean", "worst", "worst at", "chosen",
                 "goal"], rows)
    print_table(["judged", "goal met", "worst"],
                [[t["judged"], f"{t['met']}/{t['of']}", f"{t['worst']:.3f}"]
                 for t in out["totals"]])
    for pair, floor in out["noise"].items():
        print(f"noise {pair}: one candidate's held-out time moves by {floor['median']:.3f}x "
              f"(median), {floor['worst']:.3f}x (worst); the fastest's by "
              f"{floor['fastest_median']:.3f}x / {floor['fastest_worst']:.3f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
