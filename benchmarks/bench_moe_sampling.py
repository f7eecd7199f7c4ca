"""Issue 26 on a GPU: the bfloat16 MoE family's launch configurations per token count, and
sampling's torch and FlashInfer solutions.

MoE, per definition (Mixtral-8x7B, Qwen3-30B-A3B, OLMoE shapes) and token count: every
Triton configuration of `definitions/moe/solutions/triton_fused_moe.py` and the torch
solution, median `triton.testing.do_bench` ms, the configurations interleaved in rounds
(the best round's median kept per candidate). Reported: the winner, its speed-up over the
fixed default configuration (goal: >= 1.3x at some token counts); at held-out token counts
(not measured for the choice) the configuration dispatch serves there from the measured
counts (its default miss rule, `ranking.interpolated`: each configuration's latency
interpolated in log-log between the two measured counts around it; the nearest count's
ranking outside them) against the fastest there (goal: <= 1.03x); and, at two token
counts, whether a skewed routing (3/4 of the tokens choosing all their experts among the
first eighth of them) changes the winner and what the uniform winner costs there: is
expert skew part of what makes two calls the same workload?

Sampling, per definition and batch: torch and FlashInfer median ms (inputs as retune makes
them: softmax rows, top_k in [1, 64] with every fourth row 0, top_p in [0.5, 0.95]).

FP8 (`--part fp8`, not in `both`): the DeepSeek-V3 FP8 block-scale definition at official
workloads' token counts and expert offsets: every configuration of
`definitions/moe/solutions/triton_fp8_moe.py` and the torch solution, interleaved in rounds
as above; the winner against the default configuration and against torch. Inputs as
retune makes them (N(0, 1) values and scales; random router logits, so routing is near
uniform: about one local pair per token).

`--timing graph` times every candidate replayed from a CUDA graph (fib-runtime's graph
timer: L2 flushed before each replay), the regime engines run MoE in at decode; the default
`do_bench` includes each call's host launch path where it is longer than the kernels.

Usage: python benchmarks/bench_moe_sampling.py --out DIR [--budget SECONDS] [--part PART]
                                               [--timing do_bench|device|graph]
       python benchmarks/bench_moe_sampling.py --summarise FILE   (tables of a saved run)
Prints tables; writes DIR/moe_sampling.json (DIR/moe_fp8.json with --part fp8; a
`_graph` / `_device` suffix with those timings).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table

from fib_runtime.catalogue import catalogue_root, load_catalogue
from fib_runtime.measure.op_inputs import sampling_inputs
from fib_runtime.ranking import DEVICE, Ranking, interpolated, nearest_key

MOE = ("moe_bf16_topk8_e128_h2048_i768", "moe_bf16_topk8_e64_h2048_i1024",
       "moe_bf16_topk2_e8_h4096_i14336")  # in this order while the budget lasts
TOKENS = (1, 8, 32, 128, 512, 2048)
HELD_OUT = (16, 256, 1024)
SKEW_AT = (32, 512)
SAMPLING = ("top_k_sampling_from_probs_v128256", "top_k_top_p_sampling_from_probs_v128256",
            "top_k_top_p_sampling_from_probs_v151936")
BATCHES = (1, 16, 64, 256)
FP8 = "moe_fp8_block_scale_ds_routing_topk8_ng8_kg4_e32_h7168_i2048"
# (seq_len, local_expert_offset) of official workloads, in this order while the budget lasts
FP8_WORKLOADS = ((1, 32), (7, 192), (32, 32), (80, 96), (901, 96), (14107, 32), (16, 224),
                 (59, 160), (11948, 128))
ROUNDS = 2


def _module(op_type: str, stem: str) -> Any:
    path = catalogue_root() / op_type / "solutions" / f"{stem}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TIMING = ["do_bench"]  # --timing: "do_bench" (one launch per timed call) or a fib regime


def _median_ms(fn) -> float:
    """Median ms of fn(): `triton.testing.do_bench`, or fib-runtime's timer of the regime
    named by --timing ("graph": replayed from a CUDA graph, as engines run MoE at decode)."""
    if TIMING[0] == "do_bench":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=3, rep=10, return_mode="median"))
    from fib_runtime.measure.timing import get_timer

    return float(get_timer(TIMING[0]).measure(fn, [], device="cuda", warmup=5, iters=30))


def _moe_inputs(consts: dict[str, int], tokens: int, skewed: bool, seed: int = 0) -> list[Any]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    experts, top_k = consts["num_experts"], consts["top_k"]
    hidden, inter = consts["hidden_size"], consts["intermediate_size"]
    scores = torch.rand(tokens, experts, generator=gen)
    if skewed:  # 3/4 of the tokens choose all their experts among the first eighth
        hot = torch.rand(tokens, generator=gen) < 0.75
        scores[hot, : max(top_k, experts // 8)] += 1.0
    ids = scores.topk(top_k, dim=-1).indices.to(torch.int32)
    weights = torch.rand(tokens, top_k, generator=gen) + 0.1
    weights /= weights.sum(-1, keepdim=True)
    x = torch.randn(tokens, hidden, generator=gen).to(torch.bfloat16)
    w13 = torch.randn(experts, 2 * inter, hidden, device="cuda", dtype=torch.bfloat16)
    w13 /= hidden ** 0.5
    w2 = torch.randn(experts, hidden, inter, device="cuda", dtype=torch.bfloat16) / inter ** 0.5
    return [x.cuda(), weights.cuda(), ids.cuda(), w13, w2]


FAILED: dict[str, str] = {}  # candidate -> its first error (it is then left out)


def _time_all(candidates: dict[str, Any], args: list[Any]) -> dict[str, float]:
    best: dict[str, float] = {}
    for _ in range(ROUNDS):
        for name, fn in candidates.items():
            if name in FAILED:
                continue
            try:
                ms = _median_ms(lambda fn=fn: fn(*args))
            except Exception as exc:  # e.g. a configuration out of shared memory here
                FAILED[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
                print(f"{name} failed: {FAILED[name]}")
                continue
            best[name] = min(best.get(name, math.inf), ms)
    return best


def bench_moe(deadline: float) -> list[dict[str, Any]]:
    triton_moe, torch_moe = _module("moe", "triton_fused_moe"), _module("moe", "torch_moe")
    definitions = load_catalogue().definitions
    configs = {e["variant"]: getattr(triton_moe, e["entry_point"])
               for e in triton_moe.FIB_SOLUTIONS}
    rows = []
    for name in MOE:
        consts = definitions[name].const_axes
        shared = None
        for tokens in sorted({*TOKENS, *HELD_OUT}):
            if time.monotonic() > deadline:
                print(f"budget spent: {name} stops before {tokens} tokens")
                break
            for skewed in (False, True) if tokens in SKEW_AT else (False,):
                args = _moe_inputs(consts, tokens, skewed)
                if shared is None:
                    shared = args[3:]
                args[3:] = shared  # one copy of the weights per definition
                times = _time_all(configs, args)
                if tokens <= 512 and not skewed:
                    times["torch"] = _time_all({"torch": torch_moe.moe_experts}, args)["torch"]
                rows.append({"definition": name, "tokens": tokens, "skewed": skewed,
                             "held_out": tokens in HELD_OUT, "ms": times})
        shared = None
    return rows


def served_at(tokens: int, measured: list[dict[str, Any]], triton: dict[str, float]) -> str:
    """The configuration dispatch serves at an unmeasured token count, from the rankings of
    the measured counts (interpolated between the two around it, else the nearest)."""
    rankings = {}
    for m in measured:
        times = sorted((v, k) for k, v in m["ms"].items() if k in triton)
        rankings[(m["tokens"],)] = Ranking(tuple(k for _, k in times),
                                           tuple(v for v, _ in times))
    ranking = interpolated(rankings, (tokens,), DEVICE)
    if ranking is None:
        near = nearest_key(rankings, (tokens,))
        ranking = rankings[near] if near is not None else None
    return ranking.names[0] if ranking is not None and ranking.names else min(triton,
                                                                              key=triton.get)


def _fp8_inputs(tokens: int, offset: int, experts: list[Any] | None) -> list[Any]:
    import torch

    gen = torch.Generator(device="cuda").manual_seed(tokens)
    fp8 = torch.float8_e4m3fn

    def randn(*shape: int) -> Any:
        return torch.randn(*shape, generator=gen, device="cuda")

    if experts is None:  # made once: 1.4 GB, one expert at a time
        experts = [torch.stack([randn(4096, 7168).to(fp8) for _ in range(32)]),
                   randn(32, 32, 56), torch.stack([randn(7168, 2048).to(fp8) for _ in range(32)]),
                   randn(32, 56, 16)]
    return [randn(tokens, 256), (randn(256) * 0.1).to(torch.bfloat16),
            randn(tokens, 7168).to(fp8), randn(56, tokens), *experts, offset, 2.5]


def bench_fp8(deadline: float) -> list[dict[str, Any]]:
    triton_fp8, torch_fp8 = _module("moe", "triton_fp8_moe"), _module("moe", "torch_fp8_moe")
    candidates = {e["variant"]: getattr(triton_fp8, e["entry_point"])
                  for e in triton_fp8.FIB_SOLUTIONS}
    candidates["torch"] = torch_fp8.moe_fp8_ds
    rows, experts = [], None
    for tokens, offset in FP8_WORKLOADS:
        if time.monotonic() > deadline:
            print(f"budget spent: FP8 stops before {tokens} tokens")
            break
        args = _fp8_inputs(tokens, offset, experts)
        experts = args[4:8]
        ids, _ = triton_fp8.route(args[0], args[1], args[9])
        local = int(((ids >= offset) & (ids < offset + 32)).sum())
        rows.append({"definition": FP8, "tokens": tokens, "offset": offset,
                     "local_pairs": local, "ms": _time_all(candidates, args)})
    return rows


def summarise_fp8(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table, summary = [], []
    for r in rows:
        triton = {k: v for k, v in r["ms"].items() if k.startswith("triton_")}
        if "triton_default" not in triton:
            continue
        winner = min(triton, key=triton.get)
        torch_ms = r["ms"].get("torch")
        summary.append({"tokens": r["tokens"], "winner": winner, "ms": triton[winner],
                        "speedup_over_default": triton["triton_default"] / triton[winner],
                        "speedup_over_torch": torch_ms / triton[winner] if torch_ms else None})
        table.append([r["tokens"], r["local_pairs"], winner, f"{triton[winner]:.4f}",
                      f"{triton['triton_default']:.4f}",
                      f"{summary[-1]['speedup_over_default']:.2f}x",
                      f"{torch_ms:.4f}" if torch_ms else "-",
                      f"{summary[-1]['speedup_over_torch']:.2f}x" if torch_ms else "-"])
    print_table(["tokens", "local pairs", "winner", "ms", "default ms", "vs default",
                 "torch ms", "vs torch"], table)
    return summary


def summarise_moe(rows: list[dict[str, Any]]) -> dict[str, Any]:
    table, summary = [], {}
    for name in MOE:
        mine = [r for r in rows if r["definition"] == name and not r["skewed"]]
        measured = [r for r in mine if not r["held_out"]]
        for r in mine:
            triton = {k: v for k, v in r["ms"].items() if k.startswith("triton_")}
            if "triton_default" not in triton:
                continue
            winner = min(triton, key=triton.get)
            speedup = triton["triton_default"] / triton[winner]
            chosen = served_at(r["tokens"], measured, triton) if r["held_out"] else winner
            ratio = triton[chosen] / triton[winner]
            table.append([name, r["tokens"], "held-out" if r["held_out"] else "", winner,
                          f"{triton[winner]:.4f}", f"{triton['triton_default']:.4f}",
                          f"{speedup:.2f}x", chosen, f"{ratio:.3f}",
                          f"{r['ms']['torch']:.4f}" if "torch" in r["ms"] else "-"])
            summary.setdefault(name, []).append(
                {"tokens": r["tokens"], "held_out": r["held_out"], "winner": winner,
                 "speedup_over_default": speedup, "chosen": chosen, "chosen_over_best": ratio})
    print_table(["definition", "tokens", "", "winner", "ms", "default ms", "vs default",
                 "chosen", "chosen/best", "torch ms"], table)
    skew = []
    for r in rows:
        if not r["skewed"]:
            continue
        uniform = next(u for u in rows if u["definition"] == r["definition"]
                       and u["tokens"] == r["tokens"] and not u["skewed"])
        shared = [k for k in uniform["ms"] if k in r["ms"]]
        if not shared:
            continue
        pick = min(shared, key=uniform["ms"].get)
        best = min(r["ms"], key=r["ms"].get)
        skew.append({"definition": r["definition"], "tokens": r["tokens"],
                     "uniform_winner": pick, "skewed_winner": best,
                     "uniform_winner_on_skewed_over_best": r["ms"][pick] / r["ms"][best]})
    print_table(["definition", "tokens", "uniform winner", "skewed winner", "cost on skewed"],
                [[s["definition"], s["tokens"], s["uniform_winner"], s["skewed_winner"],
                  f"{s['uniform_winner_on_skewed_over_best']:.3f}"] for s in skew])
    return {"per_definition": summary, "skew": skew}


def bench_sampling(deadline: float) -> list[dict[str, Any]]:
    import torch

    torch_s, flash_s = _module("sampling", "torch_sampling"), _module("sampling",
                                                                       "flashinfer_sampling")
    definitions = load_catalogue().definitions
    rows = []
    for name in SAMPLING:
        definition = definitions[name]
        entry = ("top_k_top_p_sampling" if name.startswith("top_k_top_p") else
                 "top_k_sampling")
        for batch in BATCHES:
            if time.monotonic() > deadline:
                break
            gen = torch.Generator().manual_seed(batch)
            axes = {"batch_size": batch, **definition.const_axes}
            args = [sampling_inputs(n, s, axes, gen).cuda() for n, s in definition.inputs.items()]
            times = _time_all({"torch": getattr(torch_s, entry),
                               "flashinfer": getattr(flash_s, entry)}, args)
            rows.append({"definition": name, "batch": batch, "ms": times})
    print_table(["definition", "batch", "torch ms", "flashinfer ms", "torch/flashinfer"],
                [[r["definition"], r["batch"], f"{r['ms']['torch']:.4f}",
                  f"{r['ms']['flashinfer']:.4f}", f"{r['ms']['torch'] / r['ms']['flashinfer']:.2f}"]
                 for r in rows])
    return rows


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--summarise", type=Path, metavar="FILE",
                        help="print the tables of a saved moe_sampling.json (no GPU)")
    parser.add_argument("--budget", type=float, default=150.0, help="seconds for both parts")
    parser.add_argument("--part", choices=("moe", "sampling", "both", "fp8"), default="both")
    parser.add_argument("--timing", choices=("do_bench", "device", "graph"), default="do_bench",
                        help="do_bench (as before), or fib-runtime's device / graph timer")
    args = parser.parse_args()
    TIMING[0] = args.timing
    if args.summarise:
        saved = json.loads(args.summarise.read_text())
        print(saved["device"])
        if "moe" in saved:
            summarise_moe(saved["moe"])
        if "fp8" in saved:
            summarise_fp8(saved["fp8"])
        return
    if args.out is None:
        parser.error("--out is required to measure")
    start = time.monotonic()
    result: dict[str, Any] = {"device": torch.cuda.get_device_name(), "rounds": ROUNDS,
                              "timing": args.timing, "failed": FAILED}
    if args.part in ("moe", "both"):
        result["moe"] = bench_moe(start + args.budget * (0.8 if args.part == "both" else 1.0))
        result["moe_summary"] = summarise_moe(result["moe"])
    if args.part in ("sampling", "both"):
        result["sampling"] = bench_sampling(start + args.budget)
    if args.part == "fp8":
        result["fp8"] = bench_fp8(start + args.budget)
        result["fp8_summary"] = summarise_fp8(result["fp8"])
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "moe_fp8" if args.part == "fp8" else "moe_sampling"
    suffix = "" if args.timing == "do_bench" else f"_{args.timing}"
    path = args.out / f"{stem}{suffix}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path} in {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
