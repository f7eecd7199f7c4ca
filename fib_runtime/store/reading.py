"""What the loader reads of a record line besides the schema: a load problem, the hardware
key of a raw trace line (read before its parse), the identity of a workload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from fib_runtime.hardware import hardware_key
from fib_runtime.schema import Trace


@dataclass(frozen=True, slots=True)
class LoadProblem:
    """One record that could not be loaded, and why."""

    file: str
    line: int | None
    field: str | None
    reason: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: " + (f"field '{self.field}': " if self.field else "") + self.reason


def hardware_of(raw: Any, keys: dict[str, str]) -> str | None:
    """The hardware key of a raw trace line, read without parsing it (None when it names
    none: the full parse then says what is wrong); `keys` caches the normalisation."""
    try:
        name = raw["evaluation"]["environment"]["hardware"]
        hash(name)
    except (KeyError, TypeError):
        return None
    return hardware_of_name(name, keys) if type(name) is str else None


def hardware_of_name(name: str, keys: dict[str, str]) -> str:
    """The hardware key of a hardware name, normalised once per name (`keys` caches)."""
    key = keys.get(name)
    if key is None:
        key = keys[name] = hardware_key(name)
    return key


def workload_identity(trace: Trace) -> bytes:
    """What makes two workload records the same workload: axes and input descriptors."""
    wl = trace.workload
    return orjson.dumps({"axes": wl.axes, "inputs": {k: v.to_dict() for k, v in wl.inputs.items()}},
                        option=orjson.OPT_SORT_KEYS)
