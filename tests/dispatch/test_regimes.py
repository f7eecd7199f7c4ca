"""Dispatch by timing regime: eager and graph rankings, a pinned regime, the capture swap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import fib_runtime as fib
from fib_runtime import regimes
from fib_runtime.dispatch import graphs
from fib_runtime.dispatch.config import DefinitionConfig
from fib_runtime.dispatch.explain import explain
from fib_runtime.errors import FibError
from fib_runtime.schema import Trace
from fib_runtime.schema.provenance import stamped
from fib_runtime.store import TraceDB
from tests.dispatch.helpers import SCALE_CODE, make_db
from tests.factories import trace

CPU = "cpu"


@fib.apply("toy_norm_h8")
def toy(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x * weight


def served_by(batch: int) -> float:
    return float(toy(torch.ones(batch, 8), torch.ones(8))[0, 0]) - 1.0


def timed(solution: str, batch: int, latency: float, timing: str | None) -> Trace:
    t = Trace.from_dict(trace(solution=solution, batch=batch, latency=latency, hardware=CPU))
    if timing is None:
        return t
    evaluation = t.evaluation
    assert evaluation is not None
    environment = stamped(evaluation.environment, timing=timing)
    return Trace(t.definition, t.workload, t.solution,
                 type(evaluation)(evaluation.status, environment, evaluation.timestamp,
                                  evaluation.log, evaluation.correctness,
                                  evaluation.performance))


@pytest.fixture
def three_regimes(tmp_path: Path) -> Path:
    """device: one fastest; eager: two fastest; graph: three fastest (batch 32)."""
    db = make_db(tmp_path, {"one": SCALE_CODE.format(tag=1), "two": SCALE_CODE.format(tag=2),
                            "three": SCALE_CODE.format(tag=3)}, [])
    db.append_traces([
        timed("one", 32, 0.010, None), timed("two", 32, 0.020, None),
        timed("three", 32, 0.030, None),
        timed("one", 32, 0.050, "eager"), timed("two", 32, 0.015, "eager"),
        timed("three", 32, 0.040, "eager"),
        timed("one", 32, 0.009, "graph"), timed("two", 32, 0.012, "graph"),
        timed("three", 32, 0.004, "graph"),
    ])
    return tmp_path


@pytest.fixture(autouse=True)
def no_capture_left() -> Any:
    yield
    while graphs.context() == "graph":
        graphs.ended()


def test_eager_and_device_rankings_choose_differently(three_regimes: Path) -> None:
    with fib.enable_apply(three_regimes):  # auto: an eager call uses the eager ranking
        assert served_by(32) == 2.0
        assert fib.stats()["toy_norm_h8"]["fallbacks"] == {}
    for pinned, expected in (("device", 1.0), ("eager", 2.0), ("graph", 3.0)):
        with fib.enable_apply(three_regimes, {"default": {"timing": pinned}}):
            assert served_by(32) == expected, pinned


def test_a_regime_without_traces_ranks_by_device_time(tmp_path: Path) -> None:
    make_db(tmp_path, {"one": SCALE_CODE.format(tag=1), "two": SCALE_CODE.format(tag=2)},
            [("one", 32, 0.010, CPU), ("two", 32, 0.020, CPU)])
    with fib.enable_apply(tmp_path):
        assert served_by(32) == 1.0
        graphs.began()
        assert served_by(32) == 1.0
        graphs.ended()
        text = str(explain("toy_norm_h8", {"batch_size": 32}))
        assert "eager (no eager traces: device time)" in text


def test_capture_begin_and_end_swap_the_served_choices(three_regimes: Path) -> None:
    with fib.enable_apply(three_regimes):
        assert served_by(32) == 2.0  # resolved eagerly: both maps filled
        graphs.began()
        assert graphs.context() == "graph"
        assert served_by(32) == 3.0  # the graph choice, without resolving again
        assert served_by(37) == 3.0  # a new key resolved during the swap: graph choice
        graphs.began()  # a nested/overlapping recording
        graphs.ended()
        assert served_by(32) == 3.0  # still inside the outer capture
        graphs.ended()
        assert graphs.context() == "eager"
        assert served_by(32) == 2.0 and served_by(37) == 2.0
        assert fib.stats()["toy_norm_h8"]["fallbacks"] == {}


def test_a_site_bound_during_capture_starts_on_the_graph_map(three_regimes: Path) -> None:
    graphs.began()
    with fib.enable_apply(three_regimes):
        assert served_by(32) == 3.0
        graphs.ended()
        assert served_by(32) == 2.0


def test_wrapped_capture_methods_report_begin_and_end() -> None:
    calls: list[str] = []

    class FakeGraph:
        def capture_begin(self, *args: Any, **kwargs: Any) -> None:
            calls.append("begin")
            if kwargs.get("fail"):
                raise RuntimeError("capture refused")

        def capture_end(self) -> None:
            calls.append("end")

    graphs.follow_recordings(FakeGraph)
    graph = FakeGraph()
    graph.capture_begin()
    assert graphs.context() == "graph"
    graph.capture_end()
    assert graphs.context() == "eager"
    with pytest.raises(RuntimeError):
        graph.capture_begin(fail=True)
    assert graphs.context() == "eager"  # a recording that failed to begin does not count
    assert calls == ["begin", "end", "begin"]


def test_install_is_a_no_op_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA process installs the hooks")
    begin = torch.cuda.CUDAGraph.capture_begin
    assert graphs.install() is False
    assert torch.cuda.CUDAGraph.capture_begin is begin


def test_the_timing_setting_is_validated() -> None:
    pinned, auto = DefinitionConfig(timing="eager"), DefinitionConfig()
    assert (pinned.regime("eager"), pinned.regime("graph")) == ("eager", "eager")
    assert (auto.regime("eager"), auto.regime("graph")) == ("eager", "graph")
    with pytest.raises(FibError, match="timing"):
        DefinitionConfig(timing="fast")  # type: ignore[arg-type]
    with pytest.raises(FibError, match="timing"):
        fib.DispatchConfig.from_dict({"default": {"timing": "wall"}})


def test_tables_cache_keeps_regimes_and_originals(three_regimes: Path) -> None:
    from fib_runtime.dispatch.runtime import Runtime

    first = Runtime(three_regimes, watch=False)
    second = Runtime(TraceDB.open(three_regimes), watch=False)  # from the cached tables
    for runtime in (first, second):
        table = runtime.tables["toy_norm_h8"]
        assert set(table.rankings) == {"device", "eager", "graph"}
        assert table.for_timing("graph")[(32,)].names[0] == "three"


def test_a_key_between_two_measured_keys_is_ranked_by_interpolation(tmp_path: Path) -> None:
    """one wins at 16 but is 4x slower at 64; two is flat: at 24 (nearer 16) the
    interpolated latencies choose two, where nearest would choose one."""
    make_db(tmp_path, {"one": SCALE_CODE.format(tag=1), "two": SCALE_CODE.format(tag=2)},
            [("one", 16, 0.010, CPU), ("two", 16, 0.011, CPU),
             ("one", 64, 0.040, CPU), ("two", 64, 0.012, CPU)])
    with fib.enable_apply(tmp_path):
        assert served_by(24) == 2.0
        assert served_by(17) == 1.0  # close to 16: one is still estimated faster
        assert served_by(200) == 2.0  # outside the measured range: the nearest key (64)
        assert explain("toy_norm_h8", {"batch_size": 24}).reason == "interpolated"
    with fib.enable_apply(tmp_path, {"default": {"miss": "nearest"}}):
        assert served_by(24) == 1.0


@pytest.fixture
def toy_regime() -> Any:
    """A regime registered the way a user adds one (no timer: its traces are written here)."""
    yield regimes.register(regimes.Regime("toy", gpu_only=False, serves=None,
                                          description="a test's own timing regime"))
    regimes.unregister("toy")


def test_a_registered_regime_serves_where_pinned_with_no_edit_in_dispatch(
        tmp_path: Path, toy_regime: regimes.Regime) -> None:
    """device: one; eager: two; graph: three; toy: four fastest (batch 32)."""
    db = make_db(tmp_path, {name: SCALE_CODE.format(tag=tag) for tag, name in
                            enumerate(("one", "two", "three", "four"), 1)}, [])
    db.append_traces([timed(name, 32, latency, regime) for regime, latencies in (
        (None, (0.010, 0.020, 0.030, 0.040)), ("eager", (0.050, 0.015, 0.040, 0.060)),
        ("graph", (0.009, 0.012, 0.004, 0.020)), ("toy", (0.050, 0.040, 0.030, 0.001)))
        for name, latency in zip(("one", "two", "three", "four"), latencies, strict=True)])
    pinned = {"default": {"timing": "toy"}}
    with fib.enable_apply(tmp_path, fib.DispatchConfig.from_dict(pinned)):
        assert served_by(32) == 4.0  # its own ranking, in every call context
        graphs.began()
        assert served_by(32) == 4.0 and served_by(33) == 4.0  # 33: nearest measured key
        graphs.ended()
        assert explain("toy_norm_h8", {"batch_size": 32}).timing == "toy"
    with fib.enable_apply(tmp_path):  # auto: eager calls the eager ranking, graph the graph
        assert served_by(32) == 2.0
        graphs.began()
        assert served_by(32) == 3.0
        graphs.ended()
        assert fib.stats()["toy_norm_h8"]["fallbacks"] == {}


def test_a_pinned_regime_without_traces_ranks_by_device_time(
        three_regimes: Path, toy_regime: regimes.Regime) -> None:
    with fib.enable_apply(three_regimes, {"default": {"timing": "toy"}}):
        assert served_by(32) == 1.0
        text = str(explain("toy_norm_h8", {"batch_size": 32}))
        assert "toy (no toy traces: device time)" in text


def test_an_unregistered_regime_is_refused_in_the_config() -> None:
    with pytest.raises(FibError, match=r"timing.*one of auto, device, eager, graph"):
        fib.DispatchConfig.from_dict({"definitions": {"toy_norm_h8": {"timing": "toy"}}})
    with pytest.raises(FibError, match="already registered"):
        regimes.register(regimes.Regime("eager", gpu_only=False, serves=None, description=""))
    with pytest.raises(FibError, match="already served"):
        regimes.register(regimes.Regime("other", gpu_only=False, serves="eager",
                                        description=""))
    assert "other" not in regimes.names()
