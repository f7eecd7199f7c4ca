"""Compaction: drop the benchmark traces that no ranking can read any more.

The ranking (fib_runtime.ranking) reads, per definition, hardware, timing regime and
(solution, workload), only the latest trace of each measured content (the digest stamped on
it, or none). A trace is dropped when a later line of the same file has the same definition,
solution, workload uuid, hardware name, timing regime and digest: it was re-measured. Kept
lines keep their order, so what is latest stays latest; a line that does not load is kept as
it is (`fib validate` reports it) and supersedes nothing. Workloads, definitions and
solutions are not touched. Each file is rewritten atomically under the lock that appends
take, so a concurrent retune's lines are never lost. Compaction is never needed for
correctness, only for size.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from fib_runtime.errors import FibError
from fib_runtime.files import write_atomic
from fib_runtime.schema.provenance import digest_of, timing_of
from fib_runtime.store import files, layout
from fib_runtime.store.decoding import decode_line

_Key = tuple[str, str, str, str, str, str | None]


@dataclass
class CompactReport:
    """What a compaction kept and dropped, per definition, and the bytes saved."""

    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    bytes_before: int = 0
    bytes_after: int = 0
    files: int = 0  # files rewritten (or, in a dry run, that would be)

    def line(self) -> str:
        return (f"{sum(self.dropped.values())} superseded traces dropped, {self.kept} kept; "
                f"{self.files} files rewritten, {self.bytes_before:,} -> "
                f"{self.bytes_after:,} bytes")


def compact(root: str | Path, *, definitions: set[str] | None = None,
            dry_run: bool = False) -> CompactReport:
    """Compact every trace file under `root` (or only the lines of `definitions`)."""
    root = Path(root).expanduser()
    report = CompactReport()
    base = root / layout.TRACES
    for path in sorted(base.rglob("*.jsonl")) if base.is_dir() else ():
        if path.is_symlink() or not path.is_file():
            continue  # the loader refuses links; not ours to rewrite
        with files.lock_for(root, path):
            data = path.read_bytes()
            kept = _compacted(data.split(b"\n"), definitions, report)
            after = b"".join(line + b"\n" for line in kept)
            report.bytes_before += len(data)
            report.bytes_after += len(after)
            if len(after) != len(data):
                report.files += 1
                if not dry_run:
                    write_atomic(path, after)
    return report


def _compacted(lines: list[bytes], definitions: set[str] | None,
               report: CompactReport) -> list[bytes]:
    """The lines to keep, in their order: each record's last occurrence of its key."""
    seen: set[_Key] = set()
    keep: list[bytes] = []
    for line in reversed(lines):
        if not line.strip():
            continue
        key = _key(line)
        if key is not None and (definitions is None or key[0] in definitions):
            if key in seen:
                report.dropped[key[0]] += 1
                continue
            seen.add(key)
        keep.append(line)
    report.kept += len(keep)
    keep.reverse()
    return keep


_NO_KEYS: dict[str, str] = {}  # decode_line's hardware cache (no filter here)


def _key(line: bytes) -> _Key | None:
    """What makes a benchmark trace superseded by a later one; None for a line that does
    not load as one (kept, and superseding nothing)."""
    try:
        trace = decode_line(line, None, _NO_KEYS)
    except (orjson.JSONDecodeError, FibError, RecursionError, MemoryError):
        return None
    evaluation = trace.evaluation
    if trace.solution is None or evaluation is None:
        return None
    return (trace.definition, trace.solution, trace.workload.uuid,
            evaluation.environment.hardware, timing_of(evaluation), digest_of(evaluation))
