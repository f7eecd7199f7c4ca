"""The capture config: JSON round trip, per-definition patterns, errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from fib_runtime.capture import CaptureConfig, CaptureConfigError, CapturePolicy


def test_json_round_trip_and_overrides(tmp_path: Path) -> None:
    config = CaptureConfig.from_dict({
        "default": {"dump": "int", "max_workloads": 100},
        "definitions": {"gqa_paged_*": {"key": "kv_bucket", "per_key": 8},
                        "rmsnorm_h4096": {"sample": 0.5, "per_key": None}},
        "queue_size": 64, "flush_interval_s": 0.5, "seed": 3,
    })
    path = tmp_path / "capture.json"
    config.save(path)
    assert CaptureConfig.load(path) == config
    # Entries override the default's fields; an exact name wins over patterns.
    assert config.policy_for("gqa_paged_decode_h32_kv8_d128_ps1") == CapturePolicy(
        dump="int", max_workloads=100, key="kv_bucket", per_key=8)
    assert config.policy_for("rmsnorm_h4096").sample == 0.5
    assert config.policy_for("rmsnorm_h4096").max_workloads == 100
    assert config.policy_for("gemm_n4096_k4096") == config.default


@pytest.mark.parametrize(("data", "message"), [
    ({"default": {"dump": "ints"}}, "field 'default.dump'"),
    ({"default": {"sample": 2}}, "field 'default.sample'"),
    ({"definitions": {"x": {"per_key": 0}}}, "field 'definitions.x.per_key'"),
    ({"definitions": {"x": {"dumps": "all"}}}, "definitions.x.*unknown field.*dumps"),
    ({"default": {"dump": "named"}}, "field 'default.dump_inputs'"),
    ({"queue": 3}, "unknown field.*queue"),
    ({"flush_interval_s": 0}, "field 'flush_interval_s'"),
    ({"default": {"shape_axes": "batch_size"}}, "shape_axes.*list of names"),
])
def test_errors_name_the_file_and_field(tmp_path: Path, data: dict, message: str) -> None:
    import orjson

    path = tmp_path / "bad.json"
    path.write_bytes(orjson.dumps(data))
    with pytest.raises(CaptureConfigError, match=f"{path}: .*{message}"):
        CaptureConfig.load(path)


def test_config_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIB_CAPTURE_CONFIG", raising=False)
    assert CaptureConfig.from_env() == CaptureConfig()
    path = tmp_path / "c.json"
    path.write_text('{"default": {"per_key": 2}}')
    monkeypatch.setenv("FIB_CAPTURE_CONFIG", str(path))
    assert CaptureConfig.from_env().default.per_key == 2
    path.write_text("{not json")
    with pytest.raises(CaptureConfigError, match="not valid JSON"):
        CaptureConfig.from_env()
