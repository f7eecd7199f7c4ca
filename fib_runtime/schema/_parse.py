"""Small typed readers over plain dicts that raise SchemaError naming the field path."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from fib_runtime.errors import SchemaError

MISSING: Any = object()
NO_EXTRAS: Mapping[str, Any] = MappingProxyType({})


def fail(field: str, message: str) -> SchemaError:
    return SchemaError(message, field=field)


def as_dict(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise fail(field, f"expected an object, got {type(value).__name__}")
    return value


def req(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: str) -> Any:
    """A required field of the given JSON kind."""
    value = data.get(key, MISSING)
    if type(value) is kind:
        return value
    if value is MISSING:
        raise fail(join(path, key), "required field is missing")
    return check(value, kind, join(path, key))


def text(data: Mapping[str, Any], key: str, path: str) -> str:
    """A required non-empty string."""
    value = data.get(key)
    if type(value) is str and value:
        return value
    if req(data, key, str, path):
        return value
    raise fail(join(path, key), "must not be empty")


# Non-finite floats as flashinfer-bench writes them (pydantic's ser_json_inf_nan="strings")
# and reads them back (any case, optional sign).
_NON_FINITE = {"nan": float("nan"), "inf": float("inf"), "infinity": float("inf")}


def metric(data: Mapping[str, Any], key: str, path: str, nan_ok: bool) -> float | int:
    """A measured value: absent means 0.0, never negative; NaN only when `nan_ok`.

    Infinity and NaN may be written as the strings "Infinity" / "NaN" (JSON has no literal).
    """
    value = data.get(key, 0.0)
    kind = type(value)
    if (kind is float or kind is int) and value >= 0:  # the common case; NaN fails `>=`
        return value
    field = join(path, key)
    if kind is str:
        word = value.strip().lower()
        sign = -1.0 if word.startswith("-") else 1.0
        parsed = _NON_FINITE.get(word.lstrip("+-"))
        if parsed is None:
            raise fail(field, f"expected a number, 'NaN' or 'Infinity', got {value!r}")
        value = parsed * sign
    else:
        check(value, (int, float), field)
    if value != value:
        if not nan_ok:
            raise fail(field, "must be a number, not NaN")
        return value
    if value < 0:
        raise fail(field, f"must not be negative, got {value}")
    return value


def json_float(value: float | int) -> float | int | str:
    """A float as flashinfer-bench writes it: NaN and infinities as strings, not null."""
    if value != value:
        return "NaN"
    if value in (_INF, -_INF):
        return "Infinity" if value > 0 else "-Infinity"
    return value


_INF = float("inf")


def opt(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: str) -> Any:
    """An optional field: None when absent or null."""
    value = data.get(key)
    if value is None or type(value) is kind:
        return value
    return check(value, kind, join(path, key))


def omissible(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: str
              ) -> Any:
    """A field that may be left out (None then) but not null: flashinfer-bench gives these a
    default, not None, and refuses null."""
    value = data.get(key, MISSING)
    if type(value) is kind:
        return value
    if value is MISSING:
        return None
    if value is None:
        raise fail(join(path, key), "must not be null (leave the field out instead)")
    return check(value, kind, join(path, key))


def check(value: Any, kind: type | tuple[type, ...], field: str) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int subclass in Python but not a JSON number.
    if isinstance(value, bool) and bool not in kinds:
        raise fail(field, f"expected {_kind_name(kinds)}, got bool")
    if not isinstance(value, kinds):
        raise fail(field, f"expected {_kind_name(kinds)}, got {type(value).__name__}")
    return value


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def str_list(data: Mapping[str, Any], key: str, path: str, *, empty_ok: bool = False
             ) -> tuple[str, ...] | None:
    """An optional list of strings, non-empty ones unless `empty_ok`."""
    values = omissible(data, key, list, path)
    if values is None:
        return None
    if all(type(v) is str and (v or empty_ok) for v in values):
        return tuple(values)
    field = join(path, key)
    for i, v in enumerate(values):
        if not check(v, str, f"{field}[{i}]"):
            raise fail(f"{field}[{i}]", "must not be empty")
    return tuple(values)


def non_negative_int(value: Any, field: str) -> int:
    """An integer >= 0 (axis sizes)."""
    if type(value) is not int:
        check(value, int, field)
    if value < 0:
        raise fail(field, f"must not be negative, got {value}")
    return value


def extras(data: Mapping[str, Any], known: frozenset[str]) -> Mapping[str, Any]:
    """Fields this version does not know, kept to be written back unchanged (each at most
    MAX_NESTING deep)."""
    if known.issuperset(data):
        return NO_EXTRAS
    unknown = {k: v for k, v in data.items() if k not in known}
    for key, value in unknown.items():
        shallow(value, key)
    return unknown


# Free-form values (unknown fields, correctness.extra, environment.libs) nested deeper are
# refused: orjson writes at most 255 levels, so a deeper record would load and then fail
# every time it is written or keyed (`fib ls`, retune, merge).
MAX_NESTING = 128


def shallow(value: Any, field: str) -> Any:
    """`value` unless a free-form JSON value nests deeper than MAX_NESTING (SchemaError)."""
    if type(value) is not dict and type(value) is not list:
        return value
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_NESTING:
            raise fail(field, f"nested deeper than {MAX_NESTING} levels")
        children = item.values() if type(item) is dict else item
        pending.extend((child, depth + 1) for child in children
                       if type(child) is dict or type(child) is list)
    return value


def put(out: dict[str, Any], key: str, value: Any) -> None:
    """Write an optional field only when it is set."""
    if value is not None:
        out[key] = value


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {dict: "object", list: "array", str: "string", int: "integer",
             float: "number", bool: "boolean"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)

