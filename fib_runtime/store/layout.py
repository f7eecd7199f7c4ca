"""Where each kind of record lives in a FlashInfer Trace database.

Every path is built from record fields (op_type, names, author) by `confined`, which refuses
a field that could leave its folder: empty, "." or "..", a path separator, NUL or another
control character, or longer than NAME_MAX_BYTES. A refusal is a SchemaError naming the
field, raised before anything is created.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fib_runtime.errors import SchemaError

DEFINITIONS = "definitions"
SOLUTIONS = "solutions"
WORKLOADS = "workloads"
TRACES = "traces"
BLOB = "blob"
DECISION_FOLDERS = (DEFINITIONS, SOLUTIONS, TRACES)
SERVED_TABLES = ".fib/tables"  # compiled decision tables, rebuilt from the records above
# A file name is at most 255 bytes on common filesystems; a name also gets a suffix
# (".jsonl", a shard, "_<uuid>.safetensors"), so the name itself is held well below that.
NAME_MAX_BYTES = 200
_UNSAFE_CHAR = re.compile(r"[\x00-\x1f\x7f/\\]")


def unsafe_reason(value: Any) -> str | None:
    """Why `value` cannot be one path component inside the database, or None if it can."""
    if type(value) is not str:
        return f"expected a string, got {type(value).__name__}"
    if value in ("", ".", ".."):
        return f"{value!r} is not a usable file name"
    bad = _UNSAFE_CHAR.search(value)
    if bad is not None:
        what = "a path separator" if bad[0] in "/\\" else "a control character (NUL, ...)"
        return f"{value!r} contains {what}"
    if len(value.encode("utf-8", "surrogatepass")) > NAME_MAX_BYTES:
        return f"is longer than {NAME_MAX_BYTES} bytes"
    return None


def confined(root: Path, folder: str, parts: tuple[tuple[str, Any], ...], suffix: str = ""
             ) -> Path:
    """`root/folder/part/.../last<suffix>` from (field, value) pairs, each checked first."""
    for field, value in parts:
        reason = unsafe_reason(value)
        if reason is not None:
            raise SchemaError(f"{reason}: it names a path inside the database", field=field)
    path = root.joinpath(folder, *(value for _, value in parts))
    return path.with_name(path.name + suffix) if suffix else path


def check_definition(definition: Any) -> None:
    """Refuse a definition whose name or op_type cannot name a path (SchemaError)."""
    confined(Path(), DEFINITIONS, (("op_type", definition.op_type), ("name", definition.name)))


def check_solution(solution: Any) -> None:
    """Refuse a solution whose author, definition or name cannot name a path (SchemaError)."""
    confined(Path(), SOLUTIONS, (("author", _safe(solution.author)),
                                 ("definition", solution.definition), ("name", solution.name)))


def definition_file(root: Path, op_type: str, name: str) -> Path:
    return confined(root, DEFINITIONS, (("op_type", op_type), ("name", name)), ".json")


def solution_file(root: Path, author: str, op_type: str, definition: str, name: str) -> Path:
    return confined(root, SOLUTIONS, (("author", _safe(author)), ("op_type", op_type),
                                      ("definition", definition), ("name", name)), ".json")


def workload_file(root: Path, op_type: str, definition: str) -> Path:
    return confined(root, WORKLOADS, (("op_type", op_type), ("definition", definition)),
                    ".jsonl")


def trace_file(root: Path, op_type: str, definition: str) -> Path:
    return confined(root, TRACES, (("op_type", op_type), ("definition", definition)), ".jsonl")


def served_table_path(root: Path, hardware_key: str, tag: str) -> Path:
    """Where the compiled decision tables of one hardware key (and dispatch config `tag`)
    are kept beside the records they are built from."""
    return root / SERVED_TABLES / f"{_safe(hardware_key)}-{_safe(tag)}.json"


def workload_blob(op_type: str, definition: str, uuid: str) -> str:
    """Relative path of the blob that holds a captured workload's dumped tensors."""
    folder = confined(Path(), f"{BLOB}/{WORKLOADS}", (("op_type", op_type),
                                                      ("definition", definition)))
    name = confined(Path(), "", (("workload.uuid", uuid.replace("-", "")),))
    return f"{folder.as_posix()}/{definition}_{name.name}.safetensors"


def _safe(part: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in part) or "_"
