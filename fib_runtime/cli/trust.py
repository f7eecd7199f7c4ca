"""`fib trust`: say whose code may run (see docs/trust.md).

    fib trust DB                      every solution and definition now in DB, by content
    fib trust DB --solution NAME ...  only these solutions (and their definitions)
    fib trust DB --root               the folder itself: whatever it holds, now or later
    fib trust --author NAME ...       every solution by these authors, in any database
    fib trust ... --revoke            take any of the above back
    fib trust [DB] --list             the store (and, with DB, each solution's standing)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fib_runtime.errors import FibError
from fib_runtime.schema.provenance import content_digest
from fib_runtime.store import TraceDB
from fib_runtime.trust import Trust, definition_digest, load_store, root_key, store_path
from fib_runtime.trust.store import add, remove


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("trust", help="let a database's, an author's or a solution's code "
                            "run (nothing from a database runs until trusted)")
    parser.add_argument("db", nargs="?", type=Path, help="database folder")
    parser.add_argument("--solution", action="extend", nargs="+", default=[], metavar="NAME",
                        help="only these solutions of DB (and their definitions)")
    parser.add_argument("--author", action="extend", nargs="+", default=[], metavar="NAME",
                        help="every solution by these authors, in any database")
    parser.add_argument("--root", action="store_true",
                        help="trust the folder DB itself: whatever it holds now or later")
    parser.add_argument("--revoke", action="store_true", help="take the trust back")
    parser.add_argument("--list", action="store_true",
                        help="show the trust store (with DB: each solution's standing)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.list:
        return _list(args.db)
    if args.db is None and (args.solution or args.root):
        raise FibError("fib trust: --solution and --root need a database folder")
    if args.db is None and not args.author:
        raise FibError("fib trust: give a database folder, --author NAME or --list")
    verb = "revoked" if args.revoke else "trusted"
    if args.author:
        changed = _apply("authors", {a: {} for a in args.author}, args.revoke)
        print(f"{verb}: authors {', '.join(args.author)} ({changed} changed)")
    if args.db is not None:
        _database(args, verb)
    print(f"trust store: {store_path()}")
    return 0


def _apply(kind: str, items: dict[str, dict[str, str]], revoke: bool) -> int:
    return len(remove(kind, items)) if revoke else add(kind, items)


def _database(args: argparse.Namespace, verb: str) -> None:
    db = TraceDB.open(args.db)  # loading runs no code
    if args.root:
        changed = _apply("databases", {root_key(db.root): {}}, args.revoke)
        print(f"{verb}: the folder {root_key(db.root)} ({changed} changed)")
        return
    unknown = sorted(set(args.solution) - set(db.solutions))
    if unknown:
        raise FibError(f"{db.root}: no solutions named {', '.join(unknown)}")
    solutions = [db.solutions[n] for n in args.solution] if args.solution else \
        [db.solutions[n] for n in sorted(db.solutions)]
    wanted = {s.definition for s in solutions} if args.solution else set(db.definitions)
    definitions = [db.definitions[n] for n in sorted(wanted) if n in db.definitions]
    sols = _apply("solutions", {content_digest(s): {"name": s.name} for s in solutions},
                  args.revoke)
    defs = _apply("definitions", {definition_digest(d): {"name": d.name}
                                  for d in definitions}, args.revoke)
    print(f"{verb}, by content: {len(solutions)} solutions ({sols} changed), "
          f"{len(definitions)} definitions ({defs} changed) of {db.root}")
    for solution in solutions:
        print(f"  solution {solution.name}  (author {solution.author})")
    if db.load_errors:
        print(f"note: {len(db.load_errors)} records of {db.root} could not be loaded and are "
              "not covered (`fib validate` lists them)")


def _list(db_path: Path | None) -> int:
    store = load_store()
    print(f"trust store: {store_path()}")
    if store.problem:
        print(f"warning: {store.problem}")
    for kind in ("authors", "databases"):
        print(f"{kind}: {', '.join(sorted(store.entries[kind])) or '-'}")
    for kind in ("solutions", "definitions"):
        print(f"{kind} by content: {len(store.entries[kind])}")
    if db_path is not None:
        db = TraceDB.open(db_path)
        trust = Trust(db.root, db.definitions, store)
        for name in sorted(db.solutions):
            why = trust.solution(db.solutions[name])
            print(f"  {name}: {why or 'NOT trusted (does not run)'}")
    return 0
