"""fib merge publishes the merged database's served tables, one per GPU model."""

from __future__ import annotations

from pathlib import Path

import pytest

from fib_runtime.cli.main import main
from fib_runtime.dispatch.runtime import Runtime
from tests.dispatch.helpers import H100, SCALE_CODE, make_db


def test_a_merge_leaves_served_tables_for_every_gpu_model(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))
    make_db(tmp_path / "src", {"one": SCALE_CODE.format(tag=1)},
            [("one", 8, 0.01, "cpu"), ("one", 8, 0.01, H100)])
    assert main(["merge", str(tmp_path / "src"), str(tmp_path / "dest")]) == 0
    assert "served tables written for CPU, H100" in capsys.readouterr().out
    runtime = Runtime(tmp_path / "dest", watch=False)
    assert runtime.table_loads == {"served": 1} and runtime.db.parsed_traces == 0
    assert runtime.tables["toy_norm_h8"].for_timing("device")[(8,)].names == ("one",)
    assert main(["merge", str(tmp_path / "src"), str(tmp_path / "dest")]) == 0  # nothing new
    assert "served tables" not in capsys.readouterr().out
