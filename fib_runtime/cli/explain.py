"""`fib explain DEF --axes k=v,...`: the candidates and the decision on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path

from fib_runtime import regimes
from fib_runtime.dispatch.explain import explain
from fib_runtime.dispatch.runtime import Runtime
from fib_runtime.errors import FibError
from fib_runtime.paths import default_db_path
from fib_runtime.store import TraceDB


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("explain", help="which solution serves a workload here, and why")
    parser.add_argument("definition")
    parser.add_argument("--axes", required=True, help="variable axes, e.g. batch_size=37")
    parser.add_argument("--db", type=Path, default=default_db_path(),
                        help="database folder (default: %(default)s)")
    parser.add_argument("--timing", choices=regimes.names(), default=None,
                        help="the timing regime whose ranking decides (fib_runtime.regimes): "
                        "by default the one serving an eager call (eager, unless the "
                        "dispatch config pins one); graph: a call while a CUDA graph is "
                        "being recorded")
    parser.set_defaults(handler=run)


def parse_axes(text: str) -> dict[str, int]:
    axes = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not value.strip().lstrip("-").isdigit():
            raise FibError(f"--axes: expected name=integer, got {part!r}")
        axes[name.strip()] = int(value)
    return axes


def run(args: argparse.Namespace) -> int:
    runtime = Runtime(TraceDB.open(args.db), watch=False)  # a missing folder: an error
    print(explain(args.definition, parse_axes(args.axes), runtime, args.timing))
    return 0
