"""`fib`: entry point, sub-command registry and error handling."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from fib_runtime.errors import FibError
from fib_runtime.version import __version__

# Each module registers its sub-commands: register(subparsers) -> None.
_COMMAND_MODULES = (
    "fib_runtime.cli.hw",
    "fib_runtime.cli.db",
    "fib_runtime.cli.catalogue",
    "fib_runtime.cli.retune",
    "fib_runtime.cli.report",
    "fib_runtime.cli.explain",
    "fib_runtime.cli.demo",
    "fib_runtime.cli.merge",
    "fib_runtime.cli.trust",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="fib", description="Capture, retune and dispatch kernels on a FlashInfer Trace "
        "database. With no command: the demo on the default database.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--version", action="version", version=f"fib-runtime {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="fib: %(levelname)s: %(message)s")
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        args = parser.parse_args([*(sys.argv[1:] if argv is None else argv), "demo"])
        handler = args.handler
    try:
        return handler(args)
    except FibError as exc:
        if args.debug:
            raise
        print(f"fib: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fib: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
