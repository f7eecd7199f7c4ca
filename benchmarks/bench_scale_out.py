"""What scale-out costs on the driver side: cluster-retune driver throughput, bytes per
trace, and `fib merge` speed.

Run: python benchmarks/bench_scale_out.py [--workloads N] [--rounds N]
Needs Ray (pip install 'fib-runtime[ray]'). Starts a local Ray instance (127.0.0.1) whose
actors answer at once (no benchmark runs): what is left is the driver's own work per
workload task (hand out, wait, receive) and per trace (build, append, index): the rate
end to end on this machine, and the driver process's CPU time per task (its own ceiling:
1000 / that many tasks per second). Prints a table and writes
benchmarks/results/scale_out_cpu.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import print_table, write_json

from fib_runtime.retuning import RetuneConfig, RetuneSummary
from fib_runtime.retuning.cluster import ClusterDriver, Slot
from fib_runtime.retuning.plan import workload_tasks
from fib_runtime.retuning.run import new_job
from fib_runtime.schema import Definition, Solution, Trace
from fib_runtime.store import TraceDB
from fib_runtime.store.merge import merge
from tests import factories

DEF = "toy_norm_h8"


class InstantEvaluator:
    """An actor that answers every workload at once with PASSED results."""

    def __init__(self, gpu: bool, db_root: str, startup_timeout: float,
                 parent: Any = None) -> None:
        del gpu, db_root, startup_timeout, parent

    def start(self) -> dict[str, Any]:
        return {"name": "CPU bench", "key": "cpu", "libs": {"torch": "x"}, "gpus": [],
                "pid": os.getpid()}

    def run(self, definition: dict[str, Any], workload: dict[str, Any],
            solutions: list[dict[str, Any]], settings: dict[str, Any],
            tolerance: Any) -> dict[str, Any]:
        passed = {"status": "PASSED", "latency_ms": 0.0123, "log": "",
                  "correctness": {"max_absolute_error": 1e-6, "max_relative_error": 2e-6}}
        return {"results": [(s["name"], passed, 0.0456) for s in solutions],
                "unusable": None}

    def stop(self) -> None:
        pass


def make_db(root: Path, workloads: int, solutions: int) -> TraceDB:
    db = TraceDB.open(root, create=True)
    db.add_definition(Definition.from_dict(factories.definition()))
    for i in range(solutions):
        db.add_solution(Solution.from_dict(factories.solution(f"sol{i}")))
    db.append_workloads(Trace.from_dict(factories.workload(batch=b + 1))
                        for b in range(workloads))
    return db


def driver_round(ray: Any, workloads: int, solutions: int, actors: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        db = make_db(Path(tmp), workloads, solutions)
        job = new_job(db, RetuneSummary(), warmup=1, iters=1, timeout=60.0, force=False,
                      config=RetuneConfig())
        items = workload_tasks(db, None, None)
        node = ray.get_runtime_context().get_node_id()
        slots = [Slot(node, "127.0.0.1", False) for _ in range(actors)]
        driver = ClusterDriver(ray, job, items, slots, evaluator=InstantEvaluator)
        start, cpu = time.perf_counter(), time.process_time()
        try:
            driver.run_all()
        finally:
            driver.shutdown()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        trace_files = list((Path(tmp) / "traces").rglob("*.jsonl"))
        size = sum(p.stat().st_size for p in trace_files)
        count = sum(len(p.read_bytes().splitlines()) for p in trace_files)
        assert count == workloads * solutions, count
        return {"seconds": seconds, "driver_cpu_s": cpu, "bytes_per_trace": size / count}


def merge_round(shards: int, per_shard: int) -> dict[str, float]:
    """Shards that overlap by half: each holds its own half and a half shared by all."""
    with tempfile.TemporaryDirectory() as tmp:
        src = TraceDB.open(Path(tmp) / "fleet", create=True)
        src.add_definition(Definition.from_dict(factories.definition()))
        for s in range(shards):
            batches = [*range(per_shard // 2),
                       *range(10**6 * (s + 1), 10**6 * (s + 1) + per_shard // 2)]
            src.append_workloads((Trace.from_dict(factories.workload(batch=b + 1))
                                  for b in batches), shard=f"host{s}-1")
        start = time.perf_counter()
        report = merge([Path(tmp) / "fleet"], Path(tmp) / "merged")
        seconds = time.perf_counter() - start
        assert report.workloads == per_shard // 2 * (shards + 1), report
        line_bytes = (Path(tmp) / "merged" / "workloads" / "rmsnorm" / f"{DEF}.jsonl"
                      ).stat().st_size / report.workloads
        return {"seconds": seconds, "records": shards * per_shard,
                "bytes_per_workload": line_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--actors", type=int, default=4)
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be >= 2 (a median needs several rounds)")
    import ray

    ray.init(num_cpus=args.actors, include_dashboard=False, log_to_driver=False)
    rows, results = [], {}
    try:
        for solutions in (1, 8):
            rounds = [driver_round(ray, args.workloads, solutions, args.actors)
                      for _ in range(args.rounds)]
            seconds = statistics.median(r["seconds"] for r in rounds)
            cpu_ms = statistics.median(r["driver_cpu_s"] for r in rounds) / args.workloads * 1e3
            tasks_s = args.workloads / seconds
            result = {"workloads": args.workloads, "solutions": solutions,
                      "actors": args.actors, "seconds_median": seconds,
                      "tasks_per_s": tasks_s, "traces_per_s": tasks_s * solutions,
                      "driver_cpu_ms_per_task": cpu_ms,
                      "bytes_per_trace": rounds[0]["bytes_per_trace"]}
            results[f"driver_{solutions}_solutions"] = result
            rows.append([f"driver, {solutions} solution(s)/workload", f"{tasks_s:,.0f} tasks/s",
                         f"{tasks_s * solutions:,.0f} traces/s", f"{cpu_ms:.2f} ms",
                         f"{result['bytes_per_trace']:.0f} B/trace"])
    finally:
        ray.shutdown()
    merges = [merge_round(4, 5000) for _ in range(args.rounds)]
    seconds = statistics.median(m["seconds"] for m in merges)
    results["merge"] = {"shards": 4, "records": merges[0]["records"], "seconds_median": seconds,
                        "records_per_s": merges[0]["records"] / seconds,
                        "bytes_per_workload": merges[0]["bytes_per_workload"]}
    rows.append(["merge 4 shards x 5000 workloads", f"{results['merge']['records_per_s']:,.0f}"
                 " records/s", "", "", f"{merges[0]['bytes_per_workload']:.0f} B/workload"])
    print_table(["what", "rate", "", "driver CPU/task", "size"], rows)
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "ray": ray.__version__}
    print(write_json("scale_out_cpu", results))


if __name__ == "__main__":
    main()
