"""Problems between records that each parse on their own (for `fib validate`).

A workload or trace of a definition the database does not hold, a workload whose inputs or
variable axes do not match its definition, a solution of an unknown definition: each loads,
but nothing can use it. Every problem names the file, the line and the field.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from fib_runtime.schema import AxisConst, Definition
from fib_runtime.store import layout
from fib_runtime.store.db import LoadProblem, TraceDB


def cross_check(db: TraceDB) -> list[LoadProblem]:
    """Every cross-record problem of a loaded database (lines it could not load are skipped)."""
    skipped = {(p.file, p.line) for p in db.load_errors}
    problems: list[LoadProblem] = []
    for rel, data in _records(db.root, layout.SOLUTIONS, ".json"):
        name = data.get("definition")
        if (rel, None) not in skipped and isinstance(name, str) and name not in db.definitions:
            problems.append(LoadProblem(rel, None, "definition", f"unknown definition '{name}'"))
    for folder in (layout.WORKLOADS, layout.TRACES):
        for path in _files(db.root, folder, ".jsonl"):
            problems.extend(_file_problems(db, path, skipped))
    return problems


def _file_problems(db: TraceDB, path: Path, skipped: set[tuple[str, int | None]]
                   ) -> list[LoadProblem]:
    """Problems of one JSONL file; lines of one unknown definition are reported once."""
    rel = str(path.relative_to(db.root))
    problems: list[LoadProblem] = []
    unknown: dict[str, tuple[int, int]] = {}  # name -> (first line, count)
    for number, data in _lines(path):
        if (rel, number) in skipped:
            continue
        definition = db.definitions.get(data["definition"])
        if definition is None:
            first, count = unknown.get(data["definition"], (number, 0))
            unknown[data["definition"]] = (first, count + 1)
            continue
        problems.extend(LoadProblem(rel, number, field, reason) for field, reason
                        in workload_problems(definition, data["workload"], "workload"))
    for name, (first, count) in unknown.items():
        more = f" ({count} lines from here)" if count > 1 else ""
        problems.append(LoadProblem(rel, first, "definition",
                                    f"unknown definition '{name}'{more}"))
    return sorted(problems, key=lambda p: p.line or 0)


def workload_problems(definition: Definition, workload: dict[str, Any], path: str
                      ) -> Iterator[tuple[str, str]]:
    """(field, reason) for each way a workload record does not fit its definition."""
    axes, inputs = workload.get("axes", {}), workload.get("inputs", {})
    for axis in definition.var_axes:
        if axis not in axes:
            yield f"{path}.axes.{axis}", f"variable axis of '{definition.name}' is missing"
    for axis, value in axes.items():
        spec = definition.axes.get(axis)
        if spec is None:
            yield f"{path}.axes.{axis}", f"'{definition.name}' has no such axis"
        elif isinstance(spec, AxisConst) and spec.value != value:
            yield f"{path}.axes.{axis}", (f"is {value}, but '{definition.name}' fixes it "
                                          f"at {spec.value}")
    for name in definition.inputs:
        if name not in inputs:
            yield f"{path}.inputs.{name}", f"input of '{definition.name}' is missing"
    for name in inputs:
        if name not in definition.inputs:
            yield f"{path}.inputs.{name}", f"'{definition.name}' has no such input"


def _files(root: Path, folder: str, suffix: str) -> list[Path]:
    base = root / folder
    return sorted(p for p in base.rglob(f"*{suffix}") if p.is_file()) if base.is_dir() else []


def _records(root: Path, folder: str, suffix: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for path in _files(root, folder, suffix):
        try:
            data = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        if isinstance(data, dict):
            yield str(path.relative_to(root)), data


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        raw = path.read_bytes()
    except OSError:
        return
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        yield number, data
