"""`fib demo` (also `fib` with no command): the main job on the default database."""

from __future__ import annotations

import argparse
from pathlib import Path

from fib_runtime.catalogue import install
from fib_runtime.cli.db import print_summary
from fib_runtime.paths import default_db_path
from fib_runtime.store import TraceDB


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="run the main job on a local database (the default)")
    parser.add_argument("db", nargs="?", type=Path, default=default_db_path(),
                        help="database folder (default: %(default)s)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    db = TraceDB.open(args.db, create=True)
    defs, sols = install(db)
    print(f"installed the built-in catalogue: {defs} definitions, {sols} solutions written")
    print_summary(db)
    return 0
