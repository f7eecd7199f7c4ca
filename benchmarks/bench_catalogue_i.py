"""Sweep every solution of catalogue part I (rmsnorm, gemm, activation) over batch sizes.

GPU (default): median `triton.testing.do_bench` time of every solution that runs on an NVIDIA
GPU, per definition and batch size; prints one table per definition with the winner per size,
the winner's bandwidth (norms, activation) or TFLOP/s (GEMM) at the largest size next to this
run's device-to-device copy bandwidth / torch.matmul rate, and the winner at the smallest sizes
next to the launch floor (an empty Triton kernel). Writes
benchmarks/results/catalogue_i_<gpu>.json.

--cpu: the same sweep over the solutions that run on CPU (wall-clock median), to locate the
crossovers between the CPU solutions; writes benchmarks/results/catalogue_i_cpu.json.

    python3 benchmarks/bench_catalogue_i.py [--cpu] [--only NAME ...] [--out DIR]
"""

import argparse
import importlib.util
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from fib_runtime.catalogue import declared_entries, entry_functions
from fib_runtime.render import render_table

REPO = Path(__file__).resolve().parents[1]
OP_TYPES = ("rmsnorm", "activation", "gemm")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
POW2 = [2**i for i in range(15)]
GPU_SIZES = {
    "rmsnorm": sorted([*POW2, 7, 33, 255, 1000, 4097]),
    "activation": sorted([*POW2, 7, 33, 255, 1000, 4097]),
    "gemm": [1, 4, 7, 16, 32, 64, 128, 255, 1024, 4096, 16384],
}
CPU_SIZES = {
    "rmsnorm": [1, 4, 16, 64, 128, 256, 512, 1024, 2048, 4096, 16384],
    "activation": [1, 4, 16, 64, 128, 256, 1024, 4096],
    "gemm": [1, 4, 16, 32, 64, 128, 256, 512],
}
CPU_DEFINITIONS = [
    "rmsnorm_h128",
    "rmsnorm_h4096",
    "rmsnorm_h7168",
    "fused_add_rmsnorm_h4096",
    "silu_and_mul_i14336",
    "gemm_n4096_k4096",
]
WARMUP_MS, REP_MS = 3, 10
SMALL = 16  # sizes up to this are compared with the launch floor


def definitions() -> dict[str, dict]:
    return {
        p.stem: json.loads(p.read_text())
        for op in OP_TYPES
        for p in sorted((REPO / "definitions" / op).glob("*.json"))
    }


def solutions(targets: set[str]) -> dict[str, dict[str, Callable]]:
    """{definition: {variant: entry point}} for entries whose target_hardware meets `targets`."""
    names = list(definitions())
    found: dict[str, dict[str, Callable]] = {}
    for op in OP_TYPES:
        for path in sorted((REPO / "definitions" / op / "solutions").glob("*.py")):
            entries = [e for e in declared_entries(path) if targets & set(e["target_hardware"])]
            if not entries:
                continue
            spec = importlib.util.spec_from_file_location(f"bench_{op}_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            for e in entries:
                for name, function in entry_functions(e, names, path).items():
                    found.setdefault(name, {})[e["variant"]] = getattr(module, function)
    return found


def make_inputs(d: dict, var: int, device: str) -> list[torch.Tensor]:
    axes = {n: a["value"] if a["type"] == "const" else var for n, a in d["axes"].items()}
    scale = axes["K"] ** -0.25 if d["op_type"] == "gemm" else 1.0
    return [
        (torch.randn([axes[a] for a in s["shape"]], device=device) * scale).to(DTYPES[s["dtype"]])
        for s in d["inputs"].values()
    ]


def traffic(d: dict, var: int) -> tuple[int, int]:
    """(bytes read + written, flops) of one call with every var axis set to `var`."""
    axes = {n: a["value"] if a["type"] == "const" else var for n, a in d["axes"].items()}
    total = 0
    for spec in [*d["inputs"].values(), *d["outputs"].values()]:
        numel = 1
        for a in spec["shape"]:
            numel *= axes[a]
        total += numel * DTYPES[spec["dtype"]].itemsize
    flops = 2 * var * axes["N"] * axes["K"] if d["op_type"] == "gemm" else 0
    return total, flops


def gpu_timer() -> Callable[[Callable], float]:
    import triton.testing

    def measure(fn: Callable) -> float:
        ms = triton.testing.do_bench(fn, warmup=WARMUP_MS, rep=REP_MS, return_mode="median")
        return ms * 1e3

    return measure


def cpu_timer(fn: Callable) -> float:
    fn()
    runs = []
    deadline = time.perf_counter() + 0.3
    while len(runs) < 5 or (time.perf_counter() < deadline and len(runs) < 200):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs) * 1e6


def launch_floors_us(measure: Callable[[Callable], float]) -> tuple[float, float]:
    """do_bench times of an empty Triton kernel (the launch floor) and of one that loads one
    value and stores it (the floor of any kernel that reads memory, L2 being flushed)."""
    import triton
    import triton.language as tl

    @triton.jit
    def _empty(x_ptr):
        pass

    @triton.jit
    def _touch(x_ptr, y_ptr):
        tl.store(y_ptr, tl.load(x_ptr) + 1)

    x, y = torch.randn(1, device="cuda"), torch.empty(1, device="cuda")
    return measure(lambda: _empty[(1,)](x)), measure(lambda: _touch[(1,)](x, y))


