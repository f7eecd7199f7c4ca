"""The dispatch and capture config files go through one parser: the same shape, the same
errors (file, field path, value), only the config's name and its fields differ."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from fib_runtime.capture import CaptureConfig
from fib_runtime.dispatch import DispatchConfig
from fib_runtime.errors import CaptureConfigError, DispatchConfigError

# (config, its error, its name, a policy field, a wrong value, a top-level setting)
CONFIGS = [
    (DispatchConfig, DispatchConfigError, "dispatch config", "quarantine_after", 0,
     "check_interval_s"),
    (CaptureConfig, CaptureConfigError, "capture config", "per_key", 0, "queue_size"),
]
IDS = ["dispatch", "capture"]


@pytest.mark.parametrize(("config", "error", "what", "field", "wrong", "setting"), CONFIGS,
                         ids=IDS)
def test_both_configs_report_the_same_way(tmp_path: Path, config: Any, error: Any,
                                          what: str, field: str, wrong: Any,
                                          setting: str) -> None:
    cases: list[tuple[Any, str]] = [
        (["default"], "must be a JSON object, got list"),
        ({"defaults": {}}, f"unknown field\\(s\\) defaults; known: .*{setting}"),
        ({"default": 3}, "field 'default': must be an object, got 3"),
        ({"definitions": []}, "field 'definitions': must be an object"),
        ({"definitions": {"d": "x"}}, "field 'definitions.d': must be an object"),
        ({"definitions": {"d": {"nope": 1}}},
         f"field 'definitions.d': unknown field\\(s\\) nope; known: .*{field}"),
        ({"default": {field: wrong}}, f"field 'default.{field}': must be .*, got {wrong}"),
        ({"definitions": {"d": {field: wrong}}}, f"field 'definitions.d.{field}'"),
        ({setting: "7"}, f"field '{setting}'"),
    ]
    for data, message in cases:
        with pytest.raises(error, match=f"^{what}: {message}"):
            config.from_dict(data)
        path = tmp_path / "config.json"
        path.write_bytes(orjson.dumps(data))
        with pytest.raises(error, match=f"^{path}: {what}: {message}"):
            config.load(path)


@pytest.mark.parametrize(("config", "error", "what"), [c[:3] for c in CONFIGS], ids=IDS)
def test_unreadable_files_name_the_file_and_the_line(tmp_path: Path, config: Any,
                                                     error: Any, what: str) -> None:
    path = tmp_path / "config.json"
    path.write_text('{\n  "default": {},\n  oops\n}\n')
    with pytest.raises(error, match=f"^{path}: not valid JSON: .*line 3"):
        config.load(path)
    with pytest.raises(error, match=f"^{tmp_path / 'absent.json'}: cannot read the {what}"):
        config.load(tmp_path / "absent.json")


def test_entries_inherit_the_default_in_both() -> None:
    dispatch = DispatchConfig.from_dict({"default": {"strict": True},
                                         "definitions": {"d": {"miss": "fallback"}}})
    assert dispatch.for_definition("d").strict and dispatch.for_definition("d").miss == (
        "fallback")
    capture = CaptureConfig.from_dict({"default": {"dump": "int"},
                                       "definitions": {"d": {"per_key": 4}}})
    assert capture.policy_for("d").dump == "int" and capture.policy_for("d").per_key == 4
