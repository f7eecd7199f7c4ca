"""Misuse is said once and counted: a definition name no database holds (a typo, or a
built-in definition the database lacks), and dispatch asked to serve from a folder that
does not exist. The calls still run the decorated function."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fib_runtime as fib
from fib_runtime import autostart
from fib_runtime.dispatch import sites
from fib_runtime.errors import StoreError
from tests.dispatch.helpers import SCALE_CODE, make_db

TYPO = "rmsnorm_h4906"  # rmsnorm_h4096, two digits swapped


@fib.apply(TYPO)
def typo_norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x * weight


@fib.apply("rmsnorm_h4096")
def built_in_norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x * weight


@fib.apply("my_fused_thing")
def custom(x: torch.Tensor) -> torch.Tensor:
    return x + 1


@fib.apply("toy_norm_h8")
def toy(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x * weight


@pytest.fixture
def db(tmp_path: Path) -> Path:
    make_db(tmp_path / "db", {"one": SCALE_CODE.format(tag=1)},
            [("one", 4, 0.01, "cpu")])
    return tmp_path / "db"


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, "fib_runtime")
    return caplog


def said(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if f"fib.apply({name!r})" in r.getMessage()]


def test_a_typo_is_said_once_with_the_closest_names_and_counted(
        db: Path, warnings: pytest.LogCaptureFixture) -> None:
    x, w = torch.ones(4, 4096), torch.full((4096,), 2.0)
    with fib.enable_apply(db):
        for _ in range(3):
            assert torch.equal(typo_norm(x, w), x * w)  # the decorated function answers
        fib.reload()  # every site is regenerated: nothing is said again, counts go on
        typo_norm(x, w)
        stats = fib.stats()
    (line,) = said(warnings, TYPO)
    assert line.startswith(f"fib.apply({TYPO!r}): the database {db} holds no definition of "
                           "that name; its calls run the function it decorates. A typo? "
                           "closest names: rmsnorm_h4096, ")
    assert stats[TYPO]["calls"] == 4 and stats[TYPO]["hits"] == 0
    assert stats[TYPO]["fallbacks"] == {"unknown_definition": 4}


def test_a_built_in_definition_the_database_lacks_says_how_to_add_it(
        db: Path, warnings: pytest.LogCaptureFixture) -> None:
    with fib.enable_apply(db):
        built_in_norm(torch.ones(2, 4096), torch.ones(4096))
        assert fib.stats()["rmsnorm_h4096"]["fallbacks"] == {"unknown_definition": 1}
    (line,) = said(warnings, "rmsnorm_h4096")
    assert line.endswith(f"It is a built-in definition: `fib catalogue install {db}` adds it "
                         "(then capture and `fib retune` measure its solutions)")


def test_a_name_nothing_resembles(db: Path, warnings: pytest.LogCaptureFixture) -> None:
    with fib.enable_apply(db):
        assert torch.equal(custom(torch.zeros(3)), torch.ones(3))
        assert fib.stats()["my_fused_thing"]["fallbacks"] == {"unknown_definition": 1}
    (line,) = said(warnings, "my_fused_thing")
    assert line.endswith("A typo? no known name is close to it")


def test_known_definitions_are_not_touched(db: Path,
                                           warnings: pytest.LogCaptureFixture) -> None:
    with fib.enable_apply(db):
        assert not said(warnings, TYPO)  # said on a call, not for every decorated function
        out = toy(torch.ones(4, 8), torch.ones(8))
        stats = fib.stats()
    assert float(out[0, 0]) == 2.0  # solution `one` served it (x * w + 1)
    assert stats["toy_norm_h8"]["hits"] == 1 and not stats["toy_norm_h8"]["fallbacks"]
    assert not said(warnings, "toy_norm_h8")
    assert sites.sites_of("toy_norm_h8")[0].binding is None  # switched off again


def test_counts_start_again_with_another_database(db: Path, tmp_path: Path) -> None:
    with fib.enable_apply(db):
        custom(torch.zeros(1))
        custom(torch.zeros(1))
    other = make_db(tmp_path / "other", {}, []).root
    with fib.enable_apply(other):
        custom(torch.zeros(1))
        assert fib.stats()["my_fused_thing"]["calls"] == 1
    assert fib.stats() == {}


@pytest.mark.parametrize("kind", ["missing", "a file"])
def test_enable_apply_on_a_path_that_is_no_database_is_an_error(tmp_path: Path,
                                                                kind: str) -> None:
    path = tmp_path / "nope"
    if kind == "a file":
        path.write_text("")
    with pytest.raises(StoreError, match=rf"{path}: (no such database folder|not a database "
                       r"folder \(a file is there\)); dispatch serves from an existing "
                       rf"database \(`fib catalogue install {path}` makes one"):
        fib.enable_apply(path)
    assert path.exists() == (kind == "a file") and not path.is_dir()  # nothing created
    assert sites.current_runtime() is None


def test_fib_enable_apply_on_a_missing_database_logs_and_serves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Serving never fails for us: the switch from the environment logs why dispatch stays
    off, and the decorated functions answer."""
    caplog.set_level(logging.ERROR, "fib_runtime")
    monkeypatch.setenv("FIB_ENABLE_APPLY", "1")
    monkeypatch.setenv("FIB_DATASET_PATH", str(tmp_path / "missing"))
    monkeypatch.setattr(autostart, "problems", [])
    autostart.start_dispatch()
    assert sites.current_runtime() is None and not (tmp_path / "missing").exists()
    assert autostart.problems == [
        f"FIB_ENABLE_APPLY: dispatch stays off: StoreError: {tmp_path}/missing: no such "
        f"database folder; dispatch serves from an existing database (`fib catalogue install "
        f"{tmp_path}/missing` makes one, capture fills it)"]
    assert [r.getMessage() for r in caplog.records] == autostart.problems


def test_fib_enable_apply_in_a_fresh_process(tmp_path: Path) -> None:
    """The same as an engine meets it: FIB_ENABLE_APPLY=1 with a path that does not exist."""
    code = ("import torch, fib_runtime as fib\n"
            "@fib.apply('rmsnorm_h4096')\n"
            "def norm(x, w): return x * w\n"
            "print(float(norm(torch.ones(1, 4096), torch.full((4096,), 3.0))[0, 0]))\n")
    env = {"FIB_ENABLE_APPLY": "1", "FIB_DATASET_PATH": str(tmp_path / "missing"),
           "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0 and done.stdout.strip() == "3.0"
    assert "FIB_ENABLE_APPLY: dispatch stays off: StoreError" in done.stderr
    assert not (tmp_path / "missing").exists()


def test_capture_still_creates_its_database(tmp_path: Path) -> None:
    with fib.enable_capture(tmp_path / "new") as session:
        assert session.db.root.is_dir()
