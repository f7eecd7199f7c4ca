"""`fib merge SRC... DEST`: fold databases and their capture shards into one."""

from __future__ import annotations

import argparse
from pathlib import Path

from fib_runtime.dispatch.served import write_served
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
    if not args.dry_run and (report.definitions or report.solutions or report.traces):
        publish_tables(Path(dest))
    for conflict in report.conflicts:
        print(f"conflict: {conflict}")
    return 1 if report.conflicts else 0


def publish_tables(dest: Path) -> None:
    """Write DEST's served tables for every GPU model its traces name, so that serving
    processes on the merged database start without parsing traces (docs/scale-out.md)."""
    try:
        written = write_served(dest)
    except (OSError, FibError) as exc:
        print(f"note: served tables not written ({exc}); serving processes build their own")
        return
    keys = ", ".join(p.name.split("-")[0] for p in written)
    print(f"served tables written for {keys}" if written else
          "note: DEST changed while its served tables were built; not written")
