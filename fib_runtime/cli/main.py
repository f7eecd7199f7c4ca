"""`fib`: entry point, sub-command registry and error handling.

Every error a user can meet ends in one line on stderr and a non-zero exit (`--debug` shows
the traceback instead): a usage error (exit 2), a FibError, an OSError (a read-only folder,
a file where a folder belongs, a full disk: the line names the path; exit 1), standard
output closed by its reader (`fib ls | head -1`: exit 141, as a shell reports SIGPIPE) and
an interrupt (exit 130).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

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
    "fib_runtime.cli.verify",
    "fib_runtime.cli.demo",
    "fib_runtime.cli.merge",
    "fib_runtime.cli.trust",
)
EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_CLOSED_OUTPUT = 1, 2, 130, 141


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (sub-commands' parsers are of this class too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (`{self.prog} --help` shows "
                  "the usage)\n")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = _Parser(
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
    debug = False
    try:
        try:
            args = parser.parse_args(argv)
        finally:
            sys.stdout.flush()  # what --help or --version printed: a closed pipe shows here
        debug = args.debug
        logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                            format="fib: %(levelname)s: %(message)s")
        handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
        if handler is None:
            args = parser.parse_args([*(sys.argv[1:] if argv is None else argv), "demo"])
            handler = args.handler
        status = handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return status
    except KeyboardInterrupt:
        _say("fib: interrupted")
        return EXIT_INTERRUPTED
    except (FibError, OSError) as exc:
        if debug:
            raise
        if isinstance(exc, BrokenPipeError) and exc.filename is None:
            return _output_closed()
        _say(f"fib: error: {describe_os_error(exc) if isinstance(exc, OSError) else exc}")
        return EXIT_ERROR


def describe_os_error(exc: OSError) -> str:
    """`path: reason` (`path -> other: reason` for a rename or link), or the reason alone."""
    reason = exc.strerror or str(exc)
    if exc.filename is None:
        return reason
    where = str(exc.filename)
    if exc.filename2 is not None:
        where += f" -> {exc.filename2}"
    return f"{where}: {reason}"


def _output_closed() -> int:
    """Standard output's reader went away (`fib ls | head -1`): one line on stderr, and
    stdout pointed at /dev/null so the interpreter's last flush cannot fail again."""
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    _say("fib: error: standard output was closed before everything was written "
         "(broken pipe)")
    return EXIT_CLOSED_OUTPUT


def _say(line: str) -> None:
    with contextlib.suppress(OSError):
        print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
