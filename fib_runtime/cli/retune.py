"""`fib retune`: benchmark the solutions on the captured workloads and write traces."""

from __future__ import annotations

import argparse
from pathlib import Path

from fib_runtime import regimes
from fib_runtime.cli.options import duration, integer, number
from fib_runtime.errors import FibError
from fib_runtime.measure.timing import parse_timings
from fib_runtime.paths import default_db_path
from fib_runtime.retuning import RetuneConfig, retune


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "retune", help="check and time every solution on the captured workloads, on this "
        "machine's GPU(s); append the results as traces")
    parser.add_argument("db", nargs="?", type=Path, default=default_db_path(),
                        help="database folder (default: %(default)s)")
    parser.add_argument("--definition", action="extend", nargs="+", metavar="NAME",
                        help="only these definitions (default: all)")
    parser.add_argument("--solution", action="extend", nargs="+", metavar="NAME",
                        help="only these solutions (default: all)")
    parser.add_argument("--devices", default=None, metavar="all|cpu|0,1",
                        help="GPUs to spread the work over, one worker each (default: GPU 0, "
                        "or the CPU when there is none)")
    parser.add_argument("--cluster", default=None, metavar="ray|ADDRESS",
                        help="spread the work over every GPU of a Ray cluster instead: 'ray' "
                        "($RAY_ADDRESS or the cluster started on this host) or its address "
                        "(needs fib-runtime[ray])")
    parser.add_argument("--warmup", type=integer(0), default=10, metavar="N",
                        help="untimed runs before timing (default: %(default)s)")
    parser.add_argument("--iters", type=integer(1), default=50, metavar="N",
                        help="timed runs; the median is kept (default: %(default)s)")
    parser.add_argument("--timeout", type=number(0, above=True), default=120.0, metavar="S",
                        help="seconds for one solution on one workload, build included "
                        "(default: %(default)s)")
    parser.add_argument("--tolerance", action="append", default=[], metavar="DEF=ATOL,RTOL",
                        help="override the per-dtype tolerances for one definition")
    known = "; ".join(f"{r.name} ({r.description}{', GPU only' if r.gpu_only else ''})"
                      for r in regimes.REGIMES.values())
    parser.add_argument("--timing", default=regimes.DEVICE.name,
                        metavar=",".join(regimes.names()),
                        help=f"timing regimes to measure, comma-separated, one trace each: "
                        f"{known} (default: %(default)s)")
    parser.add_argument("--force", action="store_true",
                        help="measure again what already has a trace on this hardware")
    parser.add_argument("--budget", type=duration, default=None, metavar="DURATION",
                        help="start no workload after this long (90s, 10m, 1h): the most "
                        "called keys, weighted by the expected gain, go first, and the next "
                        "retune measures what is left")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def parse_tolerance(text: str) -> tuple[str, tuple[float, float]]:
    """`rmsnorm_h4096=1e-2,2e-2` -> ("rmsnorm_h4096", (0.01, 0.02))."""
    name, sep, values = text.partition("=")
    parts = values.split(",")
    try:
        if not sep or not name or len(parts) != 2:
            raise ValueError
        return name, (float(parts[0]), float(parts[1]))
    except ValueError:
        raise FibError(f"--tolerance {text!r}: expected DEFINITION=ATOL,RTOL") from None


def run(args: argparse.Namespace) -> int:
    config = RetuneConfig(tolerances=dict(parse_tolerance(t) for t in args.tolerance),
                          timings=parse_timings(args.timing))
    summary = retune(args.db, args.definition, args.solution, args.devices,
                     warmup=args.warmup, iters=args.iters, timeout=args.timeout,
                     force=args.force, progress=not args.no_progress, config=config,
                     cluster=args.cluster, budget=args.budget)
    print(summary.table())
    for problem in summary.unusable:
        print(f"unusable workload {problem.definition} {problem.workload}: "
              f"{problem.reason.splitlines()[0]}")
    return 0
