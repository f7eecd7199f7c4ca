"""GQA prefill attention (ragged, paged ps1 / ps16) and MLA decode / prefill: our Triton kernels
against FlashInfer's own wrappers, on the official workloads' shapes and on serving mixes.

The official workloads' index tensors are not published: they are generated from each
workload's axes as `fib retune` does (fib_runtime.measure.inputs), the KV pool capped at
max(num_kv_indices, 32768) pages (pages no index names are never read). FlashInfer is timed
through the catalogue's flashinfer_prefill / flashinfer_mla solutions, whose plan() runs once
per workload (not in the timed call). Each cell: Triton's output checked against FlashInfer's
with retune's tolerances, then every variant timed with triton.testing.do_bench (median, L2
flushed), the variants interleaved over --rounds rounds (median of the rounds). Prints a table
and writes benchmarks/results/prefill_attention_<gpu>[_<only>].json (or into --out), after
every cell: per cell the latencies, TFLOP/s of the work, and Triton / FlashInfer throughput
(goal >= 0.80). With --variants, each MLA cell also times named Triton launch
configurations and split rules (MLA_VARIANTS; each checked against FlashInfer), and the summary
tells per variant and for the best variant of each cell how many cells reach 0.80.

    python3 benchmarks/bench_prefill_attention.py [--out DIR] [--rounds 2] [--configs]
        [--only official|mla|grid] [--limit N] [--variants]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

import torch
import triton
import triton.testing

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "definitions"))
from catalogue_cases import DEFINITIONS, entry, import_file, solution_file  # noqa: E402

from fib_runtime.measure.compare import check_outputs  # noqa: E402
from fib_runtime.measure.inputs import materialise  # noqa: E402
from fib_runtime.schema import Workload  # noqa: E402

TRACE = REPO.parent / "shared" / "flashinfer-trace"
OFFICIAL = [f"gqa_ragged_prefill_causal_h32_kv{kv}_d128" for kv in (8, 4)] + \
    [f"gqa_paged_prefill_causal_h32_kv{kv}_d128_ps1" for kv in (8, 4)]
ALL = OFFICIAL + [f"gqa_paged_prefill_causal_h32_kv{kv}_d128_ps16" for kv in (8, 4)]
MLA = ["mla_paged_decode_h16_ckv512_kpe64_ps1", "mla_paged_prefill_causal_h16_ckv512_kpe64_ps1"]
# (sequences, queries each, cached prefix each): fresh prompts and appends over a prefix
GRID = [(1, 2048, 0), (1, 8192, 0), (4, 512, 0), (16, 128, 0), (8, 1024, 0), (2, 512, 4096),
        (32, 64, 1024)]
TORCH_MAX_Q = 2048  # the per-sequence torch baseline only where it finishes in a few ms
POOL_PAGES = 32768
DEVICE = "cuda"


def gpu_key(name: str) -> str:
    return name.replace("NVIDIA", "").split()[0].lower()


def official_cells(names: list[str], limit: int = 0) -> list[tuple[str, dict]]:
    """(name, axes) of the official workloads of `names`; with `limit`, at most that many a
    name, spread evenly over the workloads ordered by size."""
    cells = []
    for name in names:
        op_type = name.split("_prefill")[0].split("_decode")[0]
        path = TRACE / "workloads" / op_type / f"{name}.jsonl"
        if not path.exists():
            print(f"skipped {name}: {path} not found")
            continue
        found = []
        for line in path.read_text().splitlines():
            axes = dict(json.loads(line)["workload"]["axes"])
            if "num_pages" in axes:
                axes["num_pages"] = min(axes["num_pages"], max(axes["num_kv_indices"], POOL_PAGES))
            if axes not in found:
                found.append(axes)
        found.sort(key=lambda a: (a.get("total_q", 0), a.get("num_kv_indices", 0)))
        if limit and len(found) > limit:
            found = [found[round(i * (len(found) - 1) / (limit - 1))] for i in range(limit)] \
                if limit > 1 else found[-1:]
        cells += [(name, axes) for axes in found]
    return cells


def grid_inputs(name: str, batch: int, queries: int, prefix: int) -> list:
    """Inputs of one grid cell: `batch` sequences of `queries` new tokens over `prefix`."""
    gen = torch.Generator(device=DEVICE).manual_seed(batch * 7919 + queries + prefix)
    kv_heads = int(name.split("_kv")[1].split("_")[0])
    kv_len = queries + prefix

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen, device=DEVICE).bfloat16()

    qo = torch.arange(batch + 1, dtype=torch.int32, device=DEVICE) * queries
    q = randn(batch * queries, 32, 128)
    scale = 1 / math.sqrt(128)
    if "ragged" in name:
        kv = torch.arange(batch + 1, dtype=torch.int32, device=DEVICE) * kv_len
        return [q, randn(batch * kv_len, kv_heads, 128), randn(batch * kv_len, kv_heads, 128),
                qo, kv, scale]
    page_size = int(name.split("_ps")[1])
    pages = math.ceil(kv_len / page_size)
    pool = batch * pages + 64
    indices = torch.randperm(pool, device=DEVICE)[:batch * pages].to(torch.int32)
    args = [q, randn(pool, page_size, kv_heads, 128), randn(pool, page_size, kv_heads, 128), qo,
            torch.arange(batch + 1, dtype=torch.int32, device=DEVICE) * pages, indices]
    if page_size > 1:
        last = kv_len - (pages - 1) * page_size
        args.append(torch.full((batch,), last, dtype=torch.int32, device=DEVICE))
    return [*args, scale]


def official_inputs(name: str, axes: dict) -> list:
    definition = DEFINITIONS[name]
    inputs = {n: {"type": "random"} for n in definition.inputs if n != "sm_scale"}
    head = 192 if name.startswith("mla") else 128  # MLA: the head size before absorption
    inputs["sm_scale"] = {"type": "scalar", "value": 1 / math.sqrt(head)}
    workload = Workload.from_dict({"uuid": str(uuid.uuid4()), "axes": axes, "inputs": inputs})
    return materialise(definition, workload, device=DEVICE, alternates=0).args


def causal_flops(name: str, args: list) -> float:
    """The multiply-adds x 2 of the (query, key) pairs a causal prefill (or decode) computes:
    4 * heads * head_dim per pair for GQA, 2 * 16 * (576 + 512) for MLA."""
    if name.startswith("mla"):
        kv = args[5 if "prefill" in name else 4].tolist()
        qo = args[4].tolist() if "prefill" in name else list(range(len(kv)))
        pairs = sum(_pairs(qo[i + 1] - qo[i], kv[i + 1] - kv[i]) for i in range(len(kv) - 1))
        return 2.0 * 16 * (576 + 512) * pairs
    qo = args[3].tolist()
    kv = args[4].tolist()
    if "ragged" in name:
        kv_lens = [b - a for a, b in itertools.pairwise(kv)]
    else:
        page_size = args[1].shape[1]
        last = args[6].tolist() if page_size > 1 else None
        kv_lens = [(b - a - 1) * page_size + last[i] if last and b > a else b - a
                   for i, (a, b) in enumerate(itertools.pairwise(kv))]
    pairs = sum(_pairs(qo[i + 1] - qo[i], k) for i, k in enumerate(kv_lens))
    return 4.0 * 32 * 128 * pairs


def _pairs(n: int, k: int) -> int:
    """(query, key) pairs of n causal queries over k keys: query j sees j + 1 + k - n keys,
    none for the first n - k."""
    blind = max(0, n - k)
    return (blind + 1 + k - n + k) * (n - blind) // 2


def _mla_config(block_t: int, block_n: int, warps: int, stages: int | None = None,
                split: int = 2, min_chunk: int = 64) -> dict:
    return {"block_t": block_t, "block_n": block_n, "num_warps": warps, "num_stages": stages,
            "split": split, "min_chunk": min_chunk}


# name -> Config fields of the MLA Triton solution (definitions/mla_paged/solutions/triton_mla.py)
MLA_VARIANTS = {
    "decode": {
        "n32w8s2": _mla_config(1, 32, 8, 2),
        "n32w8s3": _mla_config(1, 32, 8, 3),
        "n64w8": _mla_config(1, 64, 8),
        "n16w8": _mla_config(1, 16, 8),
        "n32w4": _mla_config(1, 32, 4),
        "1_a_sm": _mla_config(1, 32, 8, split=1),
        "4_a_sm": _mla_config(1, 32, 8, split=4),
        "chunk32": _mla_config(1, 32, 8, min_chunk=32),
        "chunk128": _mla_config(1, 32, 8, min_chunk=128),
    },
    "prefill": {
        "t1n32w8": _mla_config(1, 32, 8),
        "t2n32w4": _mla_config(2, 32, 4),
        "t2n32w8": _mla_config(2, 32, 8),
        "t2n64w8s2": _mla_config(2, 64, 8, 2),
        "t4n32w8s2": _mla_config(4, 32, 8, 2),
        "t4n32w8s3": _mla_config(4, 32, 8, 3),
        "t4n16w8s3": _mla_config(4, 16, 8, 3),
        "t4n64w8s1": _mla_config(4, 64, 8, 1),
        "t2n32w8_4_a_sm": _mla_config(2, 32, 8, split=4),
        "t2n32w8_chunk32": _mla_config(2, 32, 8, min_chunk=32),
    },
}


def mla_batch(name: str, args: list) -> int:
    """Sequences of an MLA call (kv_indptr's length - 1)."""
    return args[5 if "prefill" in name else 4].shape[0] - 1


def mla_variants(name: str, args: list) -> dict:
    """Callables of the MLA Triton solution under each named configuration, plus the launch
    of the code before issue 25 (4 warps, prefill in unsplit 2-token blocks, decode split
    evenly per sequence by the old rule: `old_*`; today's kernels otherwise)."""
    module = import_file(solution_file(f"{name}__triton_mla"))
    configs = {n: module.Config(**c) for n, c in MLA_VARIANTS[
        "prefill" if "prefill" in name else "decode"].items()}
    if "prefill" in name:
        run = module.prefill
        old = module.Config(block_t=2, block_n=32, num_warps=4)
        found = {"old_unsplit": lambda: module.attend(*args, old, 1)}
    else:
        run = module.decode
        batch, total = args[0].shape[0], args[5].shape[0]
        wanted = min(triton.cdiv(2 * module._num_sms(args[0].device), batch), 32)
        splits = max(1, min(wanted, math.ceil(total / batch / 64)))
        old = module.Config(block_t=1, block_n=32, num_warps=4)
        found = {"old_uniform_splits": lambda: module.attend(*args[:4], None, *args[4:], old,
                                                             splits)}
    for label, config in configs.items():
        found[label] = lambda c=config: run(*args, c)
    return found


def time_rounds(variants: dict, rounds: int) -> dict[str, float]:
    """Median over rounds of each variant's do_bench median (µs), variants interleaved."""
    samples: dict[str, list[float]] = {n: [] for n in variants}
    order = list(variants)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            ms = triton.testing.do_bench(variants[name], warmup=5, rep=20, return_mode="median")
            samples[name].append(ms * 1e3)
    return {n: round(statistics.median(v), 2) for n, v in samples.items()}


def bench_cell(name: str, label: str, args: list, rounds: int, configs: bool,
               mla_sweep: bool = False) -> dict:
    kind = "mla" if name.startswith("mla") else "prefill"
    triton_run = entry(f"{name}__triton_{kind}")
    fi_run = entry(f"{name}__flashinfer_{kind}")
    want = fi_run(*args)
    got = triton_run(*args)
    check = check_outputs(DEFINITIONS[name], got, want)
    variants = {"triton": lambda: triton_run(*args), "flashinfer": lambda: fi_run(*args)}
    checks = {}
    if mla_sweep and kind == "mla":
        for label_, run in mla_variants(name, args).items():
            try:  # a configuration this Triton cannot compile must not lose the cell
                checks[label_] = check_outputs(DEFINITIONS[name], run(), want).status.value
            except Exception as exc:
                checks[label_] = f"ERROR {type(exc).__name__}: {str(exc)[:160]}"
            else:
                variants[label_] = run
    elif args[0].shape[0] <= TORCH_MAX_Q:
        torch_run = entry(f"{name}__torch_{kind}")
        variants["torch"] = lambda: torch_run(*args)
    if configs and kind == "prefill":
        module = import_file(solution_file(f"{name}__triton_prefill"))
        group = 32 // int(name.split("_kv")[1].split("_")[0])
        paged = "ragged" not in name
        k, v = args[1], args[2]
        indices = args[5] if paged else None
        last = args[6] if paged and k.shape[1] > 1 else None
        for rows, block_n, warps, stages in ((128, 64, 8, 3), (128, 128, 8, 2),
                                             (64, 64, 4, 3), (64, 32, 4, 2)):
            variants[f"t{rows}x{block_n}w{warps}s{stages}"] = (
                lambda r=rows, n=block_n, w=warps, s=stages: module.prefill(
                    args[0], k, v, args[3], args[4], indices, last, args[-1],
                    blocks=(r // group, n, w), num_stages=s))
    latency = time_rounds(variants, rounds)
    flops = causal_flops(name, args)
    sweep = best_of(latency, {**checks, "triton": check.status.value}) if checks else {}
    return {
        "definition": name, "cell": label, "total_q": args[0].shape[0],
        "batch": mla_batch(name, args) if kind == "mla" else args[3].shape[0] - 1,
        "check": check.status.value,
        "check_log": check.log if check.status.value != "PASSED" else "",
        "latency_us": latency,
        "tflops": {n: round(flops / (t * 1e-6) / 1e12, 1) for n, t in latency.items() if t},
        "triton_over_flashinfer_throughput": round(latency["flashinfer"] / latency["triton"], 3),
        **sweep,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--configs", action="store_true",
                        help="also time other Triton tile configurations (grid cells)")
    parser.add_argument("--only", choices=("official", "mla", "grid"),
                        help="official: the GQA official workloads; mla: the MLA ones")
    parser.add_argument("--variants", action="store_true",
                        help="MLA cells: also time the named launch configurations and split "
                             "rules (MLA_VARIANTS), not the torch baseline")
    parser.add_argument("--limit", type=int, default=0,
                        help="at most N official workloads a name (spread over the sizes)")
    opts = parser.parse_args()
    device = torch.cuda.get_device_name()
    todo: list[tuple[str, str, object]] = []
    official = {None: OFFICIAL + MLA, "official": OFFICIAL, "mla": MLA}.get(opts.only, [])
    for name, axes in official_cells(official, opts.limit):
        todo.append((name, "official " + json.dumps(axes), axes))
    if opts.only in (None, "grid"):
        for name in ALL:
            for batch, queries, prefix in GRID:
                todo.append((name, f"grid b{batch} q{queries} prefix{prefix}",
                             (batch, queries, prefix)))
    part = f"_{opts.only}" if opts.only else ""
    opts.out.mkdir(parents=True, exist_ok=True)
    path = opts.out / f"prefill_attention_{gpu_key(device)}{part}.json"
    cells: list[dict] = []
    start = time.time()
    print(f"{device}; {len(todo)} cells")
    print(f"{'definition':<44} {'cell':<58} {'triton us':>10} {'fi us':>10} {'ratio':>6} check")
    for name, label, spec in todo:
        try:
            args = official_inputs(name, spec) if isinstance(spec, dict) else \
                grid_inputs(name, *spec)
            cell = bench_cell(name, label, args, opts.rounds,
                              opts.configs and not isinstance(spec, dict), opts.variants)
        except Exception as exc:  # one failing cell must not lose the others
            cell = {"definition": name, "cell": label, "error": f"{type(exc).__name__}: {exc}"}
            print(f"{name:<44} {label[:58]:<58} ERROR {cell['error'][:200]}")
        else:
            lat = cell["latency_us"]
            print(f"{name:<44} {label[:58]:<58} {lat['triton']:>10.1f} "
                  f"{lat['flashinfer']:>10.1f} {cell['triton_over_flashinfer_throughput']:>6.2f} "
                  f"{cell['check']}", flush=True)
            if "best_variant" in cell:
                print("    " + "  ".join(f"{n}={t:.1f}" for n, t in sorted(
                    lat.items(), key=lambda item: item[1])) + f"  best {cell['best_variant']} "
                      f"{cell['best_over_flashinfer_throughput']}", flush=True)
        cells.append(cell)
        result = summary(device, cells, time.time() - start)
        path.write_text(json.dumps(result, indent=2) + "\n")  # kept if a timeout cuts the run
        torch.cuda.empty_cache()
    result = summary(device, cells, time.time() - start)
    print(f"Triton/FlashInfer throughput >= 0.80 in {result['cells_at_or_above_0.80']} of "
          f"{result['cells_measured']} cells; geomean {result['geomean_ratio']}, min "
          f"{result['min_ratio']}; wrote {path}")
    for variant, line in result.get("variants", {}).items():
        print(f"  {variant:<22} {line}")


def summary(device: str, cells: list[dict], seconds: float) -> dict:
    ratios = [c["triton_over_flashinfer_throughput"] for c in cells if "latency_us" in c]
    return {
        "device": device, "torch": torch.__version__, "triton": triton.__version__,
        "flashinfer": __import__("flashinfer").__version__,
        "timing": "do_bench median (warmup 5 ms, rep 20 ms, L2 flushed), median over rounds, "
                  "variants interleaved; FlashInfer plan() once per cell, not timed",
        "seconds": round(seconds, 1),
        "cells_at_or_above_0.80": sum(r >= 0.8 for r in ratios),
        "cells_measured": len(ratios),
        "geomean_ratio": round(math.exp(statistics.fmean(math.log(r) for r in ratios)), 3)
        if ratios else None,
        "min_ratio": min(ratios) if ratios else None,
        "checks_failed": [c["cell"] for c in cells if c.get("check") not in (None, "PASSED")],
        "errors": sum("error" in c for c in cells),
        "variants": variant_summary(cells),
        "cells": cells,
    }


def best_of(latency: dict[str, float], checks: dict[str, str]) -> dict:
    """The swept cell's record: each variant's check, and the fastest that passed (the
    shipped solution, "triton", included)."""
    passed = {n: latency[n] for n, status in checks.items() if status == "PASSED"}
    best = min(passed, key=lambda n: passed[n], default=None)
    return {"variant_checks": checks, "best_variant": best,
            "best_over_flashinfer_throughput":
                round(latency["flashinfer"] / passed[best], 3) if best else None}


def variant_summary(cells: list[dict]) -> dict[str, dict]:
    """Per swept variant ("decode shipped", "prefill best": each cell's fastest passing one):
    over the cells it ran, how many reach 0.80 of FlashInfer's throughput, geomean, min."""
    ratios: dict[str, list[float]] = {}
    failed: dict[str, int] = {}
    for cell in cells:
        if "variant_checks" not in cell:
            continue
        kind = "prefill" if "prefill" in cell["definition"] else "decode"
        lat = cell["latency_us"]
        for variant, status in cell["variant_checks"].items():
            if variant == "triton":
                continue  # counted as "shipped"
            if status != "PASSED":
                failed[f"{kind} {variant}"] = failed.get(f"{kind} {variant}", 0) + 1
            else:
                ratios.setdefault(f"{kind} {variant}", []).append(
                    lat["flashinfer"] / lat[variant])
        ratios.setdefault(f"{kind} shipped", []).append(
            cell["triton_over_flashinfer_throughput"])
        if cell["best_variant"]:
            ratios.setdefault(f"{kind} best", []).append(cell["best_over_flashinfer_throughput"])
    return {v: {"cells": len(r), "at_or_above_0.80": sum(x >= 0.8 for x in r),
                "geomean": round(math.exp(statistics.fmean(math.log(x) for x in r)), 3)
                if r else None, "min": round(min(r), 3) if r else None,
                "checks_failed": failed.get(v, 0)}
            for v, r in sorted({**{v: [] for v in failed}, **ratios}.items())}


if __name__ == "__main__":
    main()
