"""The config files of dispatch and capture, read by one parser (`read_config`,
`parse_config`), with typed checks of their fields: each wrong value raises the config's own
FibError subclass with a message that names the file, the field by its path
('definitions.<name>.<field>') and shows the value. And the one reading of an on/off
environment variable (`env_flag`).

JSON has no tuples, so the list checks accept a list or a tuple and return a tuple; `bool`
is never taken for a number, nor a string for a list of names.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, TypeVar

import orjson

from fib_runtime.errors import ConfigError

C = TypeVar("C")

# What switches an on/off environment variable on (any case, spaces around ignored).
ON_WORDS = frozenset({"1", "true", "yes", "on"})


def env_flag(name: str) -> bool:
    """Whether the environment variable `name` is switched on (unset or anything else: off)."""
    return os.environ.get(name, "").strip().lower() in ON_WORDS


def _fail(error: type[ConfigError], field: str, wanted: str, value: Any) -> ConfigError:
    return error(f"field '{field}': must be {wanted}, got {value!r}")


def check_policies(default: Any, definitions: Any, policy: type, error: type[ConfigError],
                   keys: str) -> None:
    """`default` is a `policy`; `definitions` maps names (`keys` says which) to `policy`."""
    if not isinstance(default, policy):
        raise _fail(error, "default", f"a {policy.__name__}", default)
    if not isinstance(definitions, Mapping) or not all(
            type(k) is str and isinstance(v, policy) for k, v in definitions.items()):
        raise _fail(error, "definitions", f"map {keys} to {policy.__name__}", definitions)


def check_bool(value: Any, field: str, error: type[ConfigError]) -> None:
    if type(value) is not bool:
        raise _fail(error, field, "true or false", value)


def check_int(value: Any, field: str, error: type[ConfigError], *, low: int,
              none_ok: bool = False) -> None:
    """An integer >= low (or None where allowed)."""
    if value is None and none_ok:
        return
    if type(value) is not int or value < low:
        raise _fail(error, field, f"an integer >= {low}" + (" or null" if none_ok else ""),
                    value)


def check_number(value: Any, field: str, error: type[ConfigError], *, low: float = 0.0,
                 high: float | None = None, low_included: bool = True,
                 none_ok: bool = False) -> None:
    """A finite number in [low, high] (or (low, high] when not `low_included`)."""
    if value is None and none_ok:
        return
    if isinstance(value, (int, float)) and type(value) is not bool and math.isfinite(value) \
            and (value >= low if low_included else value > low) \
            and (high is None or value <= high):
        return
    bounds = f"{'[' if low_included else '('}{low:g}, {'inf)' if high is None else f'{high:g}]'}"
    raise _fail(error, field, f"a finite number in {bounds}" + (" or null" if none_ok else ""),
                value)


def check_choice(value: Any, field: str, error: type[ConfigError],
                 choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if type(value) is not str or value not in choices:
        raise _fail(error, field, f"one of {', '.join(choices)}", value)


def names(value: Any, field: str, error: type[ConfigError], *,
          none_ok: bool = False) -> tuple[str, ...] | None:
    """A list (or tuple) of strings as a tuple; None where allowed."""
    if value is None and none_ok:
        return None
    if isinstance(value, (list, tuple)) and all(type(v) is str for v in value):
        return tuple(value)
    raise _fail(error, field, "a list of names" + (" or null" if none_ok else ""), value)


# -- the config file ----------------------------------------------------------------------

def read_config(path: str | Path, error: type[ConfigError], what: str) -> tuple[Path, Any]:
    """The file's path and its JSON value; `error` names the file (and, for JSON that does
    not parse, the line and column)."""
    path = Path(path).expanduser()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc}") from None
    try:
        return path, orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON: {exc}") from None


def parse_config(config: type[C], policy: type, data: Any, error: type[ConfigError],
                 what: str, file: str | Path | None = None) -> C:
    """`{"default": {...}, "definitions": {name: {...}}, <setting>: value, ...}` as a
    `config` dataclass (fields `default`, `definitions` and its settings), whose policies are
    `policy` dataclasses; each definition's entry lists only the fields that differ from the
    default. Every error is an `error` that starts with the file (when read from one) and
    `what` ("dispatch config")."""
    try:
        if not isinstance(data, dict):
            raise error(f"must be a JSON object, got {type(data).__name__}")
        _check_known(data, config, error, None)
        default = _policy(data.get("default", {}), policy(), "default", error)
        raw = data.get("definitions", {})
        if not isinstance(raw, dict):
            raise error(f"field 'definitions': must be an object, got {raw!r}")
        entries = {name: _policy(entry, default, f"definitions.{name}", error)
                   for name, entry in raw.items()}
        settings = {k: v for k, v in data.items() if k not in ("default", "definitions")}
        return config(default=default, definitions=entries, **settings)
    except error as exc:
        raise error(f"{f'{file}: ' if file else ''}{what}: {exc}") from None


def _policy(raw: Any, base: Any, where: str, error: type[ConfigError]) -> Any:
    """One policy entry: `base` with the entry's fields, errors naming the field's path."""
    if not isinstance(raw, dict):
        raise error(f"field '{where}': must be an object, got {raw!r}")
    _check_known(raw, type(base), error, where)
    try:
        return replace(base, **raw)
    except error as exc:
        message = str(exc)
        raise error(message.replace("field '", f"field '{where}.", 1)
                    if message.startswith("field '") else f"field '{where}': {message}") \
            from None


def _check_known(data: Mapping[str, Any], cls: type, error: type[ConfigError],
                 where: str | None) -> None:
    known = sorted(f.name for f in fields(cls))
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise error(f"{f'field {where!r}: ' if where else ''}unknown field(s) "
                    f"{', '.join(unknown)}; known: {', '.join(known)}")
