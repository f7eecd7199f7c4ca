from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from fib_runtime.cli.main import main
from tests.store.test_official import broken_copy


def test_validate_official_data(official: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(official)]) == 0
    out = capsys.readouterr().out
    assert "156 definitions" in out and "663 workloads" in out and "ok" in out


def test_validate_reports_each_problem_and_exits_1(official: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    root = broken_copy(official, tmp_path)
    assert main(["validate", str(root)]) == 1
    out = capsys.readouterr().out
    assert "workloads/rmsnorm/rmsnorm_h4096.jsonl:5:" in out
    assert "definitions/gemm/gemm_n6144_k4096.json: field 'inputs.A.shape[1]': unknown axis" in out
    # Its workloads cannot be used either: reported once per file, not once per line.
    assert "workloads/gemm/gemm_n6144_k4096.jsonl:1: field 'definition': unknown definition " \
           "'gemm_n6144_k4096' (43 lines from here)" in out
    assert "3 problems" in out


def test_ls_and_hw(official: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", str(official)]) == 0
    out = capsys.readouterr().out
    assert "rmsnorm_h4096" in out and "14/14" in out
    assert main(["hw"]) == 0
    assert "key:" in capsys.readouterr().out


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "fib_runtime.cli.main", "ls",
                             str(tmp_path / "nope")], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "no such database folder" in result.stderr and "Traceback" not in result.stderr


def test_console_script_help() -> None:
    fib = shutil.which("fib", path=str(Path(sys.executable).parent))
    assert fib is not None
    result = subprocess.run([fib, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "validate" in result.stdout


def test_catalogue_install_is_idempotent_and_validates(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "db"
    assert main(["catalogue", "install", str(db)]) == 0
    first = sorted(p.relative_to(db) for p in db.rglob("*.json"))
    assert first
    mtimes = {p: p.stat().st_mtime_ns for p in db.rglob("*.json")}
    assert main(["catalogue", "install", str(db)]) == 0
    assert "wrote 0 definitions and 0 solutions" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in db.rglob("*.json")} == mtimes
    assert main(["validate", str(db)]) == 0
    solution = orjson.loads(next((db / "solutions").rglob("*.json")).read_bytes())
    assert solution["sources"][0]["content"].strip()
