"""SGLang plugin: fib-runtime behind SGLang's RMSNorm and SiluAndMul, through SGLang's hooks.

Declared in pyproject.toml as the `sglang.srt.plugins` entry point `fib_runtime`, which
SGLang's `load_plugins()` runs in every process before `HookRegistry.apply_hooks()`. With
neither FIB_ENABLE_APPLY nor FIB_ENABLE_TRACING set, `register()` returns at once and SGLang is
left exactly as it is. Otherwise it registers, once, AROUND hooks on `forward_cuda` and
`forward_native` of both classes (and an AFTER hook on RMSNorm.__init__ that decides routing
from the module's constants), see `hooks.py`, and one on the unquantized fused MoE method's
`forward_cuda`, see `moe.py`.
"""

from __future__ import annotations

from fib_runtime.adapters.plugin import register_engine


def register() -> None:
    """The `sglang.srt.plugins` entry point (idempotent)."""
    register_engine("fib_runtime.adapters.sglang.hooks")


__all__ = ["register"]
