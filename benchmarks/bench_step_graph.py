"""GPU: the Llama-3.1-8B decode layer on FlashInfer's API (integration/flashinfer_decode_layer.py)
replayed from a CUDA graph, fib-runtime's choices against the engine-style static choice
(FlashInfer's norms, activation and decode, cuBLAS GEMMs: the layer with dispatch off),
before and after the step gate (`fib verify`), at each batch size.

1. Capture the layer's calls through the FlashInfer adapter (workloads, and FlashInfer's own
   functions as the originals), retune in the device, graph and eager regimes.
2. Per batch: static vs fib, each captured in a CUDA graph, replays interleaved in rounds.
3. The gate on the step at each batch (graph regime, then eager), which pins what slows the
   layer; then static vs fib again.
4. Why per-op timings mislead (batch 1 by default): each routed op alone, replayed from a
   graph with the L2 flushed before each replay (retune's graph timer) and without (the
   op's inputs warm in L2, as the previous op leaves them inside the layer), for FlashInfer's
   own function and for fib's graph choice.

    python3 benchmarks/bench_step_graph.py [--batches 1 8 32 64 128] [--rounds 7]
Writes benchmarks/results/step_graph.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parents[1]))  # integration/, after the package
from _common import RESULTS, per_call_us, print_table

import fib_runtime as fib
from fib_runtime.build import BuildCache, value_returning
from fib_runtime.catalogue import install
from fib_runtime.dispatch import sites
from fib_runtime.dispatch.runtime import Runtime
from fib_runtime.keys import axes_to_key
from fib_runtime.measure.inputs import materialise
from fib_runtime.measure.timing import graph_latency_ms
from fib_runtime.retuning import RetuneConfig, retune
from fib_runtime.store import TraceDB
from fib_runtime.verify import verify
from integration.flashinfer_decode_layer import DEFINITIONS, Layer, op_axes

STEP = "integration.flashinfer_decode_layer:gate_step"


def capture(root: Path, batches: list[int], kv_len: int) -> None:
    from fib_runtime.adapters import flashinfer as fi

    fi.install()
    with torch.no_grad(), fib.enable_capture(root):
        for b in batches:
            layer = Layer(b, kv_len)
            layer.plan()
            layer.forward()
        torch.cuda.synchronize()


def graph_of(layer: Layer, runtime: Runtime | None) -> torch.cuda.CUDAGraph:
    sites.set_runtime(runtime)
    layer.plan()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            layer.forward()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        layer.forward()
    torch.cuda.synchronize()
    return graph


def static_vs_fib(root: Path, batch: int, kv_len: int, rounds: int, n: int) -> dict[str, Any]:
    """Graph replays of the layer: dispatch off (static) and on (fib), interleaved."""
    runtime = Runtime(root, fib.DispatchConfig(check_interval_s=0), watch=False)
    layer = Layer(batch, kv_len)
    graphs = {"static": graph_of(layer, None), "fib": graph_of(layer, runtime)}
    sites.set_runtime(None)
    samples: dict[str, list[float]] = {m: [] for m in graphs}
    rng = random.Random(batch)
    for _ in range(rounds):
        order = list(graphs)
        rng.shuffle(order)
        for mode in order:
            samples[mode].append(per_call_us(graphs[mode].replay, (), n))
    static, fib_us = (statistics.median(samples[m]) for m in ("static", "fib"))
    served = {name: fib.explain(name, op_axes(batch, kv_len)[name], runtime, "graph").decision
              for name in DEFINITIONS}
    return {"static_us": static, "fib_us": fib_us, "fib_over_static": static / fib_us,
            "samples": samples, "served_graph": served}


def per_op(root: Path, batch: int, kv_len: int) -> list[dict[str, Any]]:
    """Each op alone from a graph, L2 flushed or warm: FlashInfer's own vs fib's choice."""
    db = TraceDB.open(root)
    runtime = Runtime(root, fib.DispatchConfig(check_interval_s=0), watch=False)
    builds = BuildCache()
    rows = []
    for name in DEFINITIONS:
        definition = db.definitions[name]
        key = axes_to_key(definition, op_axes(batch, kv_len)[name])
        workload = next((w.workload for w in db.workloads_for(name)
                         if axes_to_key(definition, dict(w.workload.axes)) == key), None)
        if workload is None:
            continue
        inputs = materialise(definition, workload, device="cuda",
                             load_tensor=lambda d: db.load_tensor(d, device="cuda"))
        explained = fib.explain(name, op_axes(batch, kv_len)[name], runtime, "graph")
        original = next((c[0] for c in explained.candidates if "__original__" in c[0]), None)
        for role, solution in (("flashinfer", original), ("fib", explained.decision)):
            if solution is None or solution == "fallback":
                continue
            built = builds.get(db.solutions[solution])
            if isinstance(built, Exception):
                continue
            fn = value_returning(built, definition)
            flushed = graph_latency_ms(fn, inputs.args, device="cuda", warmup=3, iters=50)
            warm = _graph_warm_ms(fn, inputs.args)
            rows.append({"definition": name, "role": role, "solution": solution,
                         "flushed_us": float(flushed) * 1e3, "warm_us": warm * 1e3})
    return rows


def _graph_warm_ms(fn: Any, args: list[Any], iters: int = 50) -> float:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn(*args)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn(*args)
    graph.replay()  # inputs now in L2
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for i in range(iters):
        # Keep the GPU busy while the host enqueues the replay (as the L2 flush does in the
        # flushed timer), without touching memory: no launch gap inside the timed span.
        torch.cuda._sleep(50_000)
        starts[i].record()
        graph.replay()
        ends[i].record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64, 128])
    parser.add_argument("--kv-len", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--replays", type=int, default=100)
    parser.add_argument("--gate-regimes", default="graph,eager")
    parser.add_argument("--diagnose", type=int, nargs="*", default=[1])
    parser.add_argument("--out", type=Path, default=RESULTS / "step_graph.json")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="fib-step-graph-")) / "db"
    install(TraceDB.open(root, create=True))
    phases: dict[str, float] = {}
    start = time.perf_counter()
    capture(root, args.batches, args.kv_len)
    phases["capture_s"] = time.perf_counter() - start
    start = time.perf_counter()
    summary = retune(root, definitions=list(DEFINITIONS), warmup=3, iters=20, progress=False,
                     config=RetuneConfig(timings=("device", "graph", "eager")))
    phases["retune_s"] = time.perf_counter() - start
    print(summary.table(), flush=True)
    rows = []
    with torch.no_grad():
        for batch in args.batches:
            before = static_vs_fib(root, batch, args.kv_len, args.rounds, args.replays)
            start = time.perf_counter()
            gate = verify(STEP, root, kwargs={"batch": batch, "kv_len": args.kv_len},
                          regimes=tuple(args.gate_regimes.split(",")), rounds=5)
            gate_s = time.perf_counter() - start
            print(gate.table(), flush=True)
            after = static_vs_fib(root, batch, args.kv_len, args.rounds, args.replays)
            rows.append({"batch": batch, "before_gate": before, "gate": gate.to_dict(),
                         "gate_s": gate_s, "after_gate": after})
            print(f"batch {batch}: fib/static {before['fib_over_static']:.3f}x before the "
                  f"gate, {after['fib_over_static']:.3f}x after", flush=True)
        diagnosis = {b: per_op(root, b, args.kv_len) for b in args.diagnose}
    print_table(["batch", "static us", "fib us (before gate)", "speedup", "fib us (after)",
                 "speedup", "gate rejected"],
                [[r["batch"], f"{r['before_gate']['static_us']:.1f}",
                  f"{r['before_gate']['fib_us']:.1f}",
                  f"{r['before_gate']['fib_over_static']:.3f}x",
                  f"{r['after_gate']['fib_us']:.1f}",
                  f"{r['after_gate']['fib_over_static']:.3f}x",
                  "; ".join(f"{v['regime']}: {','.join(v['rejected']) or '-'}"
                            for v in r["gate"]["verdicts"])] for r in rows])
    for batch, ops in diagnosis.items():
        print(f"batch {batch}, each op alone from a CUDA graph (us):")
        print_table(["definition", "role", "solution", "L2 flushed", "L2 warm"],
                    [[o["definition"], o["role"], o["solution"].split("__")[-1],
                      f"{o['flushed_us']:.2f}", f"{o['warm_us']:.2f}"] for o in ops])
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "phases": phases, "retune": summary.table(), "rows": rows,
              "diagnosis": {str(b): ops for b, ops in diagnosis.items()},
              "goal": "after the gate, fib/static >= 1.00 at every batch (graph replay)"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
