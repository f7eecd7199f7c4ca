"""Inheritance between GPU models: an H200 with few traces of its own serves an H100's
rankings at the keys it has not measured (its own win wherever they exist), says so in
`fib explain`, never takes another architecture's unless configured, and keeps it all in
its served-table file."""

from __future__ import annotations

from pathlib import Path

import pytest

from fib_runtime.dispatch.config import DefinitionConfig, DispatchConfig
from fib_runtime.dispatch.explain import explain
from fib_runtime.dispatch.runtime import Runtime
from fib_runtime.dispatch.served import write_served
from fib_runtime.errors import DispatchConfigError
from fib_runtime.hardware import Hardware
from tests.dispatch.helpers import H100, SCALE_CODE, make_db

H200 = Hardware("NVIDIA H200", "H200")
A100 = "NVIDIA A100-SXM4-80GB"


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    """The H200 measured batch 8 (two wins); the H100 measured 8 (one wins) and 32 (two
    wins); an A100 measured 128 (one wins)."""
    timings = [("one", 8, 0.010, "NVIDIA H200"), ("two", 8, 0.005, "NVIDIA H200"),
               ("one", 8, 0.005, H100), ("two", 8, 0.010, H100),
               ("one", 32, 0.020, H100), ("two", 32, 0.010, H100),
               ("one", 128, 0.010, A100), ("two", 128, 0.030, A100)]
    make_db(tmp_path / "db", {"one": SCALE_CODE.format(tag=1), "two": SCALE_CODE.format(tag=2)},
            timings)
    return tmp_path / "db"


def served(runtime: Runtime) -> dict[tuple[int, ...], tuple[str, str | None]]:
    table = runtime.tables["toy_norm_h8"]
    inherited = table.inherited.get("device", {})
    return {k: (r.names[0], inherited.get(k)) for k, r in table.for_timing("device").items()}


def inherit(*siblings: str, across: bool = False) -> DispatchConfig:
    return DispatchConfig(DefinitionConfig(inherit=siblings, inherit_across_arch=across))


def test_own_traces_win_and_a_sibling_fills_the_keys_not_measured_here(fleet: Path):
    assert served(Runtime(fleet, hardware=H200, watch=False)) == {(8,): ("two", None)}
    runtime = Runtime(fleet, inherit(H100, A100), hardware=H200, watch=False)
    # batch 8: the H200's own ranking, although the H100 measured it differently; batch 32
    # from the H100; the A100 is another architecture: not inherited.
    assert served(runtime) == {(8,): ("two", None), (32,): ("two", "H100")}
    dispatcher = runtime.dispatcher("toy_norm_h8")
    assert dispatcher is not None
    assert dispatcher.ranking((32,))[2] == "inherited"
    assert dispatcher.ranking((8,))[2] == "measured"
    across = Runtime(fleet, inherit("H100", "A100", across=True), hardware=H200, watch=False)
    assert served(across)[(128,)] == ("one", "A100")


def test_explain_says_where_an_inherited_ranking_was_measured(fleet: Path):
    runtime = Runtime(fleet, inherit("H100"), hardware=H200, watch=False)
    told = explain("toy_norm_h8", {"batch_size": 32}, runtime)
    assert told.reason == "inherited" and told.decision == "two"
    assert any("inherited from H100" in note for note in told.notes), told.notes
    own = explain("toy_norm_h8", {"batch_size": 8}, runtime)
    assert own.reason == "measured" and not any("inherited" in n for n in own.notes)
    near = explain("toy_norm_h8", {"batch_size": 64}, runtime)  # beyond 32: the nearest
    assert near.measured_axes == {"batch_size": 32}
    assert any("inherited from H100" in note for note in near.notes), near.notes


def test_the_served_table_file_keeps_what_was_inherited(fleet: Path):
    config = inherit("H100")
    compiled = served(Runtime(fleet, config, hardware=H200, watch=False))
    write_served(fleet, ["H200"], config)
    warm = Runtime(fleet, config, hardware=H200, watch=False)
    assert warm.table_loads == {"served": 1}
    assert served(warm) == compiled == {(8,): ("two", None), (32,): ("two", "H100")}


def test_inherit_is_a_list_of_gpu_models():
    assert DefinitionConfig(inherit=["NVIDIA H100 80GB HBM3", "H20"]).inherit == ("H100",
                                                                                 "H20")
    with pytest.raises(DispatchConfigError, match="inherit"):
        DispatchConfig.from_dict({"default": {"inherit": "H100"}})


def test_fib_report_measures_the_penalty_of_inheriting_where_both_measured(
        fleet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from fib_runtime.cli.main import main

    assert main(["report", str(fleet), "--no-plots", "--out", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out
    # At batch 8 (both measured) the H200 serving the H100's winner (one) runs 2x its own
    # fastest (two), and the other way round; the A100 is another architecture.
    rows = {tuple(line.split()[1:3]): line.split() for line in printed.splitlines()
            if line.startswith("toy_norm_h8") and "x" in line.split()[-2]}
    assert rows[("H200", "H100")][3:6] == ["1", "2.000x", "2.000x"]
    assert rows[("H100", "H200")][3:6] == ["1", "2.000x", "2.000x"]
    assert not any("A100" in key for key in rows)
