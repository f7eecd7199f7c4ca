"""How the database's costs grow with its size: offline load, serving start (cold and warm),
reload check, merge and validate, each with time and peak RSS, at 100k / 1M / ... traces.

Run: python benchmarks/bench_store_scale.py --traces 100000 1000000 [--work DIR] [--label L]
     [--merge-max N] [--reload-only 10000000] [--baseline DIR [--baseline-max N]]
Each measurement runs in a fresh process (peak RSS is that process's). The generated
databases (bench_store.make_db: 50 definitions, 4 solutions each, traces of three GPU
models) are kept under --work and reused. `--reload-only N` adds a row with only the
reload check, on a database whose trace files have the sizes of N traces (sparse files:
the check reads no contents). Writes benchmarks/results/bench_store_scale[_LABEL].json.
Each cell records the machine's 1-minute load average when it started (the table shows a
row's highest). Goals (issue 30): serving start <= 1 s and <= 100 MB added RSS at 1M
traces; reload check <= 10 ms at 10M; offline load >= 200k traces/s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_json
from bench_store import make_db

SERVED = "H100"

_CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
src = os.environ.get("FIB_BENCH_SRC")
if src:  # another checkout's fib_runtime (e.g. before a change), not the editable install's
    sys.meta_path[:] = [f for f in sys.meta_path
                        if "__editable__" not in getattr(f, "__module__", "")]
    sys.path.insert(0, src)
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
import fib_runtime
from fib_runtime.hardware import Hardware
mode, root = sys.argv[1], Path(sys.argv[2])
out = {"load_avg": os.getloadavg()[0]}  # the machine's 1-minute load average at start
base = rss_mb()
start = time.perf_counter()
if mode == "load":
    from fib_runtime.store import TraceDB
    db = TraceDB.open(root)
    out["traces"] = sum(len(db.traces_for(d)) for d in db.definitions)
elif mode == "serve":
    from fib_runtime.dispatch.runtime import Runtime
    rt = Runtime(root, hardware=Hardware("NVIDIA H100 80GB HBM3", "@SERVED@"), watch=False)
    d = rt.dispatcher(sorted(rt.db.definitions)[0])
    out["keys"] = len(d.table.for_timing("device"))
    out["seconds"] = time.perf_counter() - start
    times = []
    for _ in range(50):
        t = time.perf_counter(); rt.changed(); times.append(time.perf_counter() - t)
    out["reload_check_ms"] = sorted(times)[len(times) // 2] * 1e3
elif mode == "check":
    from fib_runtime.dispatch.runtime import Runtime
    rt = Runtime.__new__(Runtime)
    rt.root = root
    from fib_runtime.store import decisions_fingerprint
    from fib_runtime.trust import stamp
    class S: pass
    rt.snapshot = S(); rt.snapshot.fingerprint = ""; rt.snapshot.trust_stamp = stamp()
    times = []
    for _ in range(50):
        t = time.perf_counter(); rt.changed(); times.append(time.perf_counter() - t)
    out["reload_check_ms"] = sorted(times)[len(times) // 2] * 1e3
elif mode == "merge":
    from fib_runtime.store.merge import merge
    merge([root], Path(sys.argv[3]))
elif mode == "validate":
    import contextlib, io
    from fib_runtime.cli.main import main
    with contextlib.redirect_stdout(io.StringIO()):
        out["exit"] = main(["validate", str(root)])
out.setdefault("seconds", time.perf_counter() - start)
out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out["base_mb"] = base
out["added_peak_mb"] = out["peak_mb"] - base
print("RESULT " + json.dumps(out))
""".replace("@SERVED@", SERVED)


