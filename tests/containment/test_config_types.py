"""Config fields of the wrong type or value are refused when the config is made, with an
error that names the field (and the file), instead of being taken silently or raising a
bare TypeError on the first failing call."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import torch

import fib_runtime as fib
from fib_runtime.capture import CaptureConfig, CaptureConfigError, CapturePolicy
from fib_runtime.dispatch import DefinitionConfig, DispatchConfig
from fib_runtime.errors import ConfigError, DispatchConfigError, FibError
from tests.dispatch.helpers import RAISING_CODE, make_db

# field -> wrong values; each once taken silently or crashing later with a raw TypeError
DISPATCH_WRONG: dict[str, list[Any]] = {
    "quarantine_after": ["3", 0, -1, 2.5, True, None],
    "strict": ["yes", 1, None],
    "validate_outputs": ["no", 0],
    "allow": ["raises", [1, 2], {"a": 1}],
    "deny": ["raises", None, [None]],
    "miss": ["closest", 1, None],
    "other_hardware": ["any", True],
    "max_abs_error": ["0.1", -1.0, math.nan, True],
    "max_rel_error": [[0.1], -0.5],
}
CASES = [(f, v) for f, values in DISPATCH_WRONG.items() for v in values]


@pytest.mark.parametrize(("field", "value"), CASES, ids=[f"{f}={v!r}" for f, v in CASES])
def test_wrong_dispatch_field_is_refused_naming_it(tmp_path: Path, field: str,
                                                   value: Any) -> None:
    with pytest.raises(DispatchConfigError, match=f"field 'default.{field}'"):
        DispatchConfig.from_dict({"default": {field: value}})
    with pytest.raises(DispatchConfigError, match=f"field 'definitions.d.{field}'"):
        DispatchConfig.from_dict({"definitions": {"d": {field: value}}})
    with pytest.raises(DispatchConfigError, match=f"field '{field}'"):
        DefinitionConfig(**{field: value})
    if isinstance(value, float) and not math.isfinite(value):
        return  # JSON has no NaN
    path = tmp_path / "dispatch.json"
    path.write_bytes(orjson.dumps({"default": {field: value}}))
    with pytest.raises(DispatchConfigError, match=f"^{path}: .*field 'default.{field}'"):
        DispatchConfig.load(path)


@pytest.mark.parametrize("data", [
    {"check_interval_s": "5"}, {"check_interval_s": -1}, {"check_interval_s": math.inf},
    {"check_interval_s": math.nan}, {"check_interval_s": 1e300}, {"default": "strict"},
    {"definitions": ["a"]}, {"definitions": {"d": 3}}, {"defaults": {}}, ["default"],
])
def test_wrong_dispatch_shape_is_refused(data: Any) -> None:
    with pytest.raises(DispatchConfigError, match="dispatch config: "):
        DispatchConfig.from_dict(data)


def test_errors_are_fib_errors_and_good_configs_still_load() -> None:
    assert issubclass(DispatchConfigError, ConfigError) and issubclass(ConfigError, FibError)
    assert issubclass(CaptureConfigError, ConfigError)
    config = DispatchConfig.from_dict({
        "default": {"allow": ["a", "b"], "deny": ["c"], "quarantine_after": 1,
                    "max_abs_error": 0, "max_rel_error": 0.5, "strict": False},
        "definitions": {"d": {"miss": "fallback", "allow": None}}, "check_interval_s": 0})
    assert config.default.allow == ("a", "b") and config.default.deny == ("c",)
    assert config.for_definition("d").allow is None
    assert config.for_definition("d").quarantine_after == 1  # inherited from the default
    assert config.check_interval_s == 0
    assert DefinitionConfig(allow=["x"]).allow == ("x",)  # a list from Python is a tuple too


def test_a_string_quarantine_count_no_longer_breaks_failing_calls(tmp_path: Path) -> None:
    """Once accepted, then every failing call raised TypeError; now refused up front, and
    the right type serves: every call of a raising solution is answered."""
    make_db(tmp_path, {"bad": RAISING_CODE}, [("bad", 4, 0.01, "cpu")])

    @fib.apply("toy_norm_h8")
    def toy(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x * weight

    with pytest.raises(DispatchConfigError, match="quarantine_after"):
        fib.enable_apply(tmp_path, {"default": {"quarantine_after": "3"}})
    with fib.enable_apply(tmp_path, {"default": {"quarantine_after": 3}}):
        assert [float(toy(torch.ones(4, 8), torch.ones(8))[0, 0]) for _ in range(5)] == [1.0] * 5
        assert fib.stats()["toy_norm_h8"]["quarantined"] == ["bad"]


# -- capture -----------------------------------------------------------------------------

CAPTURE_WRONG: list[tuple[dict[str, Any], str]] = [
    ({"flush_interval_s": math.inf}, "flush_interval_s"),
    ({"flush_interval_s": math.nan}, "flush_interval_s"),
    ({"flush_interval_s": 0}, "flush_interval_s"),
    ({"flush_interval_s": -2.0}, "flush_interval_s"),
    ({"flush_interval_s": 1e12}, "flush_interval_s"),
    ({"flush_interval_s": "2"}, "flush_interval_s"),
    ({"flush_interval_s": True}, "flush_interval_s"),
    ({"queue_size": "4096"}, "queue_size"),
    ({"max_total_blob_bytes": -1}, "max_total_blob_bytes"),
    ({"seed": "7"}, "seed"),
    ({"handle_signals": "yes"}, "handle_signals"),
    ({"shard": 3}, "shard"),
]
POLICY_WRONG: list[tuple[str, Any]] = [
    ("per_key", "1"), ("per_key", 0), ("max_workloads", 1.5), ("max_blob_bytes", "big"),
    ("sample", math.nan), ("sample", True), ("sample", "0.5"), ("dump", ["all"]),
    ("dump_inputs", "x"), ("key", 3), ("shape_axes", [1]), ("kv_indptr", None),
]


@pytest.mark.parametrize(("data", "field"), CAPTURE_WRONG,
                         ids=[f"{f}={d[f]!r}" for d, f in CAPTURE_WRONG])
def test_wrong_capture_setting_is_refused_naming_file_and_field(tmp_path: Path,
                                                                data: dict[str, Any],
                                                                field: str) -> None:
    with pytest.raises(CaptureConfigError, match=f"field '{field}'"):
        CaptureConfig(**data)
    if all(not isinstance(v, float) or math.isfinite(v) for v in data.values()):
        path = tmp_path / "capture.json"
        path.write_bytes(orjson.dumps(data))
        with pytest.raises(CaptureConfigError, match=f"^{path}: .*field '{field}'"):
            CaptureConfig.load(path)


@pytest.mark.parametrize(("field", "value"), POLICY_WRONG,
                         ids=[f"{f}={v!r}" for f, v in POLICY_WRONG])
def test_wrong_capture_policy_field_is_refused_naming_it(field: str, value: Any) -> None:
    with pytest.raises(CaptureConfigError, match=f"field '{field}'"):
        CapturePolicy(**{field: value})
    with pytest.raises(CaptureConfigError, match=f"field 'definitions.d.{field}'"):
        CaptureConfig.from_dict({"definitions": {"d": {field: value}}})


def test_finite_flush_intervals_keep_the_writer_alive(tmp_path: Path) -> None:
    """inf once killed the writer thread and NaN spun it; the largest accepted interval
    is a wait the writer can make."""
    from fib_runtime.capture import enable_capture

    config = CaptureConfig(flush_interval_s=86400.0, handle_signals=False)
    before = set(threading.enumerate())
    with enable_capture(tmp_path / "db", config):
        started = [t for t in threading.enumerate() if t not in before]
        time.sleep(0.2)  # an overflowing wait fails at once
        assert started and all(t.is_alive() for t in started)
    assert not any(t.is_alive() for t in started)
