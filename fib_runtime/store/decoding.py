"""The loader's line decoder: typed decoding (msgspec) that validates while it parses.

`decode_line` gives the same `Trace` as `Trace.from_dict(orjson.loads(line))`, ~3x faster
(benchmarks/bench_trace_decode.py): msgspec checks types, required fields and bounds as it
parses into Structs that mirror a record's usual shape, and the schema's records are built
from those with no dict per object. A line those Structs do not take (an unknown field, an
input without its `type`, a metric written as "NaN", a bad record) goes through
`orjson.loads` + `Trace.from_dict`: the same record, or the schema's own error naming the
field. Records that are written, and `fib validate`, keep the schema's full check.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import orjson

from fib_runtime.errors import SchemaError
from fib_runtime.schema import (
    Correctness,
    Environment,
    Evaluation,
    InputDescriptor,
    Performance,
    SafetensorsInput,
    ScalarInput,
    Status,
    Trace,
    Workload,
)
from fib_runtime.schema._parse import NO_EXTRAS, shallow
from fib_runtime.schema.trace import RANDOM, shared_environment
from fib_runtime.store.reading import hardware_of, hardware_of_name

OTHER_HARDWARE: Any = object()
"""What `decode_line` returns for a trace of another hardware key than the one asked for."""


def _full(line: bytes, hardware: str | None, keys: dict[str, str]) -> Any:
    raw = orjson.loads(line)
    if hardware is not None and hardware_of(raw, keys) not in (hardware, None):
        return OTHER_HARDWARE
    return Trace.from_dict(raw)


_Text = Annotated[str, msgspec.Meta(min_length=1)]
_Count = Annotated[int, msgspec.Meta(ge=0)]
_Metric = Annotated[int, msgspec.Meta(ge=0)] | Annotated[float, msgspec.Meta(ge=0)]
_Strict: dict[str, Any] = {"forbid_unknown_fields": True, "gc": False}


class _Random(msgspec.Struct, tag_field="type", tag="random", **_Strict):
    pass


class _Scalar(msgspec.Struct, tag_field="type", tag="scalar", **_Strict):
    value: bool | int | float


class _Blob(msgspec.Struct, tag_field="type", tag="safetensors", **_Strict):
    path: _Text
    tensor_key: _Text


class _Environment(msgspec.Struct, **_Strict):
    hardware: _Text
    libs: dict[str, str] = msgspec.field(default_factory=dict)


# A database holds few distinct environments and input descriptors: each is decoded
# once (kept as raw JSON, then looked up by its bytes).
class _Workload(msgspec.Struct, **_Strict):
    uuid: _Text
    axes: dict[str, _Count]
    inputs: msgspec.Raw


class _Correctness(msgspec.Struct, **_Strict):
    max_relative_error: _Metric = 0.0
    max_absolute_error: _Metric = 0.0
    extra: dict[str, Any] | None = None


class _Performance(msgspec.Struct, **_Strict):
    latency_ms: _Metric = 0.0
    reference_latency_ms: _Metric = 0.0
    speedup_factor: _Metric = 0.0


class _Evaluation(msgspec.Struct, **_Strict):
    status: Status
    environment: msgspec.Raw
    timestamp: _Text
    log: str = None  # type: ignore[assignment]  # absent: None; null is refused
    correctness: _Correctness | None = None
    performance: _Performance | None = None


class _Trace(msgspec.Struct, **_Strict):
    definition: _Text
    workload: _Workload
    solution: str | None = None
    evaluation: _Evaluation | None = None


_decode = msgspec.json.Decoder(_Trace).decode
_decode_environment = msgspec.json.Decoder(_Environment).decode
_decode_inputs = msgspec.json.Decoder(dict[str, _Random | _Scalar | _Blob]).decode
_NOT_TAKEN = (msgspec.ValidationError, msgspec.DecodeError, SchemaError)
_KEPT = 4096  # distinct names, environments and input sets remembered (each)

_names: dict[str, str] = {}
_environments: dict[bytes, Environment] = {}
_inputs: dict[bytes, tuple[tuple[str, InputDescriptor], ...]] = {}


def _environment(raw: msgspec.Raw) -> Environment:
    key = bytes(raw)
    known = _environments.get(key)
    if known is None:
        typed = _decode_environment(key)
        if len(_environments) >= _KEPT:
            _environments.clear()
        known = _environments[key] = shared_environment(typed.hardware, typed.libs)
    return known


def _descriptor(raw: _Random | _Scalar | _Blob) -> InputDescriptor:
    if type(raw) is _Random:
        return RANDOM
    if type(raw) is _Scalar:
        return ScalarInput(raw.value, NO_EXTRAS)
    return SafetensorsInput(raw.path, raw.tensor_key, NO_EXTRAS)


def _input_items(raw: msgspec.Raw) -> tuple[tuple[str, InputDescriptor], ...]:
    key = bytes(raw)
    known = _inputs.get(key)
    if known is None:
        if len(_inputs) >= _KEPT:
            _inputs.clear()
        known = _inputs[key] = tuple(
            (name, _descriptor(value)) for name, value in _decode_inputs(key).items())
    return known


def _shared(name: str) -> str:
    """One string per distinct definition or solution name (every line repeats them)."""
    known = _names.get(name)
    if known is None:
        if len(_names) >= _KEPT:
            _names.clear()
        known = _names[name] = name
    return known


def _build(typed: _Trace, environment: Environment | None) -> Trace:
    definition, solution = _shared(typed.definition), typed.solution
    if solution is not None:
        solution = _shared(solution)
    wl = typed.workload
    workload = Workload(wl.uuid, wl.axes, dict(_input_items(wl.inputs)), NO_EXTRAS)
    ev = typed.evaluation
    if ev is None:
        return Trace(definition, workload, solution, None, NO_EXTRAS)
    c, p = ev.correctness, ev.performance
    if c is not None:
        extra = c.extra
        if extra is not None:
            shallow(extra, "evaluation.correctness.extra")
        c = Correctness(c.max_relative_error, c.max_absolute_error, extra, NO_EXTRAS)
    if p is not None:  # JSON has no infinity: a number past a double's range is refused
        p = Performance(p.latency_ms, p.reference_latency_ms, p.speedup_factor, NO_EXTRAS)
    # Evaluation checks that the status has the correctness and performance it needs.
    evaluation = Evaluation(ev.status, environment, ev.timestamp, ev.log, c, p, NO_EXTRAS)
    return Trace(definition, workload, solution, evaluation, NO_EXTRAS)


def decode_line(line: bytes, hardware: str | None, keys: dict[str, str]) -> Any:
    """The Trace of one trace or workload line, or OTHER_HARDWARE when `hardware` (a
    hardware key) is given and the line was measured on another; raises what
    `Trace.from_dict(orjson.loads(line))` raises (JSONDecodeError, SchemaError).
    `keys` caches hardware names' keys across calls."""
    try:
        typed = _decode(line)
        ev = typed.evaluation
        environment = None if ev is None else _environment(ev.environment)
        if (hardware is not None and environment is not None
                and hardware_of_name(environment.hardware, keys) != hardware):
            return OTHER_HARDWARE
        return _build(typed, environment)
    except _NOT_TAKEN:
        return _full(line, hardware, keys)
