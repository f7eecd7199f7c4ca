"""`fib ls`, `fib validate` and `fib compact`: what a database holds, every problem in it,
and dropping the traces no ranking reads."""

from __future__ import annotations

import argparse
import logging
from collections import Counter, defaultdict
from pathlib import Path

from fib_runtime.cli.options import number
from fib_runtime.errors import StoreError
from fib_runtime.hardware import hardware_key
from fib_runtime.paths import default_db_path
from fib_runtime.render import render_table
from fib_runtime.store import TraceDB, tidy
from fib_runtime.store.check import cross_check
from fib_runtime.store.compact import compact
from fib_runtime.store.oddities import odd_entries
from fib_runtime.store.reading import workload_identity
from fib_runtime.store.tidy import DEFAULT_MIN_AGE_S


def register(sub: argparse._SubParsersAction) -> None:
    ls = sub.add_parser("ls", help="per definition: solutions, workloads, traces per hardware")
    ls.add_argument("db", nargs="?", type=Path, help="database folder (default: %(default)s)",
                    default=default_db_path())
    ls.add_argument("--all", action="store_true",
                    help="also list definitions with no solutions, workloads or traces")
    ls.set_defaults(handler=run_ls)
    validate = sub.add_parser("validate", help="check every record; exit 1 on any problem")
    validate.add_argument("db", type=Path, help="database folder")
    validate.add_argument("--fix", action="store_true",
                          help="remove leftovers of killed writers: orphan *.tmp files and "
                          "blobs no workload or trace refers to (without it they are listed)")
    validate.add_argument("--min-age", type=number(0), default=DEFAULT_MIN_AGE_S, metavar="S",
                          help="only leftovers untouched for S seconds count, so a live "
                          "writer is never disturbed (default: %(default)s)")
    validate.set_defaults(handler=run_validate)
    compact = sub.add_parser("compact", help="drop re-measured traces no ranking reads")
    compact.add_argument("db", type=Path, help="database folder")
    compact.add_argument("--definition", action="append", metavar="NAME",
                         help="only this definition's traces (repeatable)")
    compact.add_argument("--dry-run", action="store_true", help="count, change nothing")
    compact.set_defaults(handler=run_compact)


def summary_rows(db: TraceDB, *, everything: bool) -> list[list[str]]:
    """Per definition: solutions, workloads raw/distinct, traces per hardware key; the
    workload and trace files are read one at a time (memory: one file, not the database)."""
    raw: Counter[str] = Counter()
    distinct: dict[str, set[bytes]] = defaultdict(set)
    for records in db.stream("workloads"):
        for record in records:
            raw[record.definition] += 1
            distinct[record.definition].add(workload_identity(record))
    hardware: dict[str, Counter[str]] = defaultdict(Counter)
    for records in db.stream("traces"):
        for record in records:
            if record.evaluation is not None:
                key = hardware_key(record.evaluation.environment.hardware)
                hardware[record.definition][key] += 1
    rows = []
    for name in sorted(db.definitions):
        solutions = len(db.solutions_for(name))
        per_hw = hardware[name]
        if not (everything or solutions or raw[name] or per_hw):
            continue
        traces = ", ".join(f"{k}:{n}" for k, n in sorted(per_hw.items())) or "-"
        rows.append([name, str(solutions), f"{raw[name]}/{len(distinct[name])}", traces])
    return rows


def print_summary(db: TraceDB, *, everything: bool = False) -> None:
    rows = summary_rows(db, everything=everything)  # first: it adds the files' load problems
    headers = ["definition", "solutions", "workloads raw/distinct", "traces by hardware"]
    print(f"database {db.root}: {len(db.definitions)} definitions, {len(db.solutions)} "
          f"solutions, {len(db.load_errors)} load problems")
    print(render_table(headers, rows))


def run_ls(args: argparse.Namespace) -> int:
    print_summary(TraceDB.open(args.db, workloads=False, traces=False), everything=args.all)
    return 0


def run_validate(args: argparse.Namespace) -> int:
    # Every problem is printed below; the loader's own warnings would repeat them.
    logging.getLogger("fib_runtime.store").setLevel(logging.ERROR)
    db = TraceDB.open(args.db, workloads=False, traces=False)
    workloads = traces = 0
    for _ in db.each_definition():  # memory: one definition's records at a time
        held = db.records_held()
        workloads, traces = workloads + held[0], traces + held[1]
    odd = odd_entries(db.root)
    said = {p.file for p in odd}  # the walk says more of a skipped entry than the loader
    loaded = [p for p in db.load_errors if p.line is not None or p.file not in said]
    problems = [str(p) for p in [*odd, *loaded, *cross_check(db)]]
    print(f"{db.root}: {len(db.definitions)} definitions, {len(db.solutions)} solutions, "
          f"{workloads} workloads, {traces} traces")
    if db.missing_blobs:
        print(f"warning: {len(db.missing_blobs)} blob files referenced by workloads are missing "
              f"(e.g. {min(db.missing_blobs)})")
    for problem in problems:
        print(f"error: {problem}")
    report_leftovers(db.root, fix=args.fix, min_age_s=args.min_age)
    print(f"{len(problems)} problems" if problems else "ok")
    return 1 if problems else 0


def run_compact(args: argparse.Namespace) -> int:
    if not args.db.is_dir():
        raise StoreError(f"{args.db}: no such database folder")
    report = compact(args.db, definitions=set(args.definition) if args.definition else None,
                     dry_run=args.dry_run)
    print(("would have: " if args.dry_run else "") + report.line())
    for name, count in sorted(report.dropped.items()):
        print(f"  {name}: {count} dropped")
    return 0


def report_leftovers(root: Path, *, fix: bool, min_age_s: float) -> None:
    """List orphan temporary files and unreferenced blobs; remove them with `fix`."""
    found = tidy.leftovers(root, min_age_s=min_age_s)
    if fix:
        for path in tidy.remove(root, found):
            print(f"removed: {path.relative_to(root)}")
    else:
        for kind, paths in (("orphan temporary file", found.temporary),
                            ("unreferenced blob", found.blobs)):
            for path in paths:
                print(f"leftover: {path.relative_to(root)}: {kind} (--fix removes it)")
    for note in found.kept:
        print(f"note: {note}")
