"""Dispatch on CPU with python solutions: selection, conventions, faults, reload, threads."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import fib_runtime as fib
from fib_runtime.dispatch import DefinitionConfig, DispatchConfig
from fib_runtime.schema import Trace
from tests.dispatch.helpers import (
    BROKEN_IMPORT_CODE,
    DPS_CODE,
    H100,
    RAISING_CODE,
    SCALE_CODE,
    make_db,
)
from tests.factories import trace

CPU = "cpu"


def tagged(tag: float) -> str:
    return SCALE_CODE.format(tag=tag)


@fib.apply("toy_norm_h8")
def toy(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The original function: tag 0."""
    return x * weight


def served_by(batch: int, **kw: object) -> float:
    """Which solution served a call: each adds its own tag to x * weight (x, weight = 1)."""
    out = toy(torch.ones(batch, 8), torch.ones(8), **kw)
    return float(out[0, 0]) - 1.0


@pytest.fixture
def two_solutions(tmp_path: Path) -> Path:
    make_db(tmp_path, {"one": tagged(1), "two": tagged(2)}, [
        ("one", 32, 0.010, CPU), ("two", 32, 0.020, CPU),
        ("one", 48, 0.030, CPU), ("two", 48, 0.020, CPU),
        # Faster on another GPU: must be ignored on this machine.
        ("one", 64, 0.001, H100), ("two", 64, 0.050, CPU), ("one", 64, 0.090, CPU),
    ])
    return tmp_path


def test_disabled_calls_the_original(two_solutions: Path) -> None:
    assert served_by(32) == 0.0
    assert toy.__name__ == "toy" and "tag 0" in (toy.__doc__ or "")


def test_exact_hit_takes_the_lowest_latency(two_solutions: Path) -> None:
    with fib.enable_apply(two_solutions):
        assert served_by(32) == 1.0
        assert served_by(48) == 2.0
        assert fib.stats()["toy_norm_h8"]["hits"] == 2


def test_other_hardware_traces_are_ignored(two_solutions: Path) -> None:
    with fib.enable_apply(two_solutions):
        assert served_by(64) == 2.0  # 'one' won only on the H100


def test_nearest_measured_key_in_log_space(two_solutions: Path) -> None:
    with fib.enable_apply(two_solutions, {"default": {"miss": "nearest"}}):
        assert served_by(37) == 1.0  # log2 distance: 37 is nearer 32 than 48
        assert served_by(44) == 2.0  # nearer 48
        assert served_by(40) == 2.0  # between 32 and 48; 40 -> 48 by log2 distance
        assert served_by(37) == 1.0  # cached
        assert fib.stats()["toy_norm_h8"]["nearest"] == 3


def test_ties_go_to_the_larger_key(tmp_path: Path) -> None:
    make_db(tmp_path, {"one": tagged(1), "two": tagged(2)},
            [("one", 16, 0.01, CPU), ("two", 64, 0.01, CPU)])
    with fib.enable_apply(tmp_path):
        assert served_by(32) == 2.0


def test_ranking_uses_latency_not_speedup(tmp_path: Path) -> None:
    db = make_db(tmp_path, {"one": tagged(1), "two": tagged(2)}, [])
    fast = Trace.from_dict(trace(solution="one", batch=8, latency=0.01, hardware=CPU))
    slow_dict = trace(solution="two", batch=8, latency=0.02, hardware=CPU)
    slow_dict["evaluation"]["performance"]["speedup_factor"] = 100.0  # a slow reference run
    db.append_traces([fast, Trace.from_dict(slow_dict)])
    with fib.enable_apply(tmp_path):
        assert served_by(8) == 1.0


def test_miss_policies(two_solutions: Path) -> None:
    config = DispatchConfig(default=DefinitionConfig(miss="fallback"))
    with fib.enable_apply(two_solutions, config):
        assert served_by(37) == 0.0
        assert fib.stats()["toy_norm_h8"]["fallbacks"] == {"miss": 1}
    with fib.enable_apply(two_solutions, {"default": {"miss": "best_overall"}}):
        assert served_by(1000) in (1.0, 2.0)


def test_no_traces_for_this_gpu_falls_back(tmp_path: Path) -> None:
    make_db(tmp_path, {"one": tagged(1)}, [("one", 32, 0.01, H100)])
    with fib.enable_apply(tmp_path):
        assert served_by(32) == 0.0
        assert fib.stats()["toy_norm_h8"]["fallbacks"] == {"no_traces": 1}


