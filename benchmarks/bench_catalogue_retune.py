"""Retune the built-in catalogue on this GPU over a grid of workloads, with `fib retune`'s engine.

Norms, activation and GEMM over batch sizes 1..16384 (powers of two and a few odd sizes);
paged decode attention over batch {1,4,16,64,256} x mean KV length {64,512,4096}. Prints per
definition the latency of every solution and the winner per workload, and for the largest
workloads the winner's achieved bandwidth (norms, activation, attention: bytes of K and V
read) or TFLOP/s (GEMM) next to this run's device-to-device copy bandwidth / torch.matmul
rate; the small-batch winners next to the launch floor (an empty Triton kernel timed the
same way). Writes benchmarks/results/catalogue_retune_<gpu>.json.

    python3 benchmarks/bench_catalogue_retune.py [--db DIR] [--definitions NAME ...]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_json

from fib_runtime.catalogue import install
from fib_runtime.hardware import current_hardware
from fib_runtime.measure.timing import median_latency_ms
from fib_runtime.retuning import retune
from fib_runtime.schema import Definition, Status, Trace
from fib_runtime.store import TraceDB
from fib_runtime.tensors import torch_dtype

BATCHES = sorted({*(2**i for i in range(15)), 7, 33, 255, 1000, 4097})
DEFAULT_DEFINITIONS = [
    "rmsnorm_h4096", "fused_add_rmsnorm_h4096", "silu_and_mul_i14336", "gemm_n6144_k4096",
    "gemm_n4096_k4096", "gemm_n28672_k4096", "gemm_n4096_k14336",
    "gqa_paged_decode_h32_kv8_d128_ps1", "gqa_paged_decode_h32_kv4_d128_ps1",
]
DECODE_BATCHES, DECODE_KV = (1, 4, 16, 64, 256), (64, 512, 4096)
SMALL_BATCH = 16  # winners at or below this size are compared with the launch floor


def workload_axes(definition: Definition) -> list[dict[str, int]]:
    if definition.op_type == "gqa_paged":
        return [{"batch_size": b, "len_indptr": b + 1, "num_kv_indices": b * kv,
                 "num_pages": b * kv + b * kv // 4 + 16}
                for b in DECODE_BATCHES for kv in DECODE_KV]
    (axis,) = definition.var_axes
    return [{axis: b} for b in BATCHES]


def add_workloads(db: TraceDB, names: list[str]) -> None:
    records = []
    for name in names:
        definition = db.definitions[name]
        for axes in workload_axes(definition):
            inputs: dict[str, Any] = {n: {"type": "random"} for n in definition.inputs}
            if "sm_scale" in inputs:
                inputs["sm_scale"] = {"type": "scalar",
                                      "value": 1 / math.sqrt(definition.const_axes["head_dim"])}
            records.append(Trace.from_dict({
                "definition": name, "solution": None, "evaluation": None,
                "workload": {"uuid": str(uuid.uuid4()), "axes": axes, "inputs": inputs}}))
    db.append_workloads(records)


def moved(definition: Definition, axes: dict[str, int]) -> tuple[str, float]:
    """('GB/s', bytes) for memory-bound ops, ('TFLOP/s', flops) for GEMM."""
    values = {**definition.const_axes, **axes}
    if definition.op_type == "gemm":
        return "TFLOP/s", 2.0 * values["M"] * values["N"] * values["K"]
    if definition.op_type == "gqa_paged":
        item = torch_dtype(definition.inputs["k_cache"].dtype).itemsize
        return "GB/s", 2.0 * values["num_kv_indices"] * values["num_kv_heads"] * \
            values["head_dim"] * item
    total = 0.0
    for spec in (*definition.inputs.values(), *definition.outputs.values()):
        if spec.shape is not None:
            total += math.prod(values[a] for a in spec.shape) * torch_dtype(spec.dtype).itemsize
    return "GB/s", total


@triton.jit
def empty_kernel(x_ptr, n: tl.constexpr) -> None:
    """Does nothing: its launch is the floor small-batch kernels are compared with."""


def ceilings() -> dict[str, float]:
    """This device's copy bandwidth (read + write), matmul rate and launch floor."""
    src = torch.randn(1 << 28, device="cuda", dtype=torch.bfloat16)  # 512 MiB
    dst = torch.empty_like(src)
    copy_ms = median_latency_ms(dst.copy_, [src], device="cuda", warmup=5, iters=30)
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    mm_ms = median_latency_ms(torch.matmul, [a, b], device="cuda", warmup=5, iters=20)
    floor_ms = median_latency_ms(lambda x: empty_kernel[(1,)](x, 1), [src], device="cuda",
                                 warmup=10, iters=100)
    return {"copy_gb_s": 2 * src.numel() * 2 / copy_ms / 1e6,
            "matmul_tflop_s": 2 * 8192**3 / mm_ms / 1e9, "launch_floor_ms": floor_ms}


