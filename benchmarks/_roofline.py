"""Issue 28's roofline views for bench_catalogue_i.py: how close each solution comes to copy
bandwidth, before and after the issue's kernels, on this GPU.

- bandwidth: per definition and size, each solution's achieved GB/s (bytes read + written
  once) as % of device copy bandwidth; the best of the solutions that predate issue 28
  ("before") and the best of all ("after").
- decode GEMMs: at M = 1..64, each solution's weight GB/s (N x K x itemsize per call) in the
  graph regime (retune's graph timer: CUDA graph replay, L2 flushed before each), as % of
  copy; flags the shapes where cuBLAS (`torch`) stays below 85 %.
- per-head: rmsnorm_h128 as Qwen3 runs it, on a [tokens, 32, 128] view into a fused qkv
  buffer (32 q of 40 heads): solutions that take the 3-D view read it in place, the others
  get the 2-D reshape an adapter makes (a copy, counted).
- launch-bound: eager per-call cost (calls back to back, no sync) at batch <= 16 against an
  empty Triton kernel launched the ordinary way and through FastLauncher.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from typing import Any

import torch

from fib_runtime import families
from fib_runtime.render import render_table
from fib_runtime.schema import Definition

# The variants issue 28 added: "before" is the best of the others.
NEW_VARIANTS = frozenset({
    "triton_short_t1k", "triton_short_t4k", "triton_short_t16k", "triton_multirow_t1k",
    "triton_multirow_t4k", "triton_multirow_t16k", "triton_splitk1", "triton_splitk4",
    "triton_splitk8",
})
SMALL_HIDDEN = (128, 256, 512, 1024)
LARGE_ELEMENTS = 1 << 25  # elements of one activation tensor at the "large" size (64 MiB bf16)
DECODE_M = (1, 2, 4, 8, 16, 32, 64)
CUBLAS_TARGET_PCT = 85.0
HEADS, KV_HEADS, HEAD_DIM = 32, 4, 128  # Qwen3-30B-A3B's attention

Timer = Callable[[Callable[[], Any]], float]  # microseconds


def short(variant: str) -> str:
    """A variant's column header."""
    return variant.removeprefix("triton_")[:16]


def small_hidden_definitions(known: dict[str, dict]) -> dict[str, dict]:
    """rmsnorm / fused_add_rmsnorm at hidden 128-1024 from the families (the catalogue ships
    h128 and h512), and the engines' residual-output norm at those sizes (the catalogue
    ships h2048 and up; made from its h2048 definition)."""
    catalogue = {n: Definition.from_dict(d) for n, d in known.items()}
    made = {}
    for hidden in SMALL_HIDDEN:
        for family in ("rmsnorm", "fused_add_rmsnorm"):
            d = families.resolve(family, catalogue, hidden_size=hidden, eps=1e-6)
            made[d.name] = d.to_dict()
        data = dict(known["fused_add_rmsnorm_residual_h2048"])
        data["name"] = f"fused_add_rmsnorm_residual_h{hidden}"
        data["axes"] = {**data["axes"], "hidden_size": {"type": "const", "value": hidden}}
        data["reference"] = data["reference"].replace("HIDDEN_SIZE = 2048",
                                                      f"HIDDEN_SIZE = {hidden}")
        made[data["name"]] = data
    return made


def row_length(d: dict) -> int:
    consts = [a["value"] for a in d["axes"].values() if a["type"] == "const"]
    return max(consts)