def test_value_returning_and_destination_passing(tmp_path: Path) -> None:
    make_db(tmp_path, {"vr": tagged(1), "dps": DPS_CODE.format(tag=2)},
            [("vr", 4, 0.02, CPU), ("dps", 4, 0.01, CPU)], dps=["dps"])
    x, w = torch.ones(4, 8), torch.ones(8)
    with fib.enable_apply(tmp_path):
        assert float(toy(x, w)[0, 0]) == 3.0  # DPS solution, called value-returning
        y = torch.zeros(4, 8)

        @fib.apply("toy_norm_h8")
        def toy_dps(x: torch.Tensor, weight: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return y.copy_(x * weight)

        assert toy_dps(x, w, y) is y  # returns its output, as the original does
        assert float(y[0, 0]) == 3.0


def test_keywords_follow_the_definition_order(two_solutions: Path) -> None:
    with fib.enable_apply(two_solutions):
        out = toy(weight=torch.ones(8), x=torch.ones(32, 8))
        assert float(out[0, 0]) == 2.0
        assert served_by(32) == 1.0


def test_function_form_and_resolver(two_solutions: Path) -> None:
    def original(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x * weight

    @fib.apply(lambda x, weight: "toy_norm_h8" if x.shape[1] == 8 else None)
    def resolved(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x * weight

    with fib.enable_apply(two_solutions):
        out = fib.apply("toy_norm_h8", args=(torch.ones(32, 8), torch.ones(8)),
                        fallback=original)
        assert float(out[0, 0]) == 2.0
        assert float(resolved(torch.ones(48, 8), torch.ones(8))[0, 0]) == 3.0
        assert float(resolved(torch.ones(48, 4), torch.ones(4))[0, 0]) == 1.0  # not ours


def test_raising_solution_falls_back_then_is_quarantined(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    make_db(tmp_path, {"bad": RAISING_CODE, "good": tagged(2)},
            [("bad", 4, 0.01, CPU), ("good", 4, 0.02, CPU)])
    with fib.enable_apply(tmp_path, {"default": {"quarantine_after": 2}}):
        assert served_by(4) == 2.0  # answered by the next candidate
        assert served_by(4) == 2.0
        assert served_by(4) == 2.0
        stats = fib.stats()["toy_norm_h8"]
    assert stats["errors"] == {"bad": 2}
    assert stats["quarantined"] == ["bad"]
    assert sum("quarantined" in r.message for r in caplog.records) == 1


def test_strict_reraises(tmp_path: Path) -> None:
    make_db(tmp_path, {"bad": RAISING_CODE}, [("bad", 4, 0.01, CPU)])
    with fib.enable_apply(tmp_path, {"default": {"strict": True}}), \
            pytest.raises(RuntimeError, match="kernel exploded"):
        served_by(4)


def test_build_failure_uses_the_next_candidate(tmp_path: Path) -> None:
    make_db(tmp_path, {"broken": BROKEN_IMPORT_CODE, "good": tagged(2)},
            [("broken", 4, 0.01, CPU), ("good", 4, 0.02, CPU)])
    with fib.enable_apply(tmp_path) as session:
        assert served_by(4) == 2.0
        assert isinstance(session.runtime.build("broken"), fib.BuildError)


def test_fallback_errors_are_the_callers(tmp_path: Path) -> None:
    make_db(tmp_path, {"one": tagged(1)}, [("one", 4, 0.01, H100)])

    @fib.apply("toy_norm_h8")
    def broken(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        raise ValueError("the caller's own bug")

    with fib.enable_apply(tmp_path), pytest.raises(ValueError, match="own bug"):
        broken(torch.ones(4, 8), torch.ones(8))


def test_debug_mode_catches_wrong_output_shapes(tmp_path: Path) -> None:
    make_db(tmp_path, {"wrong": "def run(x, weight):\n    return x[:1]\n", "good": tagged(2)},
            [("wrong", 4, 0.01, CPU), ("good", 4, 0.02, CPU)])
    with fib.enable_apply(tmp_path, {"default": {"validate_outputs": True}}):
        assert served_by(4) == 2.0
        assert fib.stats()["toy_norm_h8"]["errors"] == {"wrong": 1}


def test_database_change_is_picked_up(two_solutions: Path) -> None:
    with fib.enable_apply(two_solutions, {"check_interval_s": 0}) as session:
        assert served_by(32) == 1.0
        session.runtime.db.append_traces([Trace.from_dict(
            trace(solution="two", batch=32, latency=0.001, hardware=CPU)) for _ in range(2)])
        assert session.runtime.changed()
        fib.reload()
        assert served_by(32) == 2.0


def test_background_check_reloads_without_a_restart(two_solutions: Path) -> None:
    with fib.enable_apply(two_solutions, {"check_interval_s": 0.05}) as session:
        assert served_by(32) == 1.0
        reloaded = threading.Event()
        session.runtime.on_reload(reloaded.set)
        session.runtime.db.append_traces([Trace.from_dict(
            trace(solution="two", batch=32, latency=0.001, hardware=CPU)) for _ in range(2)])
        assert reloaded.wait(5)
        assert served_by(32) == 2.0


def test_nesting_restores_the_previous_runtime(two_solutions: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    make_db(other, {"three": tagged(3)}, [("three", 32, 0.01, CPU)])
    with fib.enable_apply(two_solutions):
        with fib.enable_apply(other):
            assert served_by(32) == 3.0
        assert served_by(32) == 1.0
    assert served_by(32) == 0.0


def test_many_threads_resolve_each_key_once(two_solutions: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from fib_runtime.dispatch.dispatcher import Dispatcher

    errors: list[BaseException] = []
    builds = []
    original = Dispatcher._choose

    def counting(self, key, convention, exclude=None, **kw):  # type: ignore[no-untyped-def]
        builds.append(key)
        return original(self, key, convention, exclude, **kw)

    monkeypatch.setattr(Dispatcher, "_choose", counting)
    with fib.enable_apply(two_solutions):

        def worker() -> None:
            try:
                for _ in range(200):
                    assert served_by(32) == 1.0 and served_by(37) == 1.0
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert sorted(builds) == [(32,), (37,)]


def test_env_vars_turn_dispatch_on_in_a_subprocess(two_solutions: Path, tmp_path: Path) -> None:
    script = (
        "import torch, fib_runtime as fib\n"
        "@fib.apply('toy_norm_h8')\n"
        "def toy(x, weight):\n    return x * weight\n"
        "print(float(toy(torch.ones(32, 8), torch.ones(8))[0, 0]))\n"
        "print(fib.stats()['toy_norm_h8']['hits'])\n")
    env = {**os.environ, "FIB_ENABLE_APPLY": "1", "FIB_DATASET_PATH": str(two_solutions),
           "FIB_CACHE_PATH": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2.0", "1"]


def test_compiled_table_is_cached_on_disk(two_solutions: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))
    with fib.enable_apply(two_solutions):
        served_by(32)
    tables = list((tmp_path / "cache" / "tables").glob("*.json"))
    assert len(tables) == 1
    with fib.enable_apply(two_solutions):  # same fingerprint: read back, same decision
        assert served_by(32) == 1.0
    assert list((tmp_path / "cache" / "tables").glob("*.json")) == tables


def test_explain_cli(two_solutions: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fib_runtime.cli.main import main

    assert main(["explain", "toy_norm_h8", "--axes", "batch_size=37",
                 "--db", str(two_solutions)]) == 0
    out = capsys.readouterr().out
    assert "hardware:    CPU" in out
    assert "{'batch_size': 32} (nearest" in out
    assert out.index("  one  [ok]") < out.index("  two  [ok]")
    assert "decision:    one (interpolated)" in out  # between 32 and 48, nearer 32
    assert main(["explain", "toy_norm_h8", "--axes", "batch=x", "--db",
                 str(two_solutions)]) == 1


def test_same_architecture_traces_only_when_allowed(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    from fib_runtime.dispatch.explain import explain
    from fib_runtime.dispatch.runtime import Runtime
    from fib_runtime.hardware import Hardware

    make_db(tmp_path, {"one": tagged(1)}, [("one", 32, 0.01, H100),
                                          ("one", 32, 0.001, "NVIDIA A100-SXM4-80GB")])
    h200 = Hardware(name="NVIDIA H200", key="H200")
    never = Runtime(tmp_path, hardware=h200, watch=False)
    assert explain("toy_norm_h8", {"batch_size": 32}, never).decision == "fallback"
    same_arch = DispatchConfig(default=DefinitionConfig(other_hardware="same_arch"))
    runtime = Runtime(tmp_path, same_arch, hardware=h200, watch=False)
    explanation = explain("toy_norm_h8", {"batch_size": 32}, runtime)
    assert explanation.decision == "one"
    assert [latency for _, latency, _ in explanation.candidates] == [0.01]  # not the A100's
    assert sum("same architecture" in r.message for r in caplog.records) == 1


def test_a_call_with_other_dimensions_never_decides_for_valid_calls(two_solutions: Path) -> None:
    """(4, 16) has the numel of (8, 8), so the two share a hot key. The first call of a hot
    key is checked against the definition's shapes: the wrong one takes the original code
    and is not cached, so the valid call after it is still served by the solution. (Once a
    valid call has resolved the hot key, later calls are not re-checked: like any dispatcher
    that reads only the key axes, a call with other dimensions is then served the same.)"""
    wide, w16 = torch.ones(4, 16), torch.ones(16)
    with fib.enable_apply(two_solutions):
        assert float(toy(wide, w16)[0, 0]) == 1.0  # the original: x * weight, no tag
        assert float(toy(wide, w16)[0, 0]) == 1.0
        assert served_by(8) == 1.0  # nearest measured key 32: solution one
        assert fib.stats()["toy_norm_h8"]["fallbacks"] == {"arguments": 2}


def test_hot_keys_decode_to_the_workload_key() -> None:
    from fib_runtime.catalogue import load_catalogue
    from fib_runtime.keys import HotKey

    attention = load_catalogue().definitions["gqa_paged_decode_h32_kv8_d128_ps1"]
    hot = HotKey.of(attention)
    assert hot.items[0] == "args[0].numel()" and hot.scales[0] == 32 * 128
    key = (3, 4096, 4, 120)  # batch, pages, indptr length, indices
    assert hot.decode(hot.encode(key)) == key
    assert hot.decode((32 * 128 * 3 + 1, 1024, 4, 120)) is None  # not whole rows
    # The first tensor's dtype and device end the key; without CUDA only its dtype; where
    # inputs can require grad, grad mode comes last.
    assert hot.items[-2:] == ("args[0].dtype", "args[0].get_device()")
    assert hot.tail(hot.encode(key, torch.bfloat16, 1)) == (torch.bfloat16, 1, False)
    cpu = HotKey.of(attention, device=False)
    assert cpu.items[-1] == "args[0].dtype" and cpu.encode(key, torch.float16)[-1] is \
        torch.float16
    assert cpu.tail(cpu.encode(key, torch.float16)) == (torch.float16, -1, False)
    graded = HotKey.of(attention, device=False, grad=True)
    assert graded.items[-2:] == ("args[0].dtype", "grad_enabled()")
    assert graded.decode(graded.encode(key, torch.float16, grad=True)) == key
    assert graded.tail(graded.encode(key, torch.float16, grad=True)) == (torch.float16, -1, True)


def test_reload_keeps_counters_consistent(two_solutions: Path) -> None:
    """Counters live in the definition's dispatcher, which survives a reload: calls and
    hits only grow, and hits never exceed calls."""
    with fib.enable_apply(two_solutions, {"check_interval_s": 0}):
        for _ in range(3):
            served_by(32)
        fib.reload()
        served_by(32)
        stats = fib.stats()["toy_norm_h8"]
    assert (stats["calls"], stats["hits"]) == (4, 4)


def test_switching_capture_many_times_does_not_grow_state(two_solutions: Path,
                                                         tmp_path: Path) -> None:
    import gc

    from fib_runtime.dispatch import sites

    gc.collect()  # sites other tests left unreachable: none is collected between the counts
    with fib.enable_apply(two_solutions, {"check_interval_s": 0}) as session:
        served_by(32)
        dispatcher = session.runtime.dispatcher("toy_norm_h8")
        assert dispatcher is not None
        for _ in range(200):
            fib.enable_capture(tmp_path / "capture", {"flush_interval_s": 60}).close()
        assert len(dispatcher._listeners) == len(sites.sites_of("toy_norm_h8"))
        assert served_by(32) == 1.0
