"""Workload, Evaluation and Trace records (one JSON line each in the database).

They are frozen msgspec Structs, not dataclasses: a database holds millions of them, and a
Struct is built ~5x faster and is never tracked by the cyclic garbage collector (`gc=False`:
records hold strings, numbers, JSON values and other records, never a cycle). Use
`msgspec.structs.replace` (or, on Python 3.13+, `copy.replace`) to derive one from another."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

import msgspec

from fib_runtime.schema._parse import (
    as_dict,
    check,
    extras,
    fail,
    json_float,
    metric,
    non_negative_int,
    omissible,
    opt,
    put,
    req,
    shallow,
    text,
)


class Status(str, Enum):
    """Outcome of evaluating one solution on one workload."""

    PASSED = "PASSED"
    INCORRECT_SHAPE = "INCORRECT_SHAPE"
    INCORRECT_NUMERICAL = "INCORRECT_NUMERICAL"
    INCORRECT_DTYPE = "INCORRECT_DTYPE"
    RUNTIME_ERROR = "RUNTIME_ERROR"
    COMPILE_ERROR = "COMPILE_ERROR"
    TIMEOUT = "TIMEOUT"


class RandomInput(msgspec.Struct, frozen=True, gc=False):
    """Filled with random values of the input's dtype when materialised."""

    extra: Mapping[str, Any] = msgspec.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "random", **self.extra}


class ScalarInput(msgspec.Struct, frozen=True, gc=False):
    value: int | float | bool
    extra: Mapping[str, Any] = msgspec.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "scalar", "value": self.value, **self.extra}


class SafetensorsInput(msgspec.Struct, frozen=True, gc=False):
    """A tensor stored in a safetensors blob; `path` is relative to the database root."""

    path: str
    tensor_key: str
    extra: Mapping[str, Any] = msgspec.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "safetensors", "path": self.path, "tensor_key": self.tensor_key,
                **self.extra}


InputDescriptor = RandomInput | ScalarInput | SafetensorsInput
RANDOM = RandomInput()
_TYPE_ONLY = frozenset({"type"})
_RANDOM_RAW = {"type": "random"}  # by far the most common descriptor: compared, not parsed
_SCALAR_KEYS = frozenset({"type", "value"})
_SAFETENSORS_KEYS = frozenset({"type", "path", "tensor_key"})

_WORKLOAD_KEYS = frozenset({"uuid", "axes", "inputs"})


class Workload(msgspec.Struct, frozen=True, gc=False):
    """Concrete variable-axis values and how to obtain each input."""

    uuid: str
    axes: Mapping[str, int]
    inputs: Mapping[str, InputDescriptor]
    extra: Mapping[str, Any] = msgspec.field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, path: str = "workload") -> Workload:
        data = as_dict(data, path)
        axes = req(data, "axes", dict, path)
        for name, value in axes.items():
            if type(value) is not int or value < 0:
                non_negative_int(value, f"{path}.axes.{name}")
        inputs = {name: RANDOM if raw == _RANDOM_RAW else _parse_input(raw, f"{path}.inputs.{name}")
                  for name, raw in req(data, "inputs", dict, path).items()}
        return cls(text(data, "uuid", path), axes, inputs,
                            extras(data, _WORKLOAD_KEYS))

    def to_dict(self) -> dict[str, Any]:
        return {"uuid": self.uuid, "axes": dict(self.axes),
                "inputs": {k: v.to_dict() for k, v in self.inputs.items()}, **self.extra}


def _parse_input(value: Any, path: str) -> InputDescriptor:
    data = as_dict(value, path)
    if "type" in data:
        kind = req(data, "type", str, path)
    else:  # flashinfer-bench omits the default: the fields say which kind
        kind = ("safetensors" if "path" in data or "tensor_key" in data
                else "scalar" if "value" in data else "random")
    if kind == "random":
        return RANDOM if len(data) == 1 else RandomInput(extras(data, _TYPE_ONLY))
    if kind == "scalar":
        if "value" not in data:
            raise fail(f"{path}.value", "required field is missing")
        scalar = check(data["value"], (int, float, bool), f"{path}.value")
        return ScalarInput(scalar, extras(data, _SCALAR_KEYS))
    if kind == "safetensors":
        return SafetensorsInput(text(data, "path", path), text(data, "tensor_key", path),
                                extras(data, _SAFETENSORS_KEYS))
    raise fail(f"{path}.type", f"must be random, scalar or safetensors, got {kind!r}")


class Correctness(msgspec.Struct, frozen=True, gc=False):
    max_relative_error: float
    max_absolute_error: float
    extra_info: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = msgspec.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"max_relative_error": json_float(self.max_relative_error),
                               "max_absolute_error": json_float(self.max_absolute_error)}
        put(out, "extra", None if self.extra_info is None else dict(self.extra_info))
        return {**out, **self.extra}


class Performance(msgspec.Struct, frozen=True, gc=False):
    latency_ms: float
    reference_latency_ms: float
    speedup_factor: float
    extra: Mapping[str, Any] = msgspec.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"latency_ms": json_float(self.latency_ms),
                "reference_latency_ms": json_float(self.reference_latency_ms),
                "speedup_factor": json_float(self.speedup_factor), **self.extra}


class Environment(msgspec.Struct, frozen=True, gc=False):
    hardware: str
    libs: Mapping[str, str] = msgspec.field(default_factory=dict)
    extra: Mapping[str, Any] = msgspec.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"hardware": self.hardware, "libs": dict(self.libs), **self.extra}