def large_size(d: dict, elements: int = LARGE_ELEMENTS) -> int:
    """Rows at which one activation tensor holds `elements` (at least 16384)."""
    return max(16384, elements // row_length(d))


def bandwidth(name: str, result: dict, moved: Callable[[int], int], copy: float) -> dict:
    """Per size: GB/s and % of copy of every solution, best before and after issue 28."""
    variants = result["variants"]
    out = []
    for row in result["rows"]:
        us = {v: t for v, t in row["us"].items() if t is not None}
        if not us:
            continue
        gbps = {v: moved(row["size"]) / t / 1e3 for v, t in us.items()}
        old = {v: t for v, t in us.items() if v not in NEW_VARIANTS}
        before = min(old, key=old.get) if old else None
        after = min(us, key=us.get)
        out.append({"size": row["size"], "gbps": gbps,
                    "pct_of_copy": {v: 100 * g / copy for v, g in gbps.items()},
                    "before": before, "after": after,
                    "before_pct": 100 * gbps[before] / copy if before else None,
                    "after_pct": 100 * gbps[after] / copy})
    print(f"\n{name}: % of copy bandwidth ({copy:.0f} GB/s), best before / after issue 28")
    headers = ["size", *map(short, variants), "before", "after"]
    rows = [[r["size"], *(f"{r['pct_of_copy'][v]:.0f}" if v in r["pct_of_copy"] else "fail"
                          for v in variants),
             f"{r['before_pct']:.0f} {r['before']}" if r["before"] else "-",
             f"{r['after_pct']:.0f} {r['after']}"] for r in out]
    print(render_table(headers, rows, align="right"))
    return {"rows": out}


def decode_gemm(name: str, d: dict, variants: dict[str, Callable], make_inputs: Callable,
                graph_us: Timer, copy: float, sizes: tuple[int, ...] = DECODE_M) -> dict:
    """Weight GB/s of every solution at decode M in the graph regime, as % of copy."""
    n, k = d["axes"]["N"]["value"], d["axes"]["K"]["value"]
    weight = n * k * 2
    rows, table = [], []
    for m in sizes:
        args = make_inputs(d, m)
        us = {}
        for variant, fn in variants.items():
            try:
                us[variant] = graph_us(lambda fn=fn, args=args: fn(*args))
            except Exception as exc:  # a failing solution is reported, not fatal
                print(f"  {name} {variant} M={m}: {type(exc).__name__}: {exc}")
        pct = {v: 100 * weight / t / 1e3 / copy for v, t in us.items()}
        old = {v: t for v, t in us.items() if v not in NEW_VARIANTS}
        before = min(old, key=old.get) if old else None
        after = min(us, key=us.get) if us else None
        rows.append({"M": m, "us": us, "weight_pct_of_copy": pct, "before": before,
                     "after": after, "torch_below_target": pct.get("torch", 0) <
                     CUBLAS_TARGET_PCT})
        table.append([m, *(f"{pct[v]:.0f}" if v in pct else "fail" for v in variants),
                      f"{pct[before]:.0f} {before}" if before else "-",
                      f"{pct[after]:.0f} {after}" if after else "-"])
    print(f"\n{name}: weight bandwidth, % of copy, graph regime (cuBLAS target "
          f"{CUBLAS_TARGET_PCT:.0f} %)")
    print(render_table(["M", *map(short, variants), "before", "after"], table,
                       align="right"))
    return {"weight_bytes": weight, "rows": rows}


def per_head(variants: dict[str, Callable], measure: Timer, copy: float, device: str,
             tokens: tuple[int, ...]) -> dict:
    """rmsnorm_h128 on Qwen3's q heads, a strided 3-D view of the qkv projection's output."""
    rows, table = [], []
    for t in tokens:
        qkv = torch.randn(t, (HEADS + 2 * KV_HEADS) * HEAD_DIM, device=device).bfloat16()
        q = qkv[:, :HEADS * HEAD_DIM].view(t, HEADS, HEAD_DIM)
        w = torch.randn(HEAD_DIM, device=device).bfloat16()
        moved = 2 * q.numel() * q.element_size()
        us = {}
        for variant, fn in variants.items():
            # the short-row kernels take the 3-D view; the others get an adapter's reshape
            x = q if variant.startswith("triton_short") else None
            try:
                us[variant] = measure(lambda fn=fn, x=x, q=q, w=w: fn(
                    q.reshape(-1, HEAD_DIM) if x is None else x, w))
            except Exception as exc:  # a failing solution is reported, not fatal
                print(f"  per-head {variant} tokens={t}: {type(exc).__name__}: {exc}")
        pct = {v: 100 * moved / u / 1e3 / copy for v, u in us.items()}
        old = {v: u for v, u in us.items() if v not in NEW_VARIANTS}
        before, after = min(old, key=old.get), min(us, key=us.get)
        rows.append({"tokens": t, "rows": t * HEADS, "us": us, "pct_of_copy": pct,
                     "before": before, "after": after})
        table.append([t, t * HEADS, *(f"{pct[v]:.0f}" if v in pct else "fail"
                                      for v in variants),
                      f"{pct[before]:.0f} {before}", f"{pct[after]:.0f} {after}"])
    print(f"\nrmsnorm_h128 per head ([tokens, {HEADS}, {HEAD_DIM}] view of qkv): % of copy")
    print(render_table(["tokens", "rows", *map(short, variants), "before", "after"],
                       table, align="right"))
    return {"rows": rows}


def launch_bound(cases: dict[tuple[str, int, str], Callable[[], Any]],
                 floors: dict[str, Callable[[], Any]], per_call: Callable[[Callable], float],
                 rounds: int) -> dict:
    """Median eager per-call cost of every (definition, batch, variant) and of the floors,
    all interleaved in shuffled rounds; the best per (definition, batch) over each floor."""
    everything = {**{("floor", 0, f): fn for f, fn in floors.items()}, **cases}
    samples: dict[Any, list[float]] = {k: [] for k in everything}
    order = list(everything)
    for round_ in range(rounds + 1):  # round 0 warms up
        random.shuffle(order)
        for key in order:
            us = per_call(everything[key])
            if round_:
                samples[key].append(us)
    median = {k: statistics.median(v) for k, v in samples.items()}
    floor_us = {f: median["floor", 0, f] for f in floors}
    best: dict[tuple[str, int], tuple[str, float]] = {}
    for (name, batch, variant), us in median.items():
        if name != "floor" and ((name, batch) not in best or us < best[name, batch][1]):
            best[name, batch] = (variant, us)
    rows = [{"definition": n, "batch": b, "best": v, "us": us,
             "over_floor": {f: us / f_us for f, f_us in floor_us.items()}}
            for (n, b), (v, us) in sorted(best.items())]
    print("\nlaunch-bound (eager, us per call): floors " +
          ", ".join(f"{f} {us:.2f}" for f, us in floor_us.items()))
    print(render_table(["definition", "batch", "best", "us", *(f"/ {f}" for f in floors)],
                       [[r["definition"], r["batch"], r["best"], f"{r['us']:.2f}",
                         *(f"{x:.2f}x" for x in r["over_floor"].values())] for r in rows],
                       align="right"))
    return {"floors_us": floor_us, "per_case_us": {"/".join(map(str, k)): v for k, v in
                                                   median.items() if k[0] != "floor"},
            "best": rows}
