"""`fib demo` (also `fib` with no command): capture -> retune -> dispatch on a local database."""

from __future__ import annotations

import argparse
from pathlib import Path

from fib_runtime.cli.options import integer
from fib_runtime.paths import default_db_path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="capture, retune and dispatch a workload mix "
                            "(the default command)")
    parser.add_argument("db", nargs="?", type=Path, default=default_db_path(),
                        help="database folder (default: %(default)s)")
    parser.add_argument("--iters", type=integer(1), default=20, metavar="N",
                        help="timed runs per measurement (default: %(default)s)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from fib_runtime.cli.db import print_summary
    from fib_runtime.demo import format_rows, run_demo
    from fib_runtime.hardware import current_hardware
    from fib_runtime.store import TraceDB

    hw = current_hardware()
    print(f"fib demo on {hw.name} (key {hw.key}), database {args.db}")
    summary, rows = run_demo(args.db, iters=args.iters)
    print()
    print_summary(TraceDB.open(args.db, workloads=False, traces=False))
    print()
    print("retune (winner per captured workload on this machine):")
    print(summary.table())
    print()
    print("served with dispatch on (times: median per call, this process):")
    print(format_rows(rows))
    return 0
