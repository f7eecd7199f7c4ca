"""Leftovers of killed writers: orphan temporary files and blobs no record refers to.

A writer killed between creating its temporary file and renaming it leaves
`.<name>.<random>.tmp` beside the target; a capture killed between saving a blob and
appending its workload line leaves a blob nothing refers to. Neither is loaded, both take
space. `leftovers` finds them; `remove` deletes them. A live writer is never disturbed: only
entries older than `min_age_s` are considered, and a temporary file only while the lock of
its target (the one appends and merges hold) can be taken at once.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from filelock import Timeout

from fib_runtime.errors import StoreError
from fib_runtime.store import files, layout
from fib_runtime.store.oddities import odd_entries

DEFAULT_MIN_AGE_S = 600.0
# A "path" field as it appears in a JSON line that does not parse (a torn one).
_PATH_FIELD = re.compile(rb'"path"\s*:\s*"((?:[^"\\]|\\.)*)"')
_TMP_NAME = re.compile(r"^\.(?P<target>.+)\.[^.]+\.tmp$")


@dataclass
class Leftovers:
    """What a database holds that no reader uses, and what could not be decided."""

    temporary: list[Path] = field(default_factory=list)
    blobs: list[Path] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # why some candidates were left alone

    def __bool__(self) -> bool:
        return bool(self.temporary or self.blobs)


def leftovers(root: Path, *, min_age_s: float = DEFAULT_MIN_AGE_S,
              now: float | None = None) -> Leftovers:
    """Orphan temporary files and unreferenced blobs older than `min_age_s`."""
    now = time.time() if now is None else now
    found = Leftovers()
    for folder in (*layout.DECISION_FOLDERS, layout.WORKLOADS, layout.BLOB):
        for path, st in _regular_files(root / folder):
            if _TMP_NAME.match(path.name) and now - st.st_mtime >= min_age_s:
                found.temporary.append(path)
    blob_root = root / layout.BLOB
    if blob_root.is_dir():
        referenced = _referenced_blobs(root, found)
        if referenced is not None:
            for path, st in _regular_files(blob_root):
                if path.suffix == ".safetensors" and now - st.st_mtime >= min_age_s \
                        and path.resolve() not in referenced:
                    found.blobs.append(path)
    return found


def remove(root: Path, found: Leftovers) -> list[Path]:
    """Delete what `leftovers` found (re-checking each temporary file's lock); returns the
    paths removed."""
    removed = []
    for path in found.temporary:
        target = path.with_name(_TMP_NAME.match(path.name)["target"])  # type: ignore[index]
        try:
            lock = files.lock_for(root, target)
            with lock.acquire(timeout=0):
                path.unlink()
        except (Timeout, FileNotFoundError):
            found.kept.append(f"{_rel(root, path)}: its target is being written now; kept")
            continue
        except (OSError, ValueError, StoreError) as exc:  # StoreError: a lock outside the root
            found.kept.append(f"{_rel(root, path)}: not removed ({exc})")
            continue
        removed.append(path)
    for path in found.blobs:
        try:
            path.unlink()
        except OSError as exc:
            found.kept.append(f"{_rel(root, path)}: not removed ({exc})")
            continue
        removed.append(path)
    return removed


def _referenced_blobs(root: Path, found: Leftovers) -> set[Path] | None:
    """Every blob path a workload or trace line names (parsed as JSON; a line that does not
    load still protects its blobs); None when some line file cannot be read."""
    hidden = [p for p in odd_entries(root) if p.file.split(os.sep)[0] in
              (layout.WORKLOADS, layout.TRACES)]
    if hidden:
        found.kept.append(f"{hidden[0].file} {hidden[0].reason}: blobs are not checked "
                          "(it may refer to some)")
        return None
    referenced: set[Path] = set()
    for folder in (layout.WORKLOADS, layout.TRACES):
        base = root / folder
        for path in sorted(base.rglob("*.jsonl")) if base.is_dir() else ():
            try:
                data = path.read_bytes()
            except OSError as exc:
                found.kept.append(f"{_rel(root, path)} cannot be read ({exc}): blobs are "
                                  "not checked")
                return None
            for rel in _paths_in(data):
                try:
                    referenced.add(files.inside(root, rel))
                except StoreError:
                    continue
    return referenced


def _paths_in(data: bytes) -> Iterator[str]:
    """Every "path" string of a JSON-lines file, read by parsing each line (so any JSON
    spelling of a path counts); a line that does not parse (torn) still protects the paths
    it spells out whole."""
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            yield from _path_values(orjson.loads(line))
        except orjson.JSONDecodeError:
            for match in _PATH_FIELD.finditer(line):
                try:
                    yield orjson.loads(b'"' + match.group(1) + b'"')
                except orjson.JSONDecodeError:
                    continue


def _path_values(value: object) -> Iterator[str]:
    """The string values of every "path" key in a parsed record, however deep."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if key == "path" and isinstance(child, str):
                    yield child
                elif isinstance(child, (dict, list)):
                    stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)


def _regular_files(base: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Regular files under `base`, links not followed, nothing opened."""
    try:
        entries = sorted(os.scandir(base), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from _regular_files(Path(entry.path))
        elif stat.S_ISREG(st.st_mode):
            yield Path(entry.path), st


def _rel(root: Path, path: Path) -> str:
    return str(path.relative_to(root))
