"""Entries the loader passes over without a word: found here so `fib validate` reports them.

The loader reads `definitions/**/*.json`, `solutions/**/*.json`, `workloads/**/*.jsonl` and
`traces/**/*.jsonl` that are regular files (or links to them), and does not follow linked
folders. Anything else under those names is skipped: a folder named `x.json`, `traces` being
a file, a FIFO or device, a dangling link or a link loop, a linked folder. This walk names
each one with what is wrong. It never opens a file (a FIFO would block) and never follows a
link; it only reads directory entries and stat results.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from fib_runtime.store import layout
from fib_runtime.store.db import LoadProblem

RECORD_FOLDERS = {layout.DEFINITIONS: ".json", layout.SOLUTIONS: ".json",
                  layout.WORKLOADS: ".jsonl", layout.TRACES: ".jsonl"}


def odd_entries(root: Path) -> list[LoadProblem]:
    """Every entry of the record folders that the loader would skip, and why.

    `blob/` is left out: a blob that is not a readable file is a missing blob, which the
    loader already reports (datasets are often cloned without them, e.g. as dangling
    git-annex links)."""
    problems: list[LoadProblem] = []
    for folder, suffix in RECORD_FOLDERS.items():
        path = root / folder
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append(LoadProblem(folder, None, None, f"cannot be read: {exc}"))
            continue
        if stat.S_ISLNK(mode):  # a linked record folder is followed by the loader
            reason = _link_problem(path)
            if reason is not None:
                problems.append(LoadProblem(folder, None, None, reason))
                continue
            mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            problems.extend(_walk(root, path, suffix))
        else:
            problems.append(LoadProblem(folder, None, None, f"is {_kind(mode)}, not a "
                                        "folder: none of its records are loaded"))
    return problems


def _walk(root: Path, folder: Path, suffix: str) -> Iterator[LoadProblem]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        yield LoadProblem(_rel(root, folder), None, None, f"cannot be listed: {exc}")
        return
    for entry in entries:
        path = Path(entry.path)
        try:
            mode = entry.stat(follow_symlinks=False).st_mode
        except OSError as exc:
            yield LoadProblem(_rel(root, path), None, None, f"cannot be read: {exc}")
            continue
        if stat.S_ISDIR(mode):
            if entry.name.endswith(suffix):
                yield LoadProblem(_rel(root, path), None, None,
                                  f"is a folder named like a {suffix} file: not loaded")
            yield from _walk(root, path, suffix)
        elif stat.S_ISLNK(mode):
            reason = _link_problem(path)
            if reason is not None:
                yield LoadProblem(_rel(root, path), None, None, reason)
            elif path.is_dir():
                yield LoadProblem(_rel(root, path), None, None,
                                  "is a link to a folder: not followed, nothing under it "
                                  "is loaded")
            elif entry.name.endswith(suffix):
                target_mode = os.stat(path).st_mode
                if not stat.S_ISREG(target_mode):
                    yield LoadProblem(_rel(root, path), None, None,
                                      f"links to {_kind(target_mode)}: not loaded")
        elif not stat.S_ISREG(mode) and entry.name.endswith(suffix):
            yield LoadProblem(_rel(root, path), None, None,
                              f"is {_kind(mode)}, not a regular file: not loaded")


def _link_problem(path: Path) -> str | None:
    """Why a symbolic link cannot be followed, or None when its target exists."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return f"is a dangling link (to {os.readlink(path)!r}): not loaded"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a link loop: not loaded"
        return f"is a link that cannot be followed ({exc.strerror}): not loaded"
    return None


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a file"
    return "not a regular file"


def _rel(root: Path, path: Path) -> str:
    return str(path.relative_to(root))