def child(mode: str, root: Path, *extra: str, cache: Path, src: Path | None = None) -> dict:
    env = {**os.environ, "FIB_CACHE_PATH": str(cache)}
    if src is not None:
        env["FIB_BENCH_SRC"] = str(src)
    proc = subprocess.run([sys.executable, "-c", _CHILD, mode, str(root), *extra], env=env,
                          capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{mode} failed:\n{proc.stdout}\n{proc.stderr}")


def database(work: Path, n: int, defs: int) -> Path:
    root = work / f"db_{n}"
    if not (root / "traces").is_dir():
        start = time.perf_counter()
        make_db(root, n, defs)
        print(f"generated {n} traces in {time.perf_counter() - start:.0f} s", flush=True)
    return root


def sparse_database(work: Path, n: int, defs: int, like: Path) -> Path:
    """A database whose trace files have the sizes of `n` traces (holes, no contents)."""
    root = work / f"sparse_{n}"
    if not root.is_dir():
        make_db(root, defs, defs)  # one trace per definition: definitions and solutions
        per_trace = sum(p.stat().st_size for p in (like / "traces").rglob("*.jsonl")) / max(
            1, int(like.name.split("_")[1]))
        for path in (root / "traces").rglob("*.jsonl"):
            os.truncate(path, int(per_trace * n / defs))
    return root


def clear_tables(root: Path, cache: Path) -> None:
    for folder in (root / ".fib" / "tables", cache / "tables"):
        if folder.is_dir():
            for path in folder.iterdir():
                path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, nargs="+", default=[100_000])
    parser.add_argument("--definitions", type=int, default=50)
    parser.add_argument("--work", type=Path, default=Path("/tmp/fib_bench_store_scale"))
    parser.add_argument("--label", default="")
    parser.add_argument("--merge-max", type=int, default=1_000_000,
                        help="merge only databases up to this size (default: %(default)s)")
    parser.add_argument("--reload-only", type=int, nargs="*", default=[])
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="a folder holding another fib_runtime (e.g. `git archive BASE "
                        "fib_runtime | tar -x -C DIR`): each measurement is run with it "
                        "too, right before this checkout's, rows marked 'base'")
    parser.add_argument("--baseline-max", type=int, default=None, metavar="N",
                        help="run the baseline only for databases up to this size")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    cache = args.work / "cache"
    rows, results = [], []
    codes = [("base", args.baseline), ("", None)] if args.baseline else [("", None)]
    for n, (label, src) in ((n, code) for n in args.traces for code in codes
                            if not (code[0] and args.baseline_max and n > args.baseline_max)):
        root = database(args.work, n, args.definitions)
        load = child("load", root, cache=cache, src=src)
        clear_tables(root, cache)
        cold = child("serve", root, cache=cache, src=src)
        warm = child("serve", root, cache=cache, src=src)
        validated = child("validate", root, cache=cache, src=src)
        merged = None
        if n <= args.merge_max:
            dest = args.work / f"merged_{n}"
            subprocess.run(["rm", "-rf", str(dest)], check=True)
            merged = child("merge", root, str(dest), cache=cache, src=src)
            subprocess.run(["rm", "-rf", str(dest)], check=True)
        result = {"traces": n, "code": label or "this checkout", "load": load,
                  "serve_cold": cold, "serve_warm": warm, "merge": merged,
                  "validate": validated}
        results.append(result)
        busy = max(c["load_avg"] for c in (load, cold, warm, validated, merged) if c)
        rows.append([f"{n} {label}".strip(), f"{load['seconds']:.2f}",
                     f"{n / load['seconds']:,.0f}",
                     f"{load['added_peak_mb']:.0f}",
                     f"{cold['seconds']:.3f}", f"{cold['added_peak_mb']:.0f}",
                     f"{warm['seconds']:.3f}", f"{warm['added_peak_mb']:.0f}",
                     f"{warm['reload_check_ms']:.2f}",
                     "-" if merged is None else f"{merged['seconds']:.1f}",
                     "-" if merged is None else f"{merged['added_peak_mb']:.0f}",
                     f"{validated['seconds']:.1f}", f"{validated['added_peak_mb']:.0f}",
                     f"{busy:.1f}"])
        print(rows[-1], flush=True)
    like = args.work / f"db_{args.traces[0]}"
    for n in args.reload_only:
        root = sparse_database(args.work, n, args.definitions, like)
        check = child("check", root, cache=cache)
        results.append({"traces": n, "sparse": True, "reload_check": check})
        rows.append([f"{n} (sparse)", *["-"] * 7, f"{check['reload_check_ms']:.2f}",
                     *["-"] * 4, f"{check['load_avg']:.1f}"])
    print_table(["traces", "load s", "load traces/s", "load +MB", "serve cold s",
                 "cold +MB", "serve warm s", "warm +MB", "reload check ms", "merge s",
                 "merge +MB", "validate s", "validate +MB", "load avg (max)"], rows)
    name = "bench_store_scale" + (f"_{args.label}" if args.label else "")
    print(f"wrote {write_json(name, {'served_hardware': SERVED, 'rows': results})}")


if __name__ == "__main__":
    main()