def copy_gbps(measure: Callable[[Callable], float]) -> float:
    src = torch.randn(256 * 1024 * 1024 // 4, device="cuda")  # 1 GiB
    dst = torch.empty_like(src)
    return 2 * src.nbytes / measure(lambda: dst.copy_(src)) / 1e3


def sweep(
    defs: dict[str, dict],
    sols: dict[str, dict[str, Callable]],
    sizes: dict[str, list[int]],
    measure: Callable[[Callable], float],
    device: str,
) -> dict[str, dict]:
    results = {}
    for name, d in defs.items():
        variants = sols.get(name, {})
        rows = []
        for var in sizes[d["op_type"]]:
            inputs = make_inputs(d, var, device)
            times = {}
            for variant, fn in variants.items():
                try:
                    times[variant] = measure(lambda fn=fn, args=inputs: fn(*args))
                except Exception as exc:  # a failing solution is reported, not fatal
                    times[variant] = None
                    print(f"  {name} {variant} size {var}: {type(exc).__name__}: {exc}")
            ok = {v: t for v, t in times.items() if t is not None}
            rows.append({"size": var, "us": times, "winner": min(ok, key=ok.get) if ok else None})
        results[name] = {"variants": list(variants), "rows": rows}
        print_table(name, results[name])
    return results


def print_table(name: str, result: dict) -> None:
    variants = result["variants"]
    print(f"\n{name} (median us)")
    rows = [[row["size"], *("fail" if row["us"][v] is None else f"{row['us'][v]:.1f}"
                            for v in variants), row["winner"]] for row in result["rows"]]
    print(render_table(["size", *(v[:16] for v in variants), "winner"], rows, align="right"))


def summarise(
    defs: dict, results: dict, floor_us: float, touch_us: float, copy: float
) -> dict[str, dict]:
    """Largest size: winner's GB/s vs copy or TFLOP/s vs torch.matmul; small sizes vs floor."""
    summary = {}
    print(f"\nlaunch floor {floor_us:.2f} us (load+store kernel {touch_us:.2f} us)")
    print(f"device copy {copy:.0f} GB/s")
    for name, result in results.items():
        d, last = defs[name], result["rows"][-1]
        win = last["winner"]
        moved, flops = traffic(d, last["size"])
        entry: dict = {"largest_size": last["size"], "winner": win, "us": last["us"][win]}
        if flops:
            tflops = flops / last["us"][win] / 1e6
            matmul = flops / last["us"]["torch"] / 1e6
            pct = 100 * tflops / matmul
            entry |= {"tflops": tflops, "torch_matmul_tflops": matmul, "pct_of_matmul": pct}
            text = f"{tflops:.0f} TFLOP/s ({pct:.0f}% of torch.matmul {matmul:.0f})"
        else:
            gbps = moved / last["us"][win] / 1e3
            entry |= {"gbps": gbps, "pct_of_copy": 100 * gbps / copy}
            text = f"{gbps:.0f} GB/s ({entry['pct_of_copy']:.0f}% of copy)"
        small = [r for r in result["rows"] if r["size"] <= SMALL and r["winner"]]
        ratios = [r["us"][r["winner"]] / floor_us for r in small]
        entry["small_vs_floor"] = {r["size"]: ratio for r, ratio in zip(small, ratios, strict=True)}
        worst = max(ratios) if ratios else float("nan")
        vs_touch = worst * floor_us / touch_us
        print(
            f"{name:>26}: @{last['size']} {win} {text}; sizes<={SMALL}: <= {worst:.2f}x floor, "
            f"{vs_touch:.2f}x load+store"
        )
        summary[name] = entry
    return summary


def cpu_crossovers(results: dict) -> dict[str, int | None]:
    """Per definition, the smallest swept size from which a cpu_* variant wins every size."""
    crossovers = {}
    for name, result in results.items():
        crossovers[name] = None
        for row in reversed(result["rows"]):
            if not (row["winner"] or "").startswith("cpu"):
                break
            crossovers[name] = row["size"]
        print(f"{name:>26}: cpu solution wins from size {crossovers[name]}")
    return crossovers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="sweep the CPU solutions")
    parser.add_argument("--only", nargs="*", help="definition names to sweep")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    torch.manual_seed(0)
    defs = definitions()
    selected = args.only or (CPU_DEFINITIONS if args.cpu else list(defs))
    defs = {n: defs[n] for n in selected}
    report: dict = {"torch": torch.__version__}
    if args.cpu:
        report |= {"device": "cpu", "threads": torch.get_num_threads()}
        sols = solutions({"any", "cpu"})
        report["results"] = sweep(defs, sols, CPU_SIZES, cpu_timer, "cpu")
        report["crossover"] = cpu_crossovers(report["results"])
        key = "cpu"
    else:
        import triton

        from fib_runtime.hardware import hardware_key

        name = torch.cuda.get_device_name()
        measure = gpu_timer()
        (floor_us, touch_us), copy = launch_floors_us(measure), copy_gbps(measure)
        report |= {"device": name, "triton": triton.__version__}
        report |= {"launch_floor_us": floor_us, "load_store_floor_us": touch_us, "copy_gbps": copy}
        results = sweep(defs, solutions({"any", "nvidia"}), GPU_SIZES, measure, "cuda")
        report["results"] = results
        report["summary"] = summarise(defs, results, floor_us, touch_us, copy)
        key = hardware_key(name).lower()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"catalogue_i_{key}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
