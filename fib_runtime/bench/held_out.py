"""Held-out measurements (sizes never captured), read from the JSON `bench_choice.py` writes.

The file's top-level key `held_out` is a list of points:
`{"definition", "hardware", "timing", "axes": {axis: int}, "solution", "latency_ms",
"dispatched": bool}` -- one solution timed alone at one size, `dispatched` marking the one
dispatch served there. `fib report --held-out FILE` overlays them on the plots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from fib_runtime import regimes
from fib_runtime.errors import SchemaError
from fib_runtime.hardware import hardware_key
from fib_runtime.schema._parse import as_dict, non_negative_int, req, text


@dataclass(frozen=True)
class HeldOutPoint:
    """One solution's latency at one held-out size, in one regime."""

    definition: str
    hardware: str  # the hardware key (normalised as the ranking's keys are)
    timing: str
    axes: tuple[tuple[str, int], ...]
    solution: str
    latency_ms: float
    dispatched: bool

    def axis(self, name: str) -> int | None:
        """The value of one axis, None when the point does not give it."""
        return dict(self.axes).get(name)


def load_held_out(path: str | Path) -> list[HeldOutPoint]:
    """Every point of a held-out file; a SchemaError names the file and field at fault."""
    path = Path(path)
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise SchemaError(f"cannot read the held-out file: {exc.strerror or exc}",
                          file=str(path)) from None
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"not JSON: {exc}", file=str(path)) from None
    try:
        data = as_dict(data, "")
        points = req(data, "held_out", list, "")
        return [_point(raw, f"held_out[{i}]") for i, raw in enumerate(points)]
    except SchemaError as exc:
        raise exc.located(str(path)) from None


def _point(raw: Any, path: str) -> HeldOutPoint:
    data = as_dict(raw, path)
    timing = text(data, "timing", path)
    if timing not in regimes.names():
        raise SchemaError(f"unknown timing regime {timing!r} (expected one of "
                          f"{', '.join(regimes.names())})", field=f"{path}.timing")
    axes = as_dict(req(data, "axes", dict, path), f"{path}.axes")
    for name, value in axes.items():
        non_negative_int(value, f"{path}.axes.{name}")
    latency = req(data, "latency_ms", (int, float), path)
    if not math.isfinite(latency) or latency <= 0:
        raise SchemaError(f"expected a positive finite latency, got {latency!r}",
                          field=f"{path}.latency_ms")
    return HeldOutPoint(
        definition=text(data, "definition", path),
        hardware=hardware_key(text(data, "hardware", path)),
        timing=timing, axes=tuple(sorted(axes.items())),
        solution=text(data, "solution", path), latency_ms=float(latency),
        dispatched=req(data, "dispatched", bool, path))
