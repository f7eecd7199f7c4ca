"""`fib verify STEP`: the step gate (fib_runtime.verify): keep a definition's choice only
where the step it runs in is faster than the engine's own path beyond the noise; pin the
others."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fib_runtime.errors import FibError
from fib_runtime.paths import default_db_path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "verify", help="time a whole step (layer, forward, engine step) with the database's "
        "choices against the engine's own path; pin a choice that does not speed it up beyond "
        "the noise to the original")
    parser.add_argument("step", help="module:factory; factory(**args) returns the step, a "
                        "callable of no arguments (e.g. integration.llama_decode_layer:"
                        "gate_step)")
    parser.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE",
                        help="a keyword argument of the factory (int, float or text); "
                        "repeatable")
    parser.add_argument("--db", type=Path, default=default_db_path(),
                        help="database folder (default: %(default)s)")
    parser.add_argument("--regimes", default="eager,graph", metavar="eager,graph",
                        help="serving regimes to gate (default: %(default)s; graph needs a "
                        "GPU: a CPU runs eager only)")
    parser.add_argument("--rounds", type=int, default=5, metavar="N",
                        help="interleaved rounds per comparison (default: %(default)s)")
    parser.add_argument("--no-pin", action="store_true",
                        help="report only: write nothing to the database")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.set_defaults(handler=run)


def parse_args(items: list[str]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip().isidentifier():
            raise FibError(f"--arg: expected NAME=VALUE, got {item!r}")
        kwargs[name.strip()] = _value(value.strip())
    return kwargs


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def run(args: argparse.Namespace) -> int:
    from fib_runtime.regimes import CONTEXTS
    from fib_runtime.verify import verify

    regimes = tuple(r.strip() for r in args.regimes.split(",") if r.strip())
    unknown = [r for r in regimes if r not in CONTEXTS]
    if unknown or not regimes:
        raise FibError(f"--regimes: expected some of {', '.join(CONTEXTS)}, "
                       f"got {args.regimes!r}")
    if args.rounds < 2:
        raise FibError("--rounds must be at least 2")
    report = verify(args.step, args.db, kwargs=parse_args(args.arg), regimes=regimes,
                    rounds=args.rounds, pin=not args.no_pin)
    print(report.table())
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return 0
