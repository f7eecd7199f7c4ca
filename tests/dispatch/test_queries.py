"""What adapters ask before routing: is dispatch on (`fib.dispatch_enabled`), does the loaded
database serve a definition (`fib.serves`); answered without building or warming anything,
and kept true across enable, reload and disable."""

from __future__ import annotations

from pathlib import Path

import pytest

import fib_runtime as fib
from fib_runtime.dispatch import sites
from fib_runtime.schema import Definition
from fib_runtime.store import TraceDB
from tests.dispatch.helpers import SCALE_CODE, make_db
from tests.factories import definition


def test_answers_before_enable_after_enable_after_reload_and_after_disable(
        tmp_path: Path) -> None:
    make_db(tmp_path, {"a": SCALE_CODE.format(tag=1.0)}, [("a", 4, 0.01, "cpu")])
    assert not fib.dispatch_enabled()
    assert not fib.serves("toy_norm_h8")
    with fib.enable_apply(tmp_path, {"check_interval_s": 0}) as session:
        assert fib.dispatch_enabled()
        assert fib.serves("toy_norm_h8")
        assert not fib.serves("toy_norm_h16")  # not in the database
        assert not fib.serves("__fib_adapter_probe__")
        assert session.runtime._builds._built == {}  # nothing built: a query, not a warm-up
        TraceDB.open(tmp_path).add_definition(Definition.from_dict(
            definition("toy_norm_h16", hidden=16)))
        assert not fib.serves("toy_norm_h16")  # the loaded database does not have it yet
        fib.reload()
        assert fib.serves("toy_norm_h16") and fib.serves("toy_norm_h8")
    assert not fib.dispatch_enabled()
    assert not fib.serves("toy_norm_h8")


def test_the_adapters_switch_uses_the_queries(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine adapter started with dispatch already on reloads it instead of enabling a
    second runtime, and asks whether a definition is served without probing warmup."""
    from fib_runtime.adapters import bridge

    make_db(tmp_path, {"a": SCALE_CODE.format(tag=1.0)}, [("a", 4, 0.01, "cpu")])
    monkeypatch.setenv("FIB_ENABLE_APPLY", "1")
    monkeypatch.setenv("FIB_DATASET_PATH", str(tmp_path))
    bridge.reset_for_tests()
    try:
        assert not bridge.served("toy_norm_h8")
        bridge.start()  # dispatch was off: the adapter switches it on
        runtime = sites.current_runtime()
        assert runtime is not None and bridge.served("toy_norm_h8")
        assert not bridge.served("toy_norm_h16")
        assert len(runtime._builds._built) == 1  # served: its best solution built ahead
        bridge.reset_for_tests()
        bridge.start()  # dispatch already on: the same runtime, reloaded
        assert sites.current_runtime() is runtime
    finally:
        bridge.reset_for_tests()
        fib.disable_apply()