_EVAL_KEYS = frozenset({
    "status", "log", "correctness", "performance", "environment", "timestamp",
})
_CORRECTNESS_KEYS = frozenset({"max_relative_error", "max_absolute_error", "extra"})
_PERFORMANCE_KEYS = frozenset({"latency_ms", "reference_latency_ms", "speedup_factor"})
_ENV_KEYS = frozenset({"hardware", "libs"})
_STATUS_BY_NAME = {s.value: s for s in Status}
# What an evaluation of each status must hold: (correctness, performance).
NEEDS = {s: (s in (Status.PASSED, Status.INCORRECT_NUMERICAL), s is Status.PASSED)
         for s in Status}


class Evaluation(msgspec.Struct, frozen=True, gc=False):
    status: Status
    environment: Environment
    timestamp: str
    log: str | None = None
    correctness: Correctness | None = None
    performance: Performance | None = None
    extra: Mapping[str, Any] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        needs_correctness, needs_performance = NEEDS[self.status]
        if needs_correctness != (self.correctness is not None):
            raise fail("evaluation.correctness",
                       f"{'required' if needs_correctness else 'must be null'} "
                       f"for status {self.status.value}")
        if needs_performance != (self.performance is not None):
            raise fail("evaluation.performance",
                       f"{'required' if needs_performance else 'must be null'} "
                       f"for status {self.status.value}")

    @classmethod
    def from_dict(cls, data: Any, path: str = "evaluation") -> Evaluation:
        data = as_dict(data, path)
        raw_status = req(data, "status", str, path)
        status = _STATUS_BY_NAME.get(raw_status)
        if status is None:
            raise fail(f"{path}.status", f"unknown status {raw_status!r}")
        environment = _environment(req(data, "environment", dict, path), path)
        correctness = None
        raw = opt(data, "correctness", dict, path)
        if raw is not None:
            where = path + ".correctness"
            correctness = Correctness(
                metric(raw, "max_relative_error", where, True),
                metric(raw, "max_absolute_error", where, True),
                shallow(opt(raw, "extra", dict, where), where + ".extra"),
                extras(raw, _CORRECTNESS_KEYS))
        performance = None
        raw = opt(data, "performance", dict, path)
        if raw is not None:
            where = path + ".performance"
            performance = Performance(
                _latency(raw, where),
                metric(raw, "reference_latency_ms", where, False),
                metric(raw, "speedup_factor", where, False),
                extras(raw, _PERFORMANCE_KEYS))
        return cls(status, environment, text(data, "timestamp", path),
                   omissible(data, "log", str, path), correctness, performance,
                   extras(data, _EVAL_KEYS))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status.value}
        put(out, "log", self.log)
        out["correctness"] = None if self.correctness is None else self.correctness.to_dict()
        out["performance"] = None if self.performance is None else self.performance.to_dict()
        out["environment"] = self.environment.to_dict()
        out["timestamp"] = self.timestamp
        return {**out, **self.extra}


_ENVIRONMENTS: dict[tuple[str, tuple[tuple[str, Any], ...]], Environment] = {}


def _latency(performance: dict[str, Any], path: str) -> float | int:
    """A solution's measured latency: a finite number >= 0 (negative and NaN are refused
    by `metric`; an infinite latency is no measurement, and would rank as one)."""
    value = metric(performance, "latency_ms", path, False)
    if value == _INFINITY:
        raise fail(f"{path}.latency_ms", "must be finite, got Infinity")
    return value


_INFINITY = float("inf")


def _environment(env: dict[str, Any], path: str) -> Environment:
    """Parse an environment; the few distinct ones of a database are shared, not copied."""
    where = path + ".environment"
    hardware = text(env, "hardware", where)
    libs = omissible(env, "libs", dict, where) or {}
    if not _ENV_KEYS.issuperset(env):
        return Environment(hardware, shallow(libs, where + ".libs"), extras(env, _ENV_KEYS))
    try:
        return shared_environment(hardware, libs)
    except TypeError:  # unhashable library versions: keep this one as it is
        return Environment(hardware, shallow(libs, where + ".libs"))


def shared_environment(hardware: str, libs: dict[str, Any]) -> Environment:
    """The one Environment of this hardware and these (hashable) library versions."""
    key = (hardware, tuple(libs.items()))
    known = _ENVIRONMENTS.get(key)
    if known is None:
        if len(_ENVIRONMENTS) > 4096:
            _ENVIRONMENTS.clear()
        known = _ENVIRONMENTS[key] = Environment(hardware, dict(libs))
    return known


_TRACE_KEYS = frozenset({"definition", "workload", "solution", "evaluation"})


class Trace(msgspec.Struct, frozen=True, gc=False):
    """A workload record (solution and evaluation null) or a benchmark result."""

    definition: str
    workload: Workload
    solution: str | None = None
    evaluation: Evaluation | None = None
    extra: Mapping[str, Any] = msgspec.field(default_factory=dict)

    @property
    def is_workload(self) -> bool:
        return self.solution is None and self.evaluation is None

    @classmethod
    def from_dict(cls, data: Any) -> Trace:
        data = as_dict(data, "")
        raw_eval = opt(data, "evaluation", dict, "")
        return cls(
            text(data, "definition", ""), Workload.from_dict(req(data, "workload", dict, "")),
            opt(data, "solution", str, ""),
            None if raw_eval is None else Evaluation.from_dict(raw_eval),
            extras(data, _TRACE_KEYS),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "definition": self.definition, "solution": self.solution,
            "workload": self.workload.to_dict(),
            "evaluation": None if self.evaluation is None else self.evaluation.to_dict(),
            **self.extra,
        }
