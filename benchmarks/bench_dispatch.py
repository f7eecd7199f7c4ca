"""Added cost of fib.apply per call on CPU tensors with CPU python solutions.

Run: python benchmarks/bench_dispatch.py
Rows: a hit on a 1-var-axis definition and on a 4-var-axis attention-like one (targets:
<= 0.5 us and <= 1.0 us over calling the chosen solution directly), the first call of a new
key (nearest resolution) and the calls after it, the fallback path, and dispatch switched off.
When flashinfer-bench is importable, its apply on the same definition is measured too.
Writes benchmarks/results/bench_dispatch.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median_ns_per_call, print_table, write_json

import fib_runtime as fib
from fib_runtime.hardware import current_hardware
from fib_runtime.schema import Definition, Solution, Trace
from fib_runtime.store import TraceDB

NORM = {
    "name": "bench_norm_h64", "op_type": "rmsnorm",
    "axes": {"batch_size": {"type": "var"}, "hidden_size": {"type": "const", "value": 64}},
    "inputs": {"x": {"shape": ["batch_size", "hidden_size"], "dtype": "float32"},
               "weight": {"shape": ["hidden_size"], "dtype": "float32"}},
    "outputs": {"y": {"shape": ["batch_size", "hidden_size"], "dtype": "float32"}},
    "reference": "def run(x, weight):\n    return x * weight\n",
}
ATTENTION = {
    "name": "bench_decode_h8_kv2_d16", "op_type": "gqa_paged",
    "axes": {"batch_size": {"type": "var"}, "num_qo_heads": {"type": "const", "value": 8},
             "num_kv_heads": {"type": "const", "value": 2},
             "head_dim": {"type": "const", "value": 16}, "num_pages": {"type": "var"},
             "page_size": {"type": "const", "value": 1}, "len_indptr": {"type": "var"},
             "num_kv_indices": {"type": "var"}},
    "inputs": {
        "q": {"shape": ["batch_size", "num_qo_heads", "head_dim"], "dtype": "float32"},
        "k_cache": {"shape": ["num_pages", "page_size", "num_kv_heads", "head_dim"],
                    "dtype": "float32"},
        "v_cache": {"shape": ["num_pages", "page_size", "num_kv_heads", "head_dim"],
                    "dtype": "float32"},
        "kv_indptr": {"shape": ["len_indptr"], "dtype": "int32"},
        "kv_indices": {"shape": ["num_kv_indices"], "dtype": "int32"},
        "sm_scale": {"shape": None, "dtype": "float32"}},
    "outputs": {"output": {"shape": ["batch_size", "num_qo_heads", "head_dim"],
                           "dtype": "float32"}},
    "reference": "def run(q, k_cache, v_cache, kv_indptr, kv_indices, sm_scale):\n"
                 "    return q\n",
}
# The chosen solution does (almost) nothing, so what is measured is dispatch itself.
IDENTITY = "def run(*args):\n    return args[0]\n"


def build_db(root: Path) -> TraceDB:
    db = TraceDB.open(root, create=True)
    hardware = current_hardware().name
    traces = []
    for raw, axes in ((NORM, [{"batch_size": b} for b in (1, 8, 64, 512)]),
                      (ATTENTION, [{"batch_size": b, "num_pages": 4096, "len_indptr": b + 1,
                                    "num_kv_indices": b * 64} for b in (1, 8, 64)])):
        definition = Definition.from_dict(raw)
        db.add_definition(definition)
        solution = Solution.from_dict({
            "name": f"{definition.name}_identity", "definition": definition.name,
            "author": "bench", "spec": {"language": "python", "target_hardware": ["any"],
                                        "entry_point": "main.py::run",
                                        "destination_passing_style": False},
            "sources": [{"path": "main.py", "content": IDENTITY}]})
        db.add_solution(solution)
        for values in axes:
            traces.append(Trace.from_dict({
                "definition": definition.name, "solution": solution.name,
                "workload": {"uuid": str(uuid.uuid4()), "axes": values,
                             "inputs": {n: {"type": "random"} for n in definition.inputs}},
                "evaluation": {
                    "status": "PASSED", "log": "",
                    "correctness": {"max_relative_error": 0.0, "max_absolute_error": 0.0},
                    "performance": {"latency_ms": 0.01, "reference_latency_ms": 0.01,
                                    "speedup_factor": 1.0},
                    "environment": {"hardware": hardware, "libs": {}},
                    "timestamp": "2026-11-21T00:00:00+00:00"}}))
    db.append_traces(traces)
    return db


@fib.apply("bench_norm_h64")
def norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x


@fib.apply("bench_decode_h8_kv2_d16")
def decode(q: Any, k_cache: Any, v_cache: Any, kv_indptr: Any, kv_indices: Any,
           sm_scale: float) -> Any:
    return q


@fib.apply("bench_norm_h64_unmeasured")
def unmeasured(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x


def first_call_ns(batches: range) -> tuple[float, float]:
    """Median cost of the first call of a new key, and of the second call of that key."""
    first, second = [], []
    w = torch.ones(64)
    for b in batches:
        x = torch.ones(b, 64)
        start = time.perf_counter_ns()
        norm(x, w)
        mid = time.perf_counter_ns()
        norm(x, w)
        first.append(mid - start)
        second.append(time.perf_counter_ns() - mid)
    return statistics.median(first), statistics.median(second)


def measure(calls: int, repeats: int) -> list[dict[str, Any]]:
    x, w = torch.ones(8, 64), torch.ones(64)
    q = torch.ones(8, 8, 16)
    kv = torch.ones(4096, 1, 2, 16)
    indptr = torch.arange(0, 9 * 64, 64, dtype=torch.int32)
    indices = torch.arange(8 * 64, dtype=torch.int32)
    attention_args = (q, kv, kv, indptr, indices, 0.25)
    rows = []

    def row(case: str, wrapped: Any, direct: Any, target: float | None) -> None:
        fib_ns = median_ns_per_call(wrapped, calls=calls, repeats=repeats)
        direct_ns = median_ns_per_call(direct, calls=calls, repeats=repeats)
        rows.append({"case": case, "call_ns": fib_ns, "direct_ns": direct_ns,
                     "added_ns": fib_ns - direct_ns, "target_ns": target})

    original_norm = norm.__wrapped__
    row("off (dispatch disabled)", lambda: norm(x, w), lambda: original_norm(x, w), None)
    with tempfile.TemporaryDirectory() as tmp:
        build_db(Path(tmp))
        with fib.enable_apply(tmp, {"check_interval_s": 0}) as session:
            solution_norm = session.runtime.build("bench_norm_h64_identity").fn
            solution_attn = session.runtime.build("bench_decode_h8_kv2_d16_identity").fn
            row("hit, 1 var axis", lambda: norm(x, w), lambda: solution_norm(x, w), 500.0)
            row("hit, 4 var axes (attention-like)", lambda: decode(*attention_args),
                lambda: solution_attn(*attention_args), 1000.0)
            row("nearest key after resolution (37)", lambda: norm(torch.ones(37, 64), w),
                lambda: solution_norm(torch.ones(37, 64), w), None)
            original = unmeasured.__wrapped__
            row("fallback (definition not in DB)", lambda: unmeasured(x, w),
                lambda: original(x, w), None)
            first, second = first_call_ns(range(1000, 1400))
            rows.append({"case": "first call of a new key (resolve)", "call_ns": first,
                         "direct_ns": second, "added_ns": first - second, "target_ns": None})
    return rows


def flashinfer_bench_rows(calls: int, repeats: int) -> list[dict[str, Any]]:
    """flashinfer-bench's apply on the same database and definitions, when installed."""
    try:
        import flashinfer_bench as fib_bench
    except ImportError:
        return []
    x, w = torch.ones(8, 64), torch.ones(64)

    @fib_bench.apply("bench_norm_h64")
    def their_norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        db = build_db(Path(tmp))
        solution = Solution.from_dict(db.solutions["bench_norm_h64_identity"].to_dict())
        with fib.enable_apply(tmp, {"check_interval_s": 0}) as session:
            direct = session.runtime.build(solution.name).fn
            ours = median_ns_per_call(lambda: norm(x, w), calls=calls, repeats=repeats)
        runtime = fib_bench.enable_apply(tmp)
        try:
            their_norm(x, w)
            theirs = median_ns_per_call(lambda: their_norm(x, w), calls=calls // 10,
                                        repeats=repeats)
        finally:
            fib_bench.disable_apply()
        del runtime
        direct_ns = median_ns_per_call(lambda: direct(x, w), calls=calls, repeats=repeats)
        rows.append({"case": "same run: fib-runtime hit, 1 var axis", "call_ns": ours,
                     "direct_ns": direct_ns, "added_ns": ours - direct_ns, "target_ns": 500.0})
        rows.append({"case": "same run: flashinfer-bench apply hit", "call_ns": theirs,
                     "direct_ns": direct_ns, "added_ns": theirs - direct_ns,
                     "target_ns": None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    rows = measure(args.calls, args.repeats)
    external = flashinfer_bench_rows(args.calls, args.repeats)
    rows += external
    print_table(["case", "call ns", "direct ns", "added ns", "target ns"],
                [[r["case"], r["call_ns"], r["direct_ns"], r["added_ns"],
                  "-" if r["target_ns"] is None else r["target_ns"]] for r in rows])
    if external:
        ratio = external[1]["added_ns"] / external[0]["added_ns"]
        print(f"flashinfer-bench apply adds {ratio:.0f}x the time fib-runtime adds per hit")
    else:
        print("flashinfer-bench is not installed (pip install flashinfer-bench): "
              "no comparison in this run")
    hw = current_hardware()
    path = write_json("bench_dispatch", {
        "device": hw.name, "python": hw.libs.get("python"), "torch": hw.libs.get("torch"),
        "calls": args.calls, "repeats": args.repeats, "rows": rows,
        "flashinfer_bench": bool(external)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
