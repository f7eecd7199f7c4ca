"""What an engine's plugin entry point does: nothing unless fib-runtime is on, then install
the engine's adapter and, with FIB_FLASHINFER=1, the FlashInfer API adapter too."""

from __future__ import annotations

import importlib

from fib_runtime.adapters import bridge


def register_engine(adapter: str) -> None:
    """Import `adapter` (a module with `install()`) and install it, if routing is enabled."""
    if not bridge.enabled():
        return
    importlib.import_module(adapter).install()
    try:
        from fib_runtime.adapters.flashinfer import install_from_env

        install_from_env()
    except ImportError:  # flashinfer is not installed
        pass
