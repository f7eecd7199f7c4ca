"""The database's file operations: locked whole-line appends, safe paths, a cheap digest of
folders (atomic replacement is `fib_runtime.files.write_atomic`, shared with the trust store)."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from filelock import FileLock

from fib_runtime.errors import StoreError, naming
from fib_runtime.store import layout

LOCK_DIR = ".fib/locks"


def lock_for(root: Path, target: Path) -> FileLock:
    """The inter-process lock that guards one file of the database, under `.fib/locks`.

    The lock folder and file must stay inside the root: a `.fib` (or `locks`, or lock
    file) linked elsewhere is refused (StoreError) before anything is created."""
    rel = target.resolve().relative_to(root.resolve())
    name = LOCK_DIR + "/" + str(rel).replace(os.sep, "__") + ".lock"
    lock_path = inside(root, name)  # resolved before anything is created
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(lock_path))


def append_records(root: Path, target: Path, records: Iterable[dict[str, Any]], *,
                   lock: bool = True) -> int:
    """Append records as JSON lines with one write under the file's lock. Returns bytes written.

    `lock=False` is for a file only this process writes (a capture shard): no lock file is
    taken, so it works where locks are not honoured (network filesystems).

    If an earlier writer died mid-line, a newline is written first so the new records stay
    whole lines (the partial line is later reported and skipped by the loader). A write that
    fails part way (a full disk) is undone: the file is cut back to its old size, so the
    append is all-or-nothing and the OSError is raised.
    """
    payload = b"".join(orjson.dumps(r) + b"\n" for r in records)
    if not payload:
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with naming(target), lock_for(root, target) if lock else contextlib.nullcontext():
        fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                payload = b"\n" + payload
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view):]
            except BaseException:
                _cut_back(fd, size)
                raise
        finally:
            os.close(fd)
    return len(payload)


def _cut_back(fd: int, size: int) -> None:
    """Undo a partial append (under the file's lock, or in a file only we write)."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, size)


def inside(root: Path, rel: str) -> Path:
    """Resolve a path read from data; refuse one that leaves the database root."""
    resolved_root = root.resolve()
    path = (resolved_root / rel).resolve()
    if path != resolved_root and resolved_root not in path.parents:
        raise StoreError(f"path {rel!r} resolves outside the database root {root}")
    return path


def served_table_file(root: Path, hardware_key: str, tag: str) -> Path:
    """Where the served tables of a hardware key are kept (`layout.served_table_path`),
    refused (StoreError) when `.fib` or a folder below links outside the root."""
    rel = layout.served_table_path(Path(), hardware_key, tag)
    return inside(root, str(rel))


def decisions_fingerprint(root: Path) -> str:
    """A cheap digest of what dispatch decisions depend on, read without loading anything:
    the names, sizes and modification times of the definition, solution and trace files
    under `root`. It changes when any of them does. Its cost grows with the number of
    files (one stat each), not with their size or the number of records."""
    digest = hashlib.blake2b(digest_size=12)
    for folder in layout.DECISION_FOLDERS:
        _digest_folder(digest, os.path.join(root, folder), folder)
    return digest.hexdigest()


def _digest_folder(digest: Any, folder: str, rel: str) -> None:
    """Add each record file under `folder` (in name order; linked folders are not entered,
    as `Path.rglob` does not) to `digest`."""
    try:
        with os.scandir(folder) as found:
            entries = sorted(found, key=lambda e: e.name)
    except OSError:  # no such folder (yet), or not a folder
        return
    for entry in entries:
        name = rel + "/" + entry.name
        if entry.is_dir(follow_symlinks=False):
            _digest_folder(digest, entry.path, name)
        elif entry.name.endswith((".json", ".jsonl")):
            try:
                st = entry.stat()
            except OSError:  # a dangling link (a load problem) or a file just removed
                continue
            digest.update(b"%s\0%d\0%d\n" % (name.encode("utf-8", "surrogateescape"),
                                              st.st_size, st.st_mtime_ns))
