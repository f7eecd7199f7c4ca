"""GPU: the engine adapters' serving flows, on a fresh database (capture -> retune -> serve).

vLLM / SGLang wheels cannot travel to the GPU machine, so their flow is reproduced with the
adapters' own wrappers (`fib_runtime.adapters.bridge`), as vLLM runs a model:
  A. an MLP block of routed ops (fused add + RMSNorm, SiLU-and-mul, RMSNorm, torch GEMMs)
     under torch.compile(dynamic=True) (Inductor), warmed up, then captured in one CUDA graph
     per batch size; replay vs eager outputs, Dynamo graph count, no device sync (sync debug
     mode "error") and no call left to the fallback during capture.
  B. a Llama-3.1-8B decode layer written against FlashInfer's Python API
     (flashinfer.norm.fused_add_rmsnorm in place, BatchDecodeWithPagedKVCacheWrapper with
     CUDA-graph buffers, page size 1, flashinfer.activation.silu_and_mul(out=)), run with
     FlashInfer's own kernels and with the FlashInfer adapter installed (fib-runtime's
     retuned winners), eager and CUDA-graph replay, modes interleaved in rounds.

    python benchmarks/bench_engine_adapters.py [--batches 1 16 64] [--kv-len 512]
Prints tables and writes benchmarks/results/engine_adapters.json (or --out DIR).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parents[1]))  # integration/, after the package
from _common import per_call_us, print_table
from fib_runtime.adapters import bridge

import fib_runtime as fib
from fib_runtime.catalogue import install
from fib_runtime.retuning import retune
from fib_runtime.store import TraceDB
from integration.flashinfer_decode_layer import Layer

H, INTER, QO, KV, D = 4096, 14336, 32, 8, 128
EPS = 1e-5
NORM, FUSED, ACT = "rmsnorm_h4096", "fused_add_rmsnorm_residual_h4096", "silu_and_mul_i14336"
DECODE = "gqa_paged_decode_h32_kv8_d128_ps1"
DEV = "cuda"


# -- A: vLLM's flow with the adapters' wrappers ---------------------------------------------

def _torch_norm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.rms_norm(x.float(), (x.shape[-1],), w.float(), EPS).to(x.dtype)


def _torch_fused(x: torch.Tensor, r: torch.Tensor, w: torch.Tensor):
    s = x.float() + r.float()
    return torch.nn.functional.rms_norm(s, (H,), w.float(), EPS).to(x.dtype), s.to(r.dtype)


def _torch_silu(gu: torch.Tensor) -> torch.Tensor:
    gate, up = gu.float().chunk(2, dim=-1)
    return (torch.nn.functional.silu(gate) * up).to(gu.dtype)


WRAPPED = {  # made before fib-runtime is switched on, as the vLLM plugin does
    NORM: bridge.wrapper("bench", NORM, _torch_norm),
    FUSED: bridge.wrapper("bench", FUSED, _torch_fused),
    ACT: bridge.wrapper("bench", ACT, _torch_silu),
}


def mlp_weights() -> dict[str, torch.Tensor]:
    g = torch.Generator(device=DEV).manual_seed(0)

    def rnd(*shape: int, scale: float) -> torch.Tensor:
        return (torch.randn(*shape, generator=g, device=DEV) * scale).bfloat16()

    return {"w1": rnd(H, scale=1.0), "w2": rnd(H, scale=1.0),
            "gate_up": rnd(2 * INTER, H, scale=H ** -0.5),
            "down": rnd(H, INTER, scale=INTER ** -0.5)}


def mlp_block(w: dict[str, torch.Tensor], x: torch.Tensor, residual: torch.Tensor,
              ops: dict[str, Callable[..., Any]] = WRAPPED):
    h, residual = ops[FUSED](x, residual, w["w1"])
    a = ops[ACT](h @ w["gate_up"].t())
    return ops[NORM](a @ w["down"].t(), w["w2"]), residual


def run_flow(batches: list[int]) -> dict[str, Any]:
    from torch._dynamo.utils import counters

    w = mlp_weights()
    counters.clear()
    compiled = torch.compile(mlp_block, dynamic=True)
    rows = []
    for b in batches:
        g = torch.Generator(device=DEV).manual_seed(b)
        x = torch.randn(b, H, generator=g, device=DEV).bfloat16()
        r = torch.randn(b, H, generator=g, device=DEV).bfloat16()
        fib.warmup(axes={n: [{"batch_size": b}] for n in (NORM, FUSED)} | {
            ACT: [{"num_tokens": b}]})
        eager = mlp_block(w, x, r)
        for _ in range(2):  # warm-up: compile (once) and resolve this batch size
            compiled(w, x, r)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static = compiled(w, x, r)
        torch.cuda.set_sync_debug_mode("error")
        try:
            graph.replay()
            again = mlp_block(w, x, r)  # eager routed calls, keys resolved: no sync either
        finally:
            torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
        reference = mlp_block(w, x, r, {NORM: _torch_norm, FUSED: _torch_fused,
                                        ACT: _torch_silu})
        rows.append({
            "batch": b, "dynamo_graphs_so_far": int(counters["stats"]["unique_graphs"]),
            "replay_vs_eager_max_abs": max((s - e).abs().max().item()
                                           for s, e in zip(static, eager, strict=True)),
            "replay_equals_eager": all(torch.allclose(s.float(), e.float(), atol=2e-2,
                                                      rtol=2e-2)
                                       for s, e in zip(static, eager, strict=True)),
            "residual_bit_exact": torch.equal(static[1], eager[1]),
            "eager_repeat_bit_exact": all(torch.equal(a, e) for a, e in
                                          zip(again, eager, strict=True)),
            "vs_torch_max_abs": (static[0] - reference[0]).abs().max().item(),
        })
    stats = fib.stats()
    return {
        "rows": rows,
        "dynamo_unique_graphs": int(counters["stats"]["unique_graphs"]),
        "dynamo_calls_captured": int(counters["stats"]["calls_captured"]),
        "fallbacks": {n: stats.get(n, {}).get("fallbacks", {}) for n in WRAPPED},
        "served": {n: fib.explain(n, {"batch_size" if n != ACT else "num_tokens": batches[-1]}
                                  ).decision for n in WRAPPED},
    }


# -- B: a decode layer on FlashInfer's API ---------------------------------------------------

def per_op_eager(layer: Layer, iters: int) -> dict[str, float]:
    """Eager cost (us per call) of each FlashInfer call of the layer as the layer makes it,
    with the adapter installed or not (the caller switches)."""
    import flashinfer

    x, r, w = layer.x, layer.residual, layer.w_in
    q = torch.randn(layer.batch, QO, D, device=DEV).bfloat16()
    gate_up = torch.randn(layer.batch, 2 * INTER, device=DEV).bfloat16()
    return {
        "fused_add_rmsnorm": per_call_us(
            lambda: flashinfer.norm.fused_add_rmsnorm(x, r, w, EPS), (), iters),
        "silu_and_mul": per_call_us(
            lambda: flashinfer.activation.silu_and_mul(gate_up, out=layer.act), (), iters),
        "decode_run": per_call_us(
            lambda: layer.wrapper.run(q, (layer.k_cache, layer.v_cache), out=layer.attn), (),
            iters),
    }


def run_layer(batches: list[int], kv_len: int, rounds: int, iters: int) -> dict[str, Any]:
    from fib_runtime.adapters import flashinfer as fi

    rows = []
    for b in batches:
        layers = {mode: Layer(b, kv_len) for mode in ("flashinfer", "fib")}
        graphs, outputs, errors = {}, {}, {}
        for mode, layer in layers.items():
            (fi.install if mode == "fib" else fi.uninstall)()
            layer.plan()
            for _ in range(2):  # warm-up: resolves this batch's keys
                layer.reset()
                layer.forward()
            layer.reset()
            outputs[mode] = (layer.forward().clone(), layer.residual.clone())
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    layer.forward()
                layer.reset()
                graph.replay()
                torch.cuda.synchronize()
                errors[mode] = None
                graphs[mode] = graph
                outputs[mode + "_replay"] = (layer.x.clone(), layer.residual.clone())
            except Exception as exc:  # recorded, the eager timing still runs
                errors[mode] = f"{type(exc).__name__}: {exc}"
        fi.uninstall()
        times: dict[str, list[float]] = {f"{m}_{k}": [] for m in layers for k in ("eager",
                                                                                  "graph")}
        for _ in range(rounds):  # modes interleaved
            for mode, layer in layers.items():
                (fi.install if mode == "fib" else fi.uninstall)()
                times[f"{mode}_eager"].append(per_call_us(layer.forward, (), iters))
                if mode in graphs:
                    times[f"{mode}_graph"].append(per_call_us(graphs[mode].replay, (), iters))
        per_op: dict[str, list[dict[str, float]]] = {"flashinfer": [], "fib": []}
        for _ in range(rounds):
            for mode, layer in layers.items():
                (fi.install if mode == "fib" else fi.uninstall)()
                per_op[mode].append(per_op_eager(layer, iters))
        fi.uninstall()
        med = {k: statistics.median(v) if v else None for k, v in times.items()}
        for mode, samples in per_op.items():
            for op in samples[0]:
                med[f"{mode}_{op}_eager"] = statistics.median(s[op] for s in samples)
        ref_x, ref_r = outputs["flashinfer"]
        row = {"batch": b, **{f"{k}_us": v for k, v in med.items()},
               "graph_errors": errors,
               "fib_vs_flashinfer_x_max_abs": (outputs["fib"][0] - ref_x).abs().max().item(),
               "fib_vs_flashinfer_residual_max_abs":
                   (outputs["fib"][1] - ref_r).abs().max().item()}
        if "fib_replay" in outputs:
            row["fib_replay_equals_eager"] = all(
                torch.equal(a, e) for a, e in zip(outputs["fib_replay"], outputs["fib"],
                                                  strict=True))
        rows.append(row)
    return {"rows": rows}


# -- the loop -----------------------------------------------------------------------------------

def capture_workloads(db: TraceDB, batches: list[int], kv_len: int) -> None:
    from fib_runtime.adapters import flashinfer as fi

    w = mlp_weights()
    with torch.no_grad(), fib.enable_capture(db):
        fi.install()
        try:
            for b in batches:
                x = torch.randn(b, H, device=DEV).bfloat16()
                mlp_block(w, x, x.clone())
                layer = Layer(b, kv_len)
                layer.plan()
                layer.forward()
        finally:
            fi.uninstall()
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--kv-len", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp()) / "db"
    db = TraceDB.open(root, create=True)
    install(db)
    phases: dict[str, float] = {}
    start = time.perf_counter()
    capture_workloads(db, args.batches, args.kv_len)
    phases["capture_s"] = time.perf_counter() - start
    start = time.perf_counter()
    summary = retune(root, definitions=[NORM, FUSED, ACT, DECODE], warmup=3, iters=20,
                     progress=False)
    phases["retune_s"] = time.perf_counter() - start
    with fib.enable_apply(root, {"check_interval_s": 0}):
        start = time.perf_counter()
        flow = run_flow(sorted(args.batches, key=lambda b: b == 1))  # batch 1 last
        phases["flow_s"] = time.perf_counter() - start
        start = time.perf_counter()
        with torch.no_grad():
            layer = run_layer(args.batches, args.kv_len, args.rounds, args.iters)
        phases["layer_s"] = time.perf_counter() - start
        from fib_runtime.adapters import flashinfer as fi

        per_op_rows = [[r["batch"], *(f"{r[f'flashinfer_{op}_eager_us']:.1f} / "
                                      f"{r[f'fib_{op}_eager_us']:.1f}"
                                      for op in ("fused_add_rmsnorm", "silu_and_mul",
                                                 "decode_run"))]
                       for r in layer["rows"]]
        explained = {n: {b: fib.explain(n, _axes(n, b, args.kv_len)).decision
                         for b in args.batches} for n in (NORM, FUSED, ACT, DECODE)}
        result = {
            "device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "flashinfer": __import__("flashinfer").__version__, "phases": phases,
            "retune": {"counts": summary.counts(), "table": summary.table()},
            "flow": flow, "layer": layer, "served": explained,
            "dispatch_stats": fib.stats(), "flashinfer_adapter_stats": fi.stats(),
        }
    print(summary.table())
    print_table(["batch", "replay=eager", "max|replay-eager|", "residual exact", "max|vs torch|"],
                [[r["batch"], r["replay_equals_eager"], f"{r['replay_vs_eager_max_abs']:.3g}",
                  r["residual_bit_exact"], f"{r['vs_torch_max_abs']:.3g}"] for r in flow["rows"]])
    print(f"dynamo graphs {flow['dynamo_unique_graphs']}, fallbacks {flow['fallbacks']}")
    print_table(["batch", "FI eager us", "fib eager us", "FI graph us", "fib graph us",
                 "max|x diff|", "graph errors"],
                [[r["batch"], _f(r["flashinfer_eager_us"]), _f(r["fib_eager_us"]),
                  _f(r["flashinfer_graph_us"]), _f(r["fib_graph_us"]),
                  f"{r['fib_vs_flashinfer_x_max_abs']:.3g}", r["graph_errors"]]
                 for r in layer["rows"]])
    print_table(["batch", "fused_add_rmsnorm us (FI / fib)", "silu_and_mul", "decode run"],
                per_op_rows)
    print(json.dumps({"served": explained, "adapter": result["flashinfer_adapter_stats"]}))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "engine_adapters.json").write_text(json.dumps(result, indent=2, default=str))


def _axes(name: str, batch: int, kv_len: int) -> dict[str, int]:
    if name == ACT:
        return {"num_tokens": batch}
    if name == DECODE:
        return {"batch_size": batch, "num_pages": batch * kv_len, "len_indptr": batch + 1,
                "num_kv_indices": batch * kv_len + 64}
    return {"batch_size": batch}


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    main()
