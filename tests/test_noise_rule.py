"""Decisions that survive noise: each trace carries its spread, and a candidate displaces the
engine's own function only when it is faster by more than the measured noise (ranking.py's
rule, the one dispatch, retune's table and explain use)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fib_runtime import regimes
from fib_runtime.keys import Key
from fib_runtime.measure.timing import Latency, summarise
from fib_runtime.ranking import noise, rank
from fib_runtime.retuning import retune
from fib_runtime.schema import Definition, Solution, Trace
from fib_runtime.schema.provenance import (
    GATE_KEY,
    GATE_REJECTED,
    ORIGINAL_AUTHOR,
    SPREAD_KEY,
    TIMING_KEY,
    spread_of,
)
from fib_runtime.store import TraceDB
from tests import factories
from tests.retune.helpers import make_db

DEF = "toy_norm_h8"
HW = "NVIDIA H100 80GB HBM3"
KEY: Key = (4,)


def _solution(name: str, *, original: bool = False) -> Solution:
    data = factories.solution(name, DEF, hardware=("any",))
    if original:
        data["author"] = ORIGINAL_AUTHOR
    return Solution.from_dict(data)


def _trace(solution: str, latency: float, *, spread: float | None = None,
           timing: str | None = None, gate: str | None = None) -> Trace:
    data = factories.trace(DEF, solution, batch=4, latency=latency, hardware=HW)
    libs = data["evaluation"]["environment"]["libs"]
    if spread is not None:
        libs[SPREAD_KEY] = str(spread)
    if timing is not None:
        libs[TIMING_KEY] = timing
    if gate is not None:
        libs[GATE_KEY] = gate
        data["evaluation"]["log"] = "the step was 4.0% slower (noise 1.0%)"
    return Trace.from_dict(data)


def _rank(traces: list[Trace], solutions: list[Solution], timing: str = "device"):
    definition = Definition.from_dict(factories.definition(DEF))
    return rank(definition, traces, {s.name: s for s in solutions}, "H100", timing=timing)[KEY]


ENGINE = _solution("engine", original=True)
FAST, OTHER = _solution("fast"), _solution("other")


def test_the_engines_function_keeps_its_place_within_the_noise():
    # 2 % faster in eager time, where the floor is 3 %: the engine's own function serves.
    result = _rank([_trace("fast", 1.00, timing="eager"), _trace("engine", 1.02,
                                                                 timing="eager")],
                   [FAST, ENGINE], "eager")
    assert result.ranking.names == ("engine", "fast")
    assert "kept engine" in result.ranking.note and "2.0%" in result.ranking.note


def test_a_candidate_faster_beyond_the_noise_displaces_it():
    result = _rank([_trace("fast", 1.00, timing="eager"), _trace("engine", 1.10,
                                                                 timing="eager")],
                   [FAST, ENGINE], "eager")
    assert result.ranking.names == ("fast", "engine") and result.ranking.note == ""


def test_the_measured_spread_widens_the_margin():
    # 5 % apart: beyond the 3 % floor when nothing is known of the spread, within it when the
    # two traces say they spread by 3 % each (noise = 6 %).
    bare = [_trace("fast", 1.00, timing="eager"), _trace("engine", 1.05, timing="eager")]
    spread = [_trace("fast", 1.00, spread=0.03, timing="eager"),
              _trace("engine", 1.05, spread=0.03, timing="eager")]
    assert _rank(bare, [FAST, ENGINE], "eager").ranking.names[0] == "fast"
    assert _rank(spread, [FAST, ENGINE], "eager").ranking.names[0] == "engine"
    assert noise("eager", 0.03, 0.03) == pytest.approx(0.06)
    assert noise("device", 0.0, 0.0) == regimes.DEVICE.noise_floor == 0.01


def test_tied_candidates_are_settled_by_device_time():
    # Eager times within the noise; device time says `other` is faster: it serves, whichever
    # of the two the eager medians happened to put first in this process.
    traces = [_trace("fast", 1.00, timing="eager"), _trace("other", 1.01, timing="eager"),
              _trace("fast", 0.50), _trace("other", 0.40)]
    result = _rank(traces, [FAST, OTHER], "eager")
    assert result.ranking.names == ("other", "fast")
    assert "in device time too" in result.ranking.note


def test_a_gate_rejection_removes_the_candidate_at_that_key():
    traces = [_trace("fast", 1.0), _trace("engine", 2.0),
              _trace("fast", 1.0, gate=GATE_REJECTED)]
    result = _rank(traces, [FAST, ENGINE])
    assert result.ranking.names == ("engine",)
    assert result.rejected["fast"].startswith("rejected by the step gate: the step was 4.0%")


def test_spread_is_the_half_iqr_over_the_median():
    got = summarise([1.0, 1.0, 2.0, 3.0, 3.0])
    assert float(got) == 2.0 and got.spread == pytest.approx(0.5)
    assert isinstance(got, float) and Latency(1.5, 0.1).spread == 0.1


def test_retune_stamps_the_spread_and_flashinfer_bench_keeps_it(tmp_path: Path):
    db = make_db(tmp_path / "db", {"good": (factories.RMSNORM_REFERENCE, False)}, batches=(4,))
    retune(db.root, devices="cpu", warmup=1, iters=5, progress=False)
    traces = [t for t in TraceDB.open(db.root).traces_for(DEF) if t.evaluation]
    assert traces and all(spread_of(t.evaluation) is not None for t in traces)
    pytest.importorskip("flashinfer_bench")
    from flashinfer_bench.data import TraceSet

    loaded = TraceSet.from_path(str(db.root))
    libs = [t.evaluation.environment.libs for ts in loaded.traces.values() for t in ts
            if t.evaluation is not None]
    assert libs and all(SPREAD_KEY in lib for lib in libs)


_RETUNE_AND_SERVE = textwrap.dedent("""
    import json, sys
    import fib_runtime as fib
    from fib_runtime.retuning import RetuneConfig, retune
    root = sys.argv[1]
    retune(root, devices="cpu", warmup=2, iters=14, progress=False,
           config=RetuneConfig(timings=("device", "eager")))
    # The stated floor: on a shared 2-core machine, identical calls timed in two processes
    # differ by more than the default 3 % when other work starts or stops meanwhile (under
    # two busy loops beside the suite, by up to 2x). Without the rule the fastest of
    # three equals wins: the same choice twice one time in three.
    with fib.enable_apply(root, {"check_interval_s": 0, "default": {"noise_floor": 1.0}}):
        print(json.dumps(fib.explain("toy_norm_h8", {"batch_size": 4}).decision))
