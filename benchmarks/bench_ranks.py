"""GPU (issue 27): the Llama-3.1-8B decode layer (integration/flashinfer_decode_layer.py)
served by two processes on one GPU, each a rank of a gloo group, with rank agreement on
(`dispatch/ranks.py`), and the hit cost with agreement on and off in paired rounds.

1. Capture the layer's calls through the FlashInfer adapter and retune (eager, graph): rank
   0's database. Rank 1's is a copy that lacks the traces of one solution rank 0 serves at
   the first batch (a trace one node has and another lacks), so alone it serves another.
2. Two worker processes (this script with --worker), both on cuda:0, each serving with
   - `agreed`: its own database with a RankGroup (what ranks=... does);
   - `alone`: its own database without agreement (what each rank served before);
   - `same`: rank 0's database without agreement (the agreed table, no RankGroup),
   and per batch: the solution each serves per definition and regime, gathered from both
   ranks; a digest of the layer's output under each; the eager layer step (host wall time,
   both ranks share the GPU) and one routed call that hits a served solution (the layer's
   fused_add_rmsnorm, host-bound), `agreed` against `same` in paired rounds (the same
   table: the difference is the agreement alone).

    python3 benchmarks/bench_ranks.py [--batches 1 8] [--rounds 15]
Writes benchmarks/results/ranks.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parents[1]))  # integration/, after the package
from _common import RESULTS, print_table
from bench_step_graph import capture

import fib_runtime as fib
from fib_runtime.catalogue import install
from fib_runtime.dispatch import sites
from fib_runtime.dispatch.runtime import Runtime
from fib_runtime.retuning import RetuneConfig, retune
from fib_runtime.store import TraceDB
from integration.flashinfer_decode_layer import DEFINITIONS, Layer, op_axes

REGIMES = ("eager", "graph")


def without_a_winner(root: Path, copy: Path, batch: int, kv_len: int) -> str:
    """Copy `root` to `copy` without the traces of the first solution (not the fallback)
    that `root` serves at `batch`; the solution left out."""
    runtime = Runtime(root, fib.DispatchConfig(check_interval_s=0), watch=False)
    chosen = [d for d in served(runtime, batch, kv_len).values() if d != "fallback"]
    runtime.close()
    if not chosen:
        raise SystemExit(f"nothing but the fallback is served at batch {batch}")
    shutil.copytree(root, copy)
    for path in (copy / "traces").rglob("*.jsonl"):
        lines = path.read_bytes().splitlines(keepends=True)
        kept = [line for line in lines
                if not line.strip() or json.loads(line).get("solution") != chosen[0]]
        if len(kept) != len(lines):
            path.write_bytes(b"".join(kept))
    return chosen[0]


def served(runtime: Runtime, batch: int, kv_len: int) -> dict[str, str]:
    return {f"{name}/{regime}": fib.explain(name, op_axes(batch, kv_len)[name], runtime,
                                            regime).decision
            for name in DEFINITIONS for regime in REGIMES}


def output_digest(layer: Layer) -> str:
    layer.reset()
    out = layer.forward()
    torch.cuda.synchronize()
    return f"{out.float().sum().item():.6f}/{out.float().abs().max().item():.6f}"


def paired_us(modes: dict[str, Runtime], fn: Callable[[], Any], calls: int,
              rounds: int) -> dict[str, list[float]]:
    """Host wall time of `calls` calls of fn (then one sync) per mode, the two modes back to
    back in random order each round, in microseconds per call."""
    samples: dict[str, list[float]] = {m: [] for m in modes}
    rng = random.Random(0)
    for _ in range(rounds):
        order = list(modes)
        rng.shuffle(order)
        for mode in order:
            sites.set_runtime(modes[mode])
            for _ in range(20):
                fn()
            torch.cuda.synchronize()
            start = time.perf_counter_ns()
            for _ in range(calls):
                fn()
            torch.cuda.synchronize()
            samples[mode].append((time.perf_counter_ns() - start) / calls / 1e3)
    sites.set_runtime(None)
    return samples


def worker(rank: int, world: int, store: Path, roots: list[Path], out: Path,
           batches: list[int], kv_len: int, rounds: int) -> None:
    import flashinfer
    import torch.distributed as dist
    from fib_runtime.adapters import flashinfer as fi

    from fib_runtime.dispatch.ranks import RankGroup

    torch.cuda.set_device(0)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=world)
    fi.install()
    config = fib.DispatchConfig(check_interval_s=0)
    group = RankGroup()
    modes = {"agreed": Runtime(roots[rank], config, ranks=group),
             "alone": Runtime(roots[rank], config, watch=False),
             "same": Runtime(roots[0], config, watch=False)}
    report: dict[str, Any] = {"rank": rank, "agreement": group.stats(), "batches": {}}
    with torch.no_grad():
        for batch in batches:
            layer = Layer(batch, kv_len)
            layer.plan()
            row: dict[str, Any] = {"served": {}, "output": {}}
            for mode, runtime in modes.items():
                row["served"][mode] = served(runtime, batch, kv_len)
                sites.set_runtime(runtime)
                row["output"][mode] = output_digest(layer)
            sites.set_runtime(None)
            timed = {m: modes[m] for m in ("agreed", "same")}
            layer.reset()
            row["step_us"] = paired_us(timed, layer.forward, 50, rounds)
            x, r, w = (torch.randn(*shape, device="cuda", dtype=torch.bfloat16)
                       for shape in ((batch, 4096), (batch, 4096), (4096,)))
            row["norm_us"] = paired_us(
                timed, partial(flashinfer.norm.fused_add_rmsnorm, x, r, w, 1e-5), 200, rounds)
            report["batches"][str(batch)] = row
    report["agreement_after"] = group.stats()
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, report, group=group.group)
    if rank == 0:
        out.write_text(json.dumps(gathered))
    for runtime in modes.values():
        runtime.close()
    dist.destroy_process_group()


def summarise(ranks: list[dict[str, Any]], batches: list[int]) -> list[dict[str, Any]]:
    rows = []
    for batch in batches:
        per = [r["batches"][str(batch)] for r in ranks]
        row: dict[str, Any] = {"batch": batch}
        for mode in ("agreed", "alone"):
            row[f"{mode}_same_choice"] = per[0]["served"][mode] == per[1]["served"][mode]
            row[f"{mode}_same_output"] = per[0]["output"][mode] == per[1]["output"][mode]
        row["differing_alone"] = sorted(k for k in per[0]["served"]["alone"]
                                        if per[0]["served"]["alone"][k]
                                        != per[1]["served"]["alone"][k])
        for what in ("step_us", "norm_us"):
            for r, p in enumerate(per):
                a, s = p[what]["agreed"], p[what]["same"]
                row[f"{what}_rank{r}"] = {
                    "agreed": statistics.median(a), "same": statistics.median(s),
                    "diff": statistics.median(x - y for x, y in zip(a, s, strict=True))}
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--kv-len", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=RESULTS / "ranks.json")
    parser.add_argument("--worker", nargs=4, metavar=("RANK", "STORE", "ROOTS", "OUT"))
    args = parser.parse_args()
    if args.worker:
        rank, store, roots, out = args.worker
        worker(int(rank), 2, Path(store), [Path(r) for r in roots.split(",")], Path(out),
               args.batches, args.kv_len, args.rounds)
        return
    base = Path(tempfile.mkdtemp(prefix="fib-ranks-"))
    roots = [base / "rank0", base / "rank1"]
    install(TraceDB.open(roots[0], create=True))
    capture(roots[0], args.batches, args.kv_len)
    retune(roots[0], definitions=list(DEFINITIONS), warmup=3, iters=20, progress=False,
           config=RetuneConfig(timings=REGIMES))
    dropped = without_a_winner(roots[0], roots[1], args.batches[0], args.kv_len)
    gathered = base / "gathered.json"
    env = dict(os.environ)
    procs = [subprocess.Popen(
        [sys.executable, __file__, "--batches", *map(str, args.batches), "--kv-len",
         str(args.kv_len), "--rounds", str(args.rounds), "--worker", str(rank),
         str(base / "store"), ",".join(map(str, roots)), str(gathered)], env=env)
        for rank in range(2)]
    codes = [p.wait(timeout=900) for p in procs]
    if any(codes):
        raise SystemExit(f"workers exited {codes}")
    ranks = json.loads(gathered.read_text())
    rows = summarise(ranks, args.batches)
    print(f"rank 1's database lacks the traces of {dropped}")
    print("agreement:", [r["agreement_after"] for r in ranks])
    print_table(["batch", "same choice agreed/alone", "same output agreed/alone",
                 "differ alone", "rank", "step us agreed", "same", "diff",
                 "norm us agreed", "same", "diff"],
                [[r["batch"], f"{r['agreed_same_choice']}/{r['alone_same_choice']}",
                  f"{r['agreed_same_output']}/{r['alone_same_output']}",
                  len(r["differing_alone"]), k,
                  f"{r[f'step_us_rank{k}']['agreed']:.2f}", f"{r[f'step_us_rank{k}']['same']:.2f}",
                  f"{r[f'step_us_rank{k}']['diff']:+.2f}",
                  f"{r[f'norm_us_rank{k}']['agreed']:.2f}",
                  f"{r[f'norm_us_rank{k}']['same']:.2f}",
                  f"{r[f'norm_us_rank{k}']['diff']:+.2f}"]
                 for r in rows for k in (0, 1)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "dropped": dropped,
                                    "rows": rows, "ranks": ranks}, indent=2) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
