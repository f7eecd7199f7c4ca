"""Where each kind of record lives in a FlashInfer Trace database."""

from __future__ import annotations

from pathlib import Path

DEFINITIONS = "definitions"
SOLUTIONS = "solutions"
WORKLOADS = "workloads"
TRACES = "traces"
BLOB = "blob"
DECISION_FOLDERS = (DEFINITIONS, SOLUTIONS, TRACES)


def definition_file(root: Path, op_type: str, name: str) -> Path:
    return root / DEFINITIONS / op_type / f"{name}.json"


def solution_file(root: Path, author: str, op_type: str, definition: str, name: str) -> Path:
    return root / SOLUTIONS / _safe(author) / op_type / definition / f"{name}.json"


def workload_file(root: Path, op_type: str, definition: str) -> Path:
    return root / WORKLOADS / op_type / f"{definition}.jsonl"


def trace_file(root: Path, op_type: str, definition: str) -> Path:
    return root / TRACES / op_type / f"{definition}.jsonl"


def workload_blob(op_type: str, definition: str, uuid: str) -> str:
    """Relative path of the blob that holds a captured workload's dumped tensors."""
    return f"{BLOB}/{WORKLOADS}/{op_type}/{definition}/{definition}_{uuid.replace('-', '')}" \
           ".safetensors"


def _safe(part: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in part) or "_"
