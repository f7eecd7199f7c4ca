"""`fib retune` end to end on a temporary database."""

from __future__ import annotations

from pathlib import Path

import pytest

from fib_runtime.cli.main import main
from fib_runtime.store import TraceDB
from tests.retune.helpers import DEF, SOLUTIONS, make_db


def test_cli_retunes_prints_table_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))
    make_db(tmp_path / "db", {n: SOLUTIONS[n] for n in ("good", "good_dps", "raises")},
            batches=(2, 5))
    args = ["retune", str(tmp_path / "db"), "--devices", "cpu", "--warmup", "1", "--iters",
            "3", "--timeout", "30", "--definition", DEF]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "batch_size=2" in captured.out and "batch_size=5" in captured.out
    assert "raises: RUNTIME_ERROR" in captured.out
    assert "evaluated: 6 (PASSED 4, RUNTIME_ERROR 2)" in captured.out
    assert "6/6" in captured.err  # the progress bar, on stderr
    assert len(TraceDB.open(tmp_path / "db").traces_for(DEF)) == 6

    assert main([*args, "--no-progress", "--solution", "good"]) == 0
    assert "evaluated: 0 (none); already measured: 2" in capsys.readouterr().out


def test_cli_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_db(tmp_path / "db", {"good": SOLUTIONS["good"]})
    assert main(["retune", str(tmp_path / "db"), "--tolerance", "oops"]) == 1
    assert "DEFINITION=ATOL,RTOL" in capsys.readouterr().err
    assert main(["retune", str(tmp_path / "db"), "--definition", "missing"]) == 1
    assert "unknown definitions: missing" in capsys.readouterr().err


def test_fib_retune_is_the_function_once_the_package_is_imported(tmp_path: Path) -> None:
    """The package is `retuning`, so importing it never shadows `fib.retune`."""
    import fib_runtime as fib
    import fib_runtime.retuning
    from fib_runtime import retune as imported
    from fib_runtime.retuning import RetuneSummary

    db = make_db(tmp_path / "db", {})  # nothing to measure: no worker starts
    assert isinstance(fib.retune(db, devices="cpu", progress=False), RetuneSummary)
    assert isinstance(imported(db.root, devices="cpu", progress=False), RetuneSummary)
