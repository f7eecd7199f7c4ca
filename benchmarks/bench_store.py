"""Load speed of the trace database: 100k traces over 50 definitions.

Run: python benchmarks/bench_store.py [--traces N] [--definitions N]
Prints a table and writes benchmarks/results/bench_store.json. Target: >= 100k traces/s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_json

from fib_runtime.store import TraceDB
from fib_runtime.store.layout import definition_file, solution_file, trace_file

HARDWARE = ["NVIDIA H100 80GB HBM3", "NVIDIA H200", "NVIDIA A800-SXM4-80GB"]


def make_db(root: Path, n_traces: int, n_defs: int) -> None:
    """Write definitions, four solutions each and a realistic trace file per definition."""
    per_def = n_traces // n_defs
    for d in range(n_defs):
        name = f"rmsnorm_h{128 * (d + 1)}"
        definition = {
            "name": name, "op_type": "rmsnorm",
            "axes": {"batch_size": {"type": "var"},
                     "hidden_size": {"type": "const", "value": 128 * (d + 1)}},
            "inputs": {"x": {"shape": ["batch_size", "hidden_size"], "dtype": "bfloat16"},
                       "w": {"shape": ["hidden_size"], "dtype": "bfloat16"}},
            "outputs": {"y": {"shape": ["batch_size", "hidden_size"], "dtype": "bfloat16"}},
            "reference": "def run(x, w):\n    return x * w\n",
        }
        path = definition_file(root, "rmsnorm", name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(definition))
        for s in range(4):
            solution = {
                "name": f"{name}_sol{s}", "definition": name, "author": "bench",
                "spec": {"language": "python", "target_hardware": ["any"],
                         "entry_point": "main.py::run", "destination_passing_style": False},
                "sources": [{"path": "main.py",
                             "content": f"def run(x, w):\n    return x * w  # {s}\n"}]}
            path = solution_file(root, "bench", "rmsnorm", name, solution["name"])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(orjson.dumps(solution))
        lines = []
        for i in range(per_def):
            latency = 0.01 + (i % 97) * 1e-3
            lines.append(orjson.dumps({
                "definition": name, "solution": f"{name}_sol{i % 4}",
                "workload": {"uuid": str(uuid.uuid4()), "axes": {"batch_size": 1 + i % 4096},
                             "inputs": {"x": {"type": "random"}, "w": {"type": "random"}}},
                "evaluation": {
                    "status": "PASSED", "log": "",
                    "correctness": {"max_relative_error": 1e-3, "max_absolute_error": 2e-3},
                    "performance": {"latency_ms": latency, "reference_latency_ms": 0.05,
                                    "speedup_factor": 0.05 / latency},
                    "environment": {"hardware": HARDWARE[i % 3],
                                    "libs": {"torch": "2.11.0", "triton": "3.6.0"}},
                    "timestamp": "2026-11-21T12:00:00Z"}}))
        path = trace_file(root, "rmsnorm", name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\n".join(lines) + b"\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--definitions", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_db(root, args.traces, args.definitions)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            db = TraceDB.open(root)
            times.append(time.perf_counter() - start)
            loaded = sum(len(db.traces_for(d)) for d in db.definitions)
            del db  # freeing the previous load is not part of the next one
    seconds = statistics.median(times)
    rate = loaded / seconds
    print_table(["traces", "definitions", "load s (median)", "traces/s", "target"],
                [[loaded, args.definitions, seconds, rate, "100,000"]])
    path = write_json("bench_store", {
        "traces": loaded, "definitions": args.definitions, "load_seconds": times,
        "median_load_seconds": seconds, "traces_per_second": rate,
        "target_traces_per_second": 100_000, "meets_target": rate >= 100_000})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
