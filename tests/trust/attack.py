"""Running an attack as the user meets it: the `fib` command or a small serving program in a
child process (its own sites, trust store reading and build cache), observed from outside
through marker files that hostile code leaves when it runs."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Result:
    returncode: int
    out: str


def child(code: str, *, timeout: float = 120.0, env: dict[str, str] | None = None) -> Result:
    """Run Python `code` in a fresh interpreter from the repository root (the test's trust
    store, cache and database paths are inherited from the environment)."""
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return Result(-9, f"TIMEOUT after {timeout} s")
    return Result(done.returncode, done.stdout + done.stderr)


def fib(*args: str | Path, timeout: float = 300.0) -> Result:
    """`fib ARGS...` in a child process."""
    words = ", ".join(repr(str(a)) for a in args)
    return child(f"import sys\nfrom fib_runtime.cli.main import main\nsys.exit(main([{words}]))",
                 timeout=timeout)