def collect(db: TraceDB, name: str, key: str) -> dict[tuple[tuple[str, int], ...], dict]:
    """Per workload (axes): every solution's latency and the reference's."""
    rows: dict[tuple[tuple[str, int], ...], dict] = defaultdict(
        lambda: {"solutions": {}, "failures": {}, "reference_ms": []})
    for trace in db.traces_for(name, key):
        row = rows[tuple(sorted(trace.workload.axes.items()))]
        evaluation = trace.evaluation
        if evaluation.status is Status.PASSED:
            row["solutions"][trace.solution] = evaluation.performance.latency_ms
            row["reference_ms"].append(evaluation.performance.reference_latency_ms)
        else:
            row["failures"][trace.solution] = evaluation.status.value
    return rows


def report(db: TraceDB, names: list[str], limits: dict[str, float]) -> dict[str, Any]:
    hw = current_hardware()
    results: dict[str, Any] = {}
    for name in names:
        definition = db.definitions[name]
        rows = collect(db, name, hw.key)
        table, entries = [], []
        for axes_items in sorted(rows, key=lambda a: tuple(v for _, v in a)):
            row = rows[axes_items]
            axes = dict(axes_items)
            if not row["solutions"]:
                continue
            winner = min(row["solutions"], key=row["solutions"].get)
            latency = row["solutions"][winner]
            unit, amount = moved(definition, axes)
            rate = amount / latency / 1e9 if unit == "TFLOP/s" else amount / latency / 1e6
            entries.append({"axes": axes, "winner": winner, "latency_ms": latency,
                            "solutions": row["solutions"], "failures": row["failures"],
                            "reference_ms": statistics.median(row["reference_ms"]),
                            "rate": rate, "unit": unit})
            table.append([",".join(f"{k}={v}" for k, v in axes.items()
                                   if k in ("batch_size", "M", "num_tokens", "num_kv_indices")),
                          winner.split("__")[-1], latency * 1e3, f"{rate:,.0f} {unit}",
                          " ".join(f"{s.split('__')[-1]}={v * 1e3:.1f}"
                                   for s, v in sorted(row["solutions"].items()))])
        print(f"\n{name} on {hw.name} (latency us)")
        print_table(["workload", "winner", "us", "winner rate", "all solutions (us)"], table)
        largest = entries[-1] if entries else None
        if largest:
            ceiling = limits["matmul_tflop_s"] if largest["unit"] == "TFLOP/s" \
                else limits["copy_gb_s"]
            largest["fraction_of_ceiling"] = largest["rate"] / ceiling
            print(f"largest: {largest['winner']} {largest['rate']:,.1f} {largest['unit']} = "
                  f"{100 * largest['fraction_of_ceiling']:.0f}% of this run's "
                  f"{'torch.matmul rate' if largest['unit'] == 'TFLOP/s' else 'copy bandwidth'}")
        small = [e for e in entries if definition.op_type != "gqa_paged"
                 and max(e["axes"].values()) <= SMALL_BATCH]
        for entry in small:
            entry["over_floor"] = entry["latency_ms"] / limits["launch_floor_ms"] - 1
        if small:
            worst = max(small, key=lambda e: e["over_floor"])
            print(f"small batches: worst winner {100 * worst['over_floor']:+.0f}% over the "
                  f"launch floor ({limits['launch_floor_ms'] * 1e3:.1f} us) at {worst['axes']}")
        results[name] = {"workloads": entries, "largest": largest}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", type=Path, default=None, help="database (default: a temp dir)")
    parser.add_argument("--definitions", nargs="*", default=DEFAULT_DEFINITIONS)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.db or Path(tmp)
        limits = ceilings()  # first: a broken measurement should not cost a whole retune
        db = TraceDB.open(root, create=True)
        install(db)
        add_workloads(db, args.definitions)
        run = retune(root, definitions=args.definitions, warmup=args.warmup, iters=args.iters)
        print(f"retune: {run.counts()}")
        print(f"this run: copy {limits['copy_gb_s']:,.0f} GB/s, torch.matmul fp16 "
              f"{limits['matmul_tflop_s']:,.0f} TFLOP/s, empty Triton kernel "
              f"{limits['launch_floor_ms'] * 1e3:.1f} us")
        results = report(TraceDB.open(root), args.definitions, limits)
    hw = current_hardware()
    path = write_json(f"catalogue_retune_{hw.key.lower()}", {
        "device": hw.name, "hardware_key": hw.key, "libs": hw.libs, "limits": limits,
        "retune_counts": run.counts(), "definitions": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
