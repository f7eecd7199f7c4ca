"""`fib merge SRC... DEST`: fold databases and their capture shards into one."""

from __future__ import annotations

import argparse
from pathlib import Path

from fib_runtime.errors import FibError
from fib_runtime.store.merge import merge


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "merge", help="add the records of source databases (capture shards included) that "
        "DEST lacks; idempotent, safe to interrupt and rerun")
    parser.add_argument("paths", nargs="+", type=Path, metavar="SRC... DEST",
                        help="source database folders, then the destination folder")
    parser.add_argument("--dry-run", action="store_true",
                        help="count what would be added; write nothing")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if len(args.paths) < 2:
        raise FibError("fib merge needs at least one source and a destination")
    *sources, dest = args.paths
    report = merge(sources, dest, dry_run=args.dry_run)
    print(("would have " if args.dry_run else "") + report.line())
    for conflict in report.conflicts:
        print(f"conflict: {conflict}")
    return 1 if report.conflicts else 0
