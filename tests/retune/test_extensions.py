"""Extending retune without editing library code: a toy timing regime (one registry entry and
its timer) is measured by the workers on the CPU and stamped on the traces; an input maker
registered for a definition makes its inputs in the workers."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from fib_runtime import regimes
from fib_runtime.errors import FibError
from fib_runtime.measure.inputs import register_inputs, unregister_inputs
from fib_runtime.measure.timing import (
    TIMERS,
    Latency,
    get_timer,
    parse_timings,
    register_timer,
    unregister_timer,
)
from fib_runtime.regimes import Regime
from fib_runtime.retuning import RetuneConfig, retune
from fib_runtime.schema import TensorSpec
from fib_runtime.schema.provenance import spread_of, timing_of
from fib_runtime.store import TraceDB
from tests.retune.helpers import DEF, SOLUTIONS, make_db

FAST = {"warmup": 1, "iters": 3, "progress": False, "devices": "cpu"}
TOY_MS = 4.25


def toy_latency_ms(fn: Callable[..., Any], args: list[Any], *, device: Any,
                   refill: Callable[[int], None] | None = None, warmup: int = 10,
                   iters: int = 50) -> Latency:
    """The toy regime's timer: calls the function, reports a latency no real timer gives."""
    for _ in range(warmup + iters):
        fn(*args)
    return Latency(TOY_MS, 0.125)


@pytest.fixture
def toy() -> Iterator[str]:
    regimes.register(Regime("toy", gpu_only=False, serves=None,
                            description="a test's regime: a fixed latency"))
    register_timer("toy", toy_latency_ms)
    yield "toy"
    unregister_timer("toy")
    regimes.unregister("toy")


@pytest.fixture
def toy_gpu() -> Iterator[str]:
    regimes.register(Regime("toy_gpu", gpu_only=True, serves=None,
                            description="a test's GPU-only regime"))
    register_timer("toy_gpu", toy_latency_ms)
    yield "toy_gpu"
    unregister_timer("toy_gpu")
    regimes.unregister("toy_gpu")


def test_a_toy_regime_is_measured_on_the_cpu_and_stamped(tmp_path: Path, toy: str) -> None:
    db = make_db(tmp_path / "db", {n: SOLUTIONS[n] for n in ("good", "wrong_value")})
    summary = retune(db, config=RetuneConfig(timings=("device", toy)), **FAST)
    traces = [t for t in TraceDB.open(db.root, strict=True).traces_for(DEF) if t.solution]
    stamped = {t.solution: t.evaluation for t in traces if timing_of(t.evaluation) == toy}
    assert set(stamped) == {"good", "wrong_value"}
    good = stamped["good"]
    assert good.status.value == "PASSED"
    assert good.performance.latency_ms == TOY_MS  # the worker ran the toy timer
    assert spread_of(good) == 0.125
    assert stamped["wrong_value"].performance is None  # failed the check: not timed
    assert {(o.solution, o.timing) for o in summary.outcomes} == {
        (s, t) for s in ("good", "wrong_value") for t in ("device", toy)}
    assert [b.winner for b in summary.buckets[DEF] if b.timing == toy] == ["good"]
    again = retune(db, config=RetuneConfig(timings=(toy,)), **FAST)
    assert again.outcomes == [] and again.skipped == 2  # the skip rule holds per regime


def test_a_gpu_only_toy_regime_is_noted_not_faked_on_the_cpu(tmp_path: Path,
                                                             toy_gpu: str) -> None:
    assert get_timer(toy_gpu).unavailable("cpu") == \
        "the toy_gpu regime needs a CUDA device (not cpu)"
    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only answer")
    db = make_db(tmp_path / "db", {"good": SOLUTIONS["good"]})
    summary = retune(db, config=RetuneConfig(timings=("device", toy_gpu)), **FAST)
    assert {o.timing for o in summary.outcomes} == {"device"}
    assert any(n.startswith(f"{toy_gpu} timing not measured on CPU: the toy_gpu regime")
               for n in summary.notes)


def test_the_timer_registry_follows_the_regime_registry(toy: str) -> None:
    with pytest.raises(FibError, match="no timing regime 'nameless' is registered"):
        register_timer("nameless", toy_latency_ms)
    with pytest.raises(FibError, match="is already registered"):
        regimes.register(Regime(toy, gpu_only=False, serves=None, description=""))
    with pytest.raises(FibError, match="shipped"):
        regimes.unregister("device")
    assert parse_timings(f"device,{toy}") == ("device", toy)
    regimes.unregister(toy)  # a timer whose regime is gone is unknown
    try:
        with pytest.raises(FibError, match="unknown timing regime 'toy'"):
            parse_timings(toy)
    finally:
        regimes.register(Regime(toy, gpu_only=False, serves=None, description=""))
    assert toy in TIMERS


# Right only where every x is 2.0: what the input maker below makes.
ASSUMES_TWOS = """import torch

def run(x, weight):
    xf = torch.full_like(x, 2.0).float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()
    return y.to(x.dtype)
"""


def twos(name: str, spec: TensorSpec, values: Mapping[str, int], gen: Any) -> Any:
    """The toy definition's `x`: all 2.0 (None: the naming rules make the rest)."""
    if name != "x":
        return None
    return torch.full(tuple(values[a] for a in spec.shape or ()), 2.0)


def test_an_input_maker_makes_the_inputs_in_the_workers(tmp_path: Path) -> None:
    db = make_db(tmp_path / "db", {"assumes_twos": (ASSUMES_TWOS, False)})
    before = retune(db, **FAST)
    assert before.counts() == {"INCORRECT_NUMERICAL": 1}  # random x: not all twos
    register_inputs(DEF, twos)
    try:
        after = retune(db, force=True, **FAST)
    finally:
        unregister_inputs(DEF)
    assert after.counts() == {"PASSED": 1}
