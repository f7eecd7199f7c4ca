"""A database "copied from elsewhere": written file by file, never through our API, so the
trust store knows nothing of it. Its code leaves a marker file when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from fib_runtime.store import layout
from tests import factories

DEF = "toy_norm_h8"
CPU = "cpu"

# Import and call both leave a mark; the answer is x * weight + 100 (the original: x * weight).
HOSTILE = """import pathlib
pathlib.Path({marker!r}).write_text("imported")

def run(x, weight):
    pathlib.Path({marker!r}).write_text("called")
    return x * weight + 100
"""

HOSTILE_REFERENCE = """import pathlib
import torch

def run(x, weight):
    pathlib.Path({marker!r}).write_text("reference ran")
    return x * weight + 100
"""


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(data))
    return path


def write_lines(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as handle:
        handle.write(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def solution_path(root: Path, name: str, author: str = "evil") -> Path:
    return layout.solution_file(root, author, "rmsnorm", DEF, name)


def foreign_db(root: Path, marker: Path, *, reference_marker: Path | None = None,
               name: str = "fast", author: str = "evil") -> Path:
    """A database whose only solution is the hostile one, measured fastest on this CPU, with a
    captured workload to retune (batch 4)."""
    definition = factories.definition(DEF)
    if reference_marker is not None:
        definition["reference"] = HOSTILE_REFERENCE.format(marker=str(reference_marker))
    write_json(layout.definition_file(root, "rmsnorm", DEF), definition)
    write_json(solution_path(root, name, author),
               {**factories.solution(name, DEF, code=HOSTILE.format(marker=str(marker))),
                "author": author})
    write_lines(layout.trace_file(root, "rmsnorm", DEF),
                [factories.trace(DEF, name, 4, latency=0.001, hardware=CPU)])
    write_lines(layout.workload_file(root, "rmsnorm", DEF), [factories.workload(DEF, 4)])
    return root