""")

SAME_WORK = textwrap.dedent("""
    import time
    import torch

    def run(x, weight):
        end = time.perf_counter() + 0.002
        while time.perf_counter() < end:
            pass
        return (x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5)
                * weight.float()).to(x.dtype)
""")


def test_two_retunes_in_two_processes_serve_the_same_choice(tmp_path: Path):
    """Three solutions doing the same work (2 ms of busy wait): which is "fastest" is noise.
    Two retunes of two copies of the database, each in its own process, serve the same one."""
    choices = []
    for copy in ("a", "b"):
        db = make_db(tmp_path / copy, {n: (SAME_WORK, False) for n in ("s1", "s2", "s3")},
                     batches=(4,))
        result = subprocess.run([sys.executable, "-c", _RETUNE_AND_SERVE, str(db.root)],
                                capture_output=True, text=True, timeout=600,
                                env={**os.environ, "FIB_CACHE_PATH": str(tmp_path / copy / "c")})
        assert result.returncode == 0, result.stderr
        choices.append(json.loads(result.stdout.strip().splitlines()[-1]))
    assert choices[0] == choices[1]


def test_candidates_tied_everywhere_are_settled_by_name():
    traces = [_trace("other", 1.00), _trace("fast", 1.005)]
    assert _rank(traces, [FAST, OTHER]).ranking.names == ("fast", "other")


def test_a_stated_noise_floor_widens_the_margin():
    """DefinitionConfig.noise_floor (a noisy host): 8 % apart is within a 10 % floor."""
    from fib_runtime.dispatch.config import DefinitionConfig

    definition = Definition.from_dict(factories.definition(DEF))
    traces = [_trace("fast", 1.00, timing="eager"), _trace("engine", 1.08, timing="eager")]
    solutions = {s.name: s for s in (FAST, ENGINE)}
    default = rank(definition, traces, solutions, "H100", timing="eager")[KEY]
    wide = rank(definition, traces, solutions, "H100", DefinitionConfig(noise_floor=0.1),
                timing="eager")[KEY]
    assert default.ranking.names[0] == "fast" and wide.ranking.names[0] == "engine"
