"""Sweep every solution of catalogue part I (norms, gemm, activation) over batch sizes.

GPU (default): median `triton.testing.do_bench` time of every solution that runs on an NVIDIA
GPU, per definition and batch size; prints one table per definition with the winner per size,
the winner's bandwidth (norms, activation) or TFLOP/s (GEMM) at the largest size next to this
run's device-to-device copy bandwidth / torch.matmul rate, and the winner at the smallest sizes
next to the launch floor (an empty Triton kernel). Then issue 28's roofline views
(benchmarks/_roofline.py): every solution's % of copy bandwidth per size with the best before
and after issue 28's kernels (the norms also at hidden 128-1024 and at a large size, 2^25
elements a tensor), decode GEMMs' weight bandwidth at M = 1..64 in the graph regime, the
per-head q norm of Qwen3 on a strided view, and eager per-call cost at batch <= 16 against the
launch floor. Writes benchmarks/results/catalogue_i_<gpu>.json.

--quick: issue 28's selection (norms at hidden 128-4096, silu_and_mul, decode GEMMs) and
sizes (1, 16, 4096, 16384, large), a few minutes. --dry: the same code paths on the CPU at
tiny sizes (Triton in its interpreter; timings meaningless), writes catalogue_i_dry.json.

--cpu: the same sweep over the solutions that run on CPU (wall-clock median), to locate the
crossovers between the CPU solutions; writes benchmarks/results/catalogue_i_cpu.json.

    python3 benchmarks/bench_catalogue_i.py [--cpu | --quick | --dry] [--only NAME ...]
        [--out DIR]
"""

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

if "--dry" in sys.argv:  # before triton is imported
    os.environ["TRITON_INTERPRET"] = "1"

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _roofline as roofline
from _common import per_call_us

from fib_runtime.build import Built, value_returning
from fib_runtime.catalogue import declared_entries, entry_functions
from fib_runtime.render import render_table
from fib_runtime.schema import Definition

