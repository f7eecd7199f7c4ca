"""One reading of an on/off environment variable for every switch: FIB_ENABLE_APPLY and
FIB_ENABLE_TRACING (autostart and the engine plugins), FIB_FLASHINFER (the FlashInfer API
adapter)."""

from __future__ import annotations

import pytest
from fib_runtime.adapters import bridge, flashinfer

from fib_runtime import autostart
from fib_runtime.config_fields import env_flag

ON = ["1", "true", "TRUE", " Yes ", "on", "On\n"]
OFF = ["", "0", "false", "no", "off", "2", "enabled", "y"]


@pytest.mark.parametrize(("value", "on"), [(v, True) for v in ON] + [(v, False) for v in OFF])
def test_every_switch_reads_the_variable_the_same_way(monkeypatch: pytest.MonkeyPatch,
                                                       value: str, on: bool) -> None:
    monkeypatch.setenv("FIB_TEST_FLAG", value)
    assert env_flag("FIB_TEST_FLAG") is on
    monkeypatch.delenv("FIB_ENABLE_TRACING", raising=False)
    monkeypatch.setenv("FIB_ENABLE_APPLY", value)
    assert bridge.enabled() is on  # the vLLM / SGLang plugins' switch
    started: list[str] = []
    monkeypatch.setattr(autostart, "_guarded", lambda variable, *_: started.append(variable))
    monkeypatch.setattr(autostart.sites, "current_runtime", lambda: None)
    autostart.start_dispatch()
    assert started == (["FIB_ENABLE_APPLY"] if on else [])
    installs: list[bool] = []
    monkeypatch.setattr(flashinfer, "install", lambda: installs.append(True))
    monkeypatch.setenv(flashinfer.ENV_VAR, value)
    assert flashinfer.install_from_env() is on and installs == ([True] if on else [])


def test_an_unset_variable_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIB_TEST_FLAG", raising=False)
    assert env_flag("FIB_TEST_FLAG") is False
