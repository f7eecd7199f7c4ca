"""Shadow validation while serving: a choice on probation is compared with the original
function on sampled calls; one that disagrees is quarantined before it serves alone, one
that agrees graduates to a plain hit. Off, the served maps hold the solutions themselves."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fib_runtime as fib
from fib_runtime.dispatch import sites
from fib_runtime.dispatch.shadow import Probation
from fib_runtime.errors import DispatchConfigError
from tests.dispatch.helpers import DPS_CODE, SCALE_CODE, make_db

DEF = "toy_norm_h8"


@fib.apply(DEF)
def engine(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The engine's code; the solutions below compute `x * weight + tag`, so a tag of 0 is
    right and any other is wrong-but-"fast" (measured fastest in the database)."""
    return x * weight


def _db(root: Path, hardware: str, wrong_tag: float = 5.0, dps: bool = False):
    code = DPS_CODE if dps else SCALE_CODE
    return make_db(root, {"wrong_fast": code.format(tag=wrong_tag),
                          "right": SCALE_CODE.format(tag=0)},
                   [("wrong_fast", 4, 0.001, hardware), ("right", 4, 0.01, hardware)],
                   dps=["wrong_fast"] if dps else [])


def _binding():
    (site,) = [s for s in sites.sites_of(DEF) if s.call is engine]
    return site.binding


@pytest.fixture
def hardware() -> str:
    return fib.current_hardware().name


def test_a_wrong_but_fast_solution_is_quarantined_before_it_serves_alone(
        tmp_path: Path, hardware: str):
    db = _db(tmp_path / "db", hardware)
    config = {"check_interval_s": 0, "default": {"shadow": 0.5, "shadow_checks": 3}}
    with fib.enable_apply(db.root, config):
        x, w = torch.randn(4, 8), torch.randn(8)
        got = engine(x, w)  # the first call of a choice is always compared
        torch.testing.assert_close(got, x * w)  # answered with the original's result
        stats = fib.stats()[DEF]
        assert stats["quarantined"] == ["wrong_fast"]
        assert stats["shadow"] == {"checked": 1, "mismatched": 1}
        for _ in range(4):  # from now on the next candidate serves, and agrees
            torch.testing.assert_close(engine(x, w), x * w)
        assert fib.explain(DEF, {"batch_size": 4}).decision == "right"


@fib.apply(DEF)
def engine_dps(x: torch.Tensor, weight: torch.Tensor, y: torch.Tensor) -> None:
    y.copy_(x * weight)


def test_destination_passing_outputs_are_corrected(tmp_path: Path, hardware: str):
    db = _db(tmp_path / "db", hardware, dps=True)
    with fib.enable_apply(db.root, {"check_interval_s": 0, "default": {"shadow": 1.0}}):
        x, w, y = torch.randn(4, 8), torch.randn(8), torch.zeros(4, 8)
        engine_dps(x, w, y)
        torch.testing.assert_close(y, x * w)
        assert fib.stats()[DEF]["quarantined"] == ["wrong_fast"]


def test_an_agreeing_choice_graduates_to_a_plain_hit(tmp_path: Path, hardware: str):
    db = _db(tmp_path / "db", hardware, wrong_tag=0.0)  # "wrong_fast" is right after all
    with fib.enable_apply(db.root, {"check_interval_s": 0,
                                    "default": {"shadow": 0.5, "shadow_checks": 2}}):
        x, w = torch.randn(4, 8), torch.randn(8)
        engine(x, w)
        assert any(isinstance(fn, Probation) for fn in _binding().served["eager"].values())
        for _ in range(3):  # calls 0 and 2 are compared: two checks passed
            engine(x, w)
        stats = fib.stats()[DEF]
        assert stats["shadow"] == {"checked": 2} and not stats["quarantined"]
        assert not any(isinstance(fn, Probation) for fn in _binding().served["eager"].values())


def test_off_the_served_map_holds_the_solution_itself(tmp_path: Path, hardware: str):
    db = _db(tmp_path / "db", hardware)
    with fib.enable_apply(db.root, {"check_interval_s": 0}):
        x, w = torch.randn(4, 8), torch.randn(8)
        torch.testing.assert_close(engine(x, w), x * w + 5.0)  # served, unchecked
        (served,) = _binding().served["eager"].values()
        assert not isinstance(served, Probation)
        assert fib.stats()[DEF]["shadow"] == {}


@pytest.mark.parametrize("field", [{"shadow": 1.5}, {"shadow": -0.1}, {"shadow_checks": 0}])
def test_bad_shadow_settings_are_refused(field: dict):
    with pytest.raises(DispatchConfigError, match=next(iter(field))):
        fib.DispatchConfig.from_dict({"default": field})
