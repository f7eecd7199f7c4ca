"""File operations any part of fib-runtime may use (the store, the trust store, dispatch's
tables): replacing a file's content in one step."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fib_runtime.errors import naming


def write_atomic(target: Path, data: bytes) -> None:
    """Replace a file's content in one step (temp file in the same folder, then rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with naming(target), os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
