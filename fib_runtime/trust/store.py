"""The trust store: what this user trusts to run, kept outside every database.

One JSON file (`$FIB_TRUST_PATH`, else `~/.config/fib_runtime/trust.json`):

    {"version": 1,
     "solutions":   {"sha256:...": {"name": ..., "added": ...}},   # by content digest
     "definitions": {"sha256:...": {"name": ..., "added": ...}},   # references, by digest
     "authors":     {"alice": {"added": ...}},
     "databases":   {"/abs/root": {"added": ...}}}                 # whatever a folder holds

Writes take a file lock and replace the file atomically, so processes may add to it at once.
A store that cannot be read (corrupt, or not a regular file: a FIFO or a device would block
or never end) is treated as empty (nothing trusted) with one warning; it is never
overwritten by `remember` (the user's entries stay there to be repaired).
"""

from __future__ import annotations

import logging
import os
import stat as stat_module
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
from filelock import FileLock

from fib_runtime.errors import FibError
from fib_runtime.files import write_atomic

log = logging.getLogger("fib_runtime.trust")
PATH_ENV = "FIB_TRUST_PATH"
KINDS = ("solutions", "definitions", "authors", "databases")
MAX_BYTES = 64 << 20  # far beyond any real store; a larger file is refused, not read
LOCK_WAIT_S = 30.0  # `fib trust`: the user waits for another writer
_warned: set[str] = set()


def store_path() -> Path:
    """`$FIB_TRUST_PATH`, else `~/.config/fib_runtime/trust.json`."""
    value = os.environ.get(PATH_ENV)
    return Path(value).expanduser() if value else (
        Path.home() / ".config" / "fib_runtime" / "trust.json")


class TrustStoreError(FibError):
    """The trust store cannot be read or written."""


@dataclass(frozen=True)
class TrustStore:
    """The store's entries; `problem` says why it could not be read (then it is empty)."""

    entries: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS})
    problem: str | None = None

    def has(self, kind: str, key: str) -> bool:
        return key in self.entries.get(kind, {})


def stamp(path: Path | None = None) -> tuple[int, int, int] | None:
    """What changes when the store file does (mtime, size, inode: a write replaces the
    file); None when it does not exist."""
    try:
        st = (path or store_path()).stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _read(path: Path) -> bytes:
    """The store's bytes, without ever blocking: opened non-blocking, and refused unless it
    is a regular file of a sane size (OSError or ValueError)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat_module.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_size > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES} bytes")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _parse(data: bytes) -> dict[str, dict[str, Any]]:
    raw = orjson.loads(data)
    if not isinstance(raw, dict) or raw.get("version") != 1:
        raise ValueError("not a version 1 trust store")
    entries: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        value = raw.get(kind, {})
        if not isinstance(value, dict):
            raise ValueError(f"'{kind}' is not an object")
        entries[kind] = value
    return entries


def load_store(path: Path | None = None) -> TrustStore:
    """The store's entries; a missing store is empty, a corrupt one is empty and warned of."""
    path = path or store_path()
    try:
        return TrustStore(_parse(_read(path)))
    except FileNotFoundError:
        return TrustStore()
    except (OSError, ValueError) as exc:  # orjson.JSONDecodeError is a ValueError
        problem = f"trust store {path} cannot be read ({exc}); nothing is trusted until it " \
                  "is repaired or removed"
        if problem not in _warned:
            _warned.add(problem)
            log.warning("%s", problem)
        return TrustStore(problem=problem)


def update(change: Callable[[dict[str, dict[str, Any]]], None],
           path: Path | None = None, *, wait_s: float = LOCK_WAIT_S) -> None:
    """Apply `change` to the store's entries under its lock (waiting at most `wait_s` for
    another writer: filelock.Timeout, a TimeoutError) and write it back atomically.

    Raises TrustStoreError when the store exists but cannot be read (it is left alone).
    """
    path = path or store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=wait_s):
        try:
            entries = _parse(_read(path))
        except FileNotFoundError:
            entries = {kind: {} for kind in KINDS}
        except (OSError, ValueError) as exc:
            raise TrustStoreError(f"trust store {path} cannot be read ({exc}); repair or "
                                  "remove it first") from None
        change(entries)
        write_atomic(path, orjson.dumps({"version": 1, **entries},
                                        option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def add(kind: str, items: Mapping[str, Mapping[str, Any]], path: Path | None = None, *,
        wait_s: float = LOCK_WAIT_S) -> int:
    """Add entries of one kind; returns how many were new."""
    return add_all({kind: items}, path, wait_s=wait_s)


def add_all(items: Mapping[str, Mapping[str, Mapping[str, Any]]], path: Path | None = None,
            *, wait_s: float = LOCK_WAIT_S) -> int:
    """Add entries of several kinds ({kind: {key: note}}) in one write; returns how many
    were new."""
    new = 0

    def change(entries: dict[str, dict[str, Any]]) -> None:
        nonlocal new
        for kind, notes in items.items():
            for key, note in notes.items():
                if key not in entries[kind]:
                    entries[kind][key] = {**note, "added": now()}
                    new += 1

    if any(items.values()):
        update(change, path, wait_s=wait_s)
    return new


def remove(kind: str, keys: Iterable[str], path: Path | None = None) -> list[str]:
    """Remove entries of one kind; returns the keys that were there."""
    removed: list[str] = []
    wanted = list(keys)

    def change(entries: dict[str, dict[str, Any]]) -> None:
        for key in wanted:
            if entries[kind].pop(key, None) is not None:
                removed.append(key)

    if wanted:
        update(change, path)
    return removed