REPO = Path(__file__).resolve().parents[1]
OP_TYPES = ("rmsnorm", "fused_add_rmsnorm", "activation", "gemm")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
POW2 = [2**i for i in range(15)]
GPU_SIZES = {
    "rmsnorm": sorted([*POW2, 7, 33, 255, 1000, 4097]),
    "fused_add_rmsnorm": sorted([*POW2, 7, 33, 255, 1000, 4097]),
    "activation": sorted([*POW2, 7, 33, 255, 1000, 4097]),
    "gemm": [1, 4, 7, 16, 32, 64, 128, 255, 1024, 4096, 16384],
}
CPU_SIZES = {
    "rmsnorm": [1, 4, 16, 64, 128, 256, 512, 1024, 2048, 4096, 16384],
    "fused_add_rmsnorm": [1, 4, 16, 64, 256, 1024, 4096],
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
QUICK_DEFINITIONS = [
    *(f"rmsnorm_h{h}" for h in (128, 256, 512, 1024, 4096)),
    *(f"fused_add_rmsnorm_h{h}" for h in (128, 512, 1024, 4096)),
    *(f"fused_add_rmsnorm_residual_h{h}" for h in (128, 1024, 4096)),
    "silu_and_mul_i14336",
]
QUICK_SIZES = [1, 16, 4096, 16384]
DRY_DEFINITIONS = ["rmsnorm_h128", "fused_add_rmsnorm_h256", "fused_add_rmsnorm_residual_h128"]
DRY_SIZES = [1, 7, 300]
LAUNCH_BOUND = (1, 4, 16)
QUICK_LAUNCH_BOUND = (1, 16)  # a batch of 4 would compile every Triton kernel once more
PER_HEAD_TOKENS = (1, 16, 256, 2048, 8192)
WARMUP_MS, REP_MS = 3, 10
SMALL = 16  # sizes up to this are compared with the launch floor


def definitions() -> dict[str, dict]:
    """The catalogue's definitions of OP_TYPES, and issue 28's small-hidden norms."""
    shipped = {
        p.stem: json.loads(p.read_text())
        for op in OP_TYPES
        for p in sorted((REPO / "definitions" / op).glob("*.json"))
    }
    return {**shipped, **roofline.small_hidden_definitions(shipped)}


def solutions(targets: set[str], extra: dict[str, dict] | None = None
              ) -> dict[str, dict[str, Callable]]:
    """{definition: {variant: value-returning entry point}} for entries whose target_hardware
    meets `targets`, over the definitions and `extra` ones."""
    defs = {**definitions(), **(extra or {})}
    names = list(defs)
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
                    fn = getattr(module, function)
                    if e.get("destination_passing_style"):  # outputs allocated per call
                        fn = value_returning(Built(e["variant"], fn, True),
                                             Definition.from_dict(defs[name]))
                    found.setdefault(name, {})[e["variant"]] = fn
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


def launch_floors(device: str) -> dict[str, Callable[[], object]]:
    """Launches of an empty Triton kernel (the launch floor), the ordinary way and through
    FastLauncher (the catalogue's launch path), and of one that loads one value and stores it
    (the floor of any kernel that reads memory, L2 being flushed)."""
    import triton
    import triton.language as tl

    from fib_runtime.triton_launch import FastLauncher

    @triton.jit
    def _empty(x_ptr):
        pass

    @triton.jit
    def _touch(x_ptr, y_ptr):
        tl.store(y_ptr, tl.load(x_ptr) + 1)

    x, y = torch.randn(1, device=device), torch.empty(1, device=device)
    fast = FastLauncher(_empty)
    return {"empty": lambda: _empty[(1,)](x), "empty_fast": lambda: fast((1, 1, 1), x, num_warps=4),
            "load_store": lambda: _touch[(1,)](x, y)}


def copy_gbps(measure: Callable[[Callable], float], device: str, elements: int) -> float:
    src = torch.randn(elements, device=device)
    dst = torch.empty_like(src)
    return 2 * src.nbytes / measure(lambda: dst.copy_(src)) / 1e3


def sweep(
    defs: dict[str, dict],
    sols: dict[str, dict[str, Callable]],
    sizes: Callable[[dict], list[int]],
    measure: Callable[[Callable], float],
    device: str,
) -> dict[str, dict]:
    results = {}
    for name, d in defs.items():
        variants = sols.get(name, {})
        rows = []
        for var in sizes(d):
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


def dry_timer(fn: Callable) -> float:
    """One call after a warm-up, in us: the dry run checks code paths, not speed."""
    fn()
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e6


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


def gpu_run(defs: dict[str, dict], report: dict, quick: bool, dry: bool, out: Path) -> Path:
    """The GPU sweep and issue 28's roofline views into `report`, written to
    out/catalogue_i_<gpu>[_quick].json after each part (a run cut short keeps what it
    measured); returns the file's path."""
    import triton

    from fib_runtime import families
    from fib_runtime.hardware import hardware_key
    from fib_runtime.measure.timing import graph_latency_ms

    device = "cpu" if dry else "cuda"
    measure = dry_timer if dry else gpu_timer()
    floors = launch_floors(device)
    floor_us, touch_us = measure(floors["empty"]), measure(floors["load_store"])
    copy = copy_gbps(measure, device, 1 << (20 if dry else 28))  # 1 GiB on a GPU
    name = "cpu (dry run)" if dry else torch.cuda.get_device_name()
    key = "dry" if dry else hardware_key(name).lower()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"catalogue_i_{key}{'_quick' if quick else ''}.json"

    def save() -> None:
        path.write_text(json.dumps(report, indent=1) + "\n")
    report |= {"device": name, "triton": triton.__version__, "launch_floor_us": floor_us,
               "load_store_floor_us": touch_us, "copy_gbps": copy,
               "mode": "dry" if dry else "quick" if quick else "full"}
    gemms = {n: d for n, d in defs.items() if d["op_type"] == "gemm"}
    if dry:  # a GEMM the interpreter runs in seconds
        small = families.resolve("gemm", {}, n=64, k=256).to_dict()
        gemms = {small["name"]: small}
    sweeps = {n: d for n, d in defs.items() if d["op_type"] != "gemm" or not (quick or dry)}
    sols = solutions({"any", "nvidia"}, gemms)

    def sizes(d: dict) -> list[int]:
        if dry:
            return DRY_SIZES
        large = [] if d["op_type"] == "gemm" else [roofline.large_size(d)]
        return sorted({*(QUICK_SIZES if quick else GPU_SIZES[d["op_type"]]), *large})

    results = sweep(sweeps, sols, sizes, measure, device)
    report["results"] = results
    report["summary"] = summarise(sweeps, results, floor_us, touch_us, copy)
    save()
    report["bandwidth"] = {
        n: roofline.bandwidth(n, results[n], lambda size, d=d: traffic(d, size)[0], copy)
        for n, d in sweeps.items() if d["op_type"] != "gemm"}
    save()

    def graph_us(fn: Callable[[], object]) -> float:
        return dry_timer(fn) if dry else graph_latency_ms(fn, [], device=device, warmup=5,
                                                          iters=30) * 1e3

    report["decode_gemm"] = {
        n: roofline.decode_gemm(n, d, sols.get(n, {}), lambda d, m: make_inputs(d, m, device),
                                graph_us, copy, (1, 4) if dry else roofline.DECODE_M)
        for n, d in gemms.items()}
    save()
    if "rmsnorm_h128" in sweeps:
        report["per_head"] = roofline.per_head(sols["rmsnorm_h128"], measure, copy, device,
                                               (1, 4) if dry else PER_HEAD_TOKENS)
        save()
    cases = {}
    for n, d in sweeps.items():
        for batch in (QUICK_LAUNCH_BOUND if quick else LAUNCH_BOUND) if d["op_type"] != "gemm" \
                else ():
            args = make_inputs(d, batch, device)
            for variant, fn in sols.get(n, {}).items():
                try:
                    fn(*args)
                except Exception:  # reported by the sweep already
                    continue
                cases[n, batch, variant] = lambda fn=fn, args=args: fn(*args)
    floors.pop("load_store")
    per_call = dry_timer if dry else lambda fn: per_call_us(fn, [], 200)
    report["launch_bound"] = roofline.launch_bound(cases, floors, per_call, 2 if dry else 7)
    save()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--cpu", action="store_true", help="sweep the CPU solutions")
    mode.add_argument("--quick", action="store_true", help="issue 28's selection and sizes")
    mode.add_argument("--dry", action="store_true",
                      help="the GPU run's code paths on the CPU, tiny sizes (interpreter)")
    parser.add_argument("--only", nargs="*", help="definition names to sweep")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    torch.manual_seed(0)
    defs = definitions()
    default = CPU_DEFINITIONS if args.cpu else (
        DRY_DEFINITIONS if args.dry else
        [*QUICK_DEFINITIONS, *(n for n in defs if n.startswith("gemm_n") and n.count("_") == 2)]
        if args.quick else list(defs))
    defs = {n: defs[n] for n in args.only or default}
    report: dict = {"torch": torch.__version__}
    if not args.cpu:
        print(f"\nwrote {gpu_run(defs, report, args.quick, args.dry, args.out)}")
        return
    report |= {"device": "cpu", "threads": torch.get_num_threads()}
    sols = solutions({"any", "cpu"})
    report["results"] = sweep(defs, sols, lambda d: CPU_SIZES[d["op_type"]], cpu_timer, "cpu")
    report["crossover"] = cpu_crossovers(report["results"])
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "catalogue_i_cpu.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {path}")

if __name__ == "__main__":
    main()
