"""Shard files: per-process workload files for fleet capture on shared storage.

Network filesystems do not honour POSIX locks across hosts, so processes of a fleet must
not share one locked file. With a shard name, each capturing process appends only to its
own file beside the canonical one, `workloads/<op_type>/<definition>.<shard>.jsonl`: every
loader that reads `workloads/**/*.jsonl` (this project's and flashinfer-bench's) reads it,
and `fib merge` folds shards into canonical files.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Container
from pathlib import Path

from fib_runtime.config_fields import ON_WORDS
from fib_runtime.errors import FibError
from fib_runtime.store import layout

SHARD_ENV = "FIB_CAPTURE_SHARD"
AUTO = "{host}-{pid}"
_AUTO_WORDS = ON_WORDS | {"auto"}
_OFF_WORDS = frozenset({"", "0", "false", "no", "off"})


def shard_spec(configured: str | None) -> str | None:
    """The shard template in effect: $FIB_CAPTURE_SHARD wins over the capture config.

    None (unset, "", "0", "off"): the canonical files with a lock. "1"/"auto": one shard
    per process, `{host}-{pid}`. Anything else is a template that may use {host} and {pid};
    it must name each writing process uniquely.
    """
    value = os.environ.get(SHARD_ENV)
    value = configured if value is None else value
    if value is None or value.strip().lower() in _OFF_WORDS:
        return None
    value = value.strip()
    spec = AUTO if value.lower() in _AUTO_WORDS else value
    check_shard_spec(spec)
    return spec


def check_shard_spec(spec: str) -> None:
    """Refuse a template whose placeholders cannot be filled (FibError names the field)."""
    try:
        spec.format(host="h", pid=0)
    except (KeyError, IndexError, ValueError) as exc:
        raise FibError(f"capture shard {spec!r}: only {{host}} and {{pid}} may be used "
                       f"({exc!r})") from None


def shard_name(spec: str) -> str:
    """Fill a template for this process now (after a fork the child gets its own pid)."""
    name = spec.format(host=socket.gethostname(), pid=os.getpid())
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "_"


def shard_file(root: Path, op_type: str, definition: str, shard: str) -> Path:
    """`workloads/<op_type>/<definition>.<shard>.jsonl`."""
    canonical = layout.workload_file(root, op_type, definition)
    return canonical.with_name(f"{definition}.{shard}.jsonl")



def definition_of_file(path: Path, known: Container[str]) -> str:
    """The definition a workload or trace file is named for: `<definition>.jsonl` or a shard
    `<definition>.<shard>.jsonl` (the longest known name that fits; names may hold dots),
    else the file's stem."""
    stem = path.name.removesuffix(".jsonl")
    parts = stem.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in known:
            return name
    return stem
