"""`fib catalogue ls|install`: the built-in definitions and solutions."""

from __future__ import annotations

import argparse
from pathlib import Path

from fib_runtime.catalogue import catalogue_root, declared_entries, install, load_catalogue
from fib_runtime.families import FAMILIES
from fib_runtime.paths import default_db_path
from fib_runtime.store import TraceDB


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("catalogue", help="the built-in definitions and solutions")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = actions.add_parser("ls", help="list built-in definitions and their solutions")
    ls.set_defaults(handler=run_ls)
    inst = actions.add_parser("install", help="write the catalogue into a database")
    inst.add_argument("db", nargs="?", type=Path, default=default_db_path(),
                      help="database folder (default: %(default)s)")
    inst.set_defaults(handler=run_install)


def run_ls(args: argparse.Namespace) -> int:
    catalogue = load_catalogue()
    for name, definition in sorted(catalogue.definitions.items()):
        print(f"{name}  ({definition.op_type})")
        for solution in catalogue.solutions:
            if solution.definition == name:
                targets = ",".join(solution.spec.target_hardware) or "any"
                print(f"    {solution.name}  [{solution.spec.language}; {targets}]")
    print("\nfamilies (definitions generated for any model's constants):")
    for family in FAMILIES.values():
        print(f"{family.name}  {family.scheme}")
        print(f"    served by: {', '.join(family_variants(family.name)) or '-'}")
    return 0


def family_variants(family: str) -> list[str]:
    """`file:variant` of every catalogue entry that declares `family`."""
    served = []
    for path in sorted(catalogue_root().glob("*/solutions/*.py")):
        served += [f"{path.stem}:{entry['variant']}" for entry in declared_entries(path)
                   if family in entry.get("families", ())]
    return sorted(set(served))


def run_install(args: argparse.Namespace) -> int:
    db = TraceDB.open(args.db, create=True)
    defs, sols = install(db)
    print(f"{db.root}: wrote {defs} definitions and {sols} solutions "
          f"({len(db.definitions)} definitions, {len(db.solutions)} solutions in total)")
    return 0
