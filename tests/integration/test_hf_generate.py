"""integration/hf_generate.py on CPU with tiny models: the whole loop (apply, capture,
retune, dispatch, timed rounds) runs and reports what the GPU run reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")
from integration.hf_generate import main


def test_tiny_run_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))
    out = tmp_path / "result.json"
    code = main(["--device", "cpu", "--tiny", "--models", "llama", "--modes", "eager,fib",
                 "--layers", "1", "--batches", "2", "--new-tokens", "3", "--check-steps", "2",
                 "--rounds", "1", "--retune-iters", "2", "--db", str(tmp_path / "db"),
                 "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())["models"]["llama"]
    assert set(result["routing"]["routed"].values()) == {
        "rmsnorm_h64_eps1e-5", "silu_and_mul_i160", "rope_with_cos_sin_cache_neox_style_d16_rd16"}
    assert result["retune"]["counts"].get("PASSED", 0) > 0
    assert set(result["tokens_per_s"]) == {"eager", "fib"}
    assert all(v > 0 for mode in result["tokens_per_s"].values() for v in mode.values())
    assert result["checks"]["eager"]["batches"]["2"]["prompt_logits_max_abs_diff"] == 0
    for name, stats in result["dispatch_stats"].items():
        assert stats["hits"] > 0 and not stats["fallbacks"], (name, stats)
