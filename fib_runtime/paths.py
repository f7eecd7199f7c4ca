"""Default locations: the database and the build/decision caches."""

from __future__ import annotations

import os
from pathlib import Path


def default_db_path() -> Path:
    """`$FIB_DATASET_PATH`, else `~/.cache/fib_runtime/db`."""
    value = os.environ.get("FIB_DATASET_PATH")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "fib_runtime" / "db"


def cache_path() -> Path:
    """`$FIB_CACHE_PATH`, else `~/.cache/fib_runtime/cache` (builds, compiled tables)."""
    value = os.environ.get("FIB_CACHE_PATH")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "fib_runtime" / "cache"
