"""vLLM plugin: fib-runtime behind vLLM's RMSNorm and SiluAndMul, through vLLM's own hooks.

Declared in pyproject.toml as the `vllm.general_plugins` entry point `fib_runtime`, which vLLM
loads in every process before the model is built (possibly more than once). With neither
FIB_ENABLE_APPLY nor FIB_ENABLE_TRACING set, `register()` returns at once and vLLM is left
exactly as it is. Otherwise it registers, once, out-of-tree replacements
(`CustomOp.register_oot`) for `RMSNorm` and `SiluAndMul` that route the calls a catalogue
definition covers to `fib.apply` (the `torch.ops.fib.<name>` custom op under torch.compile)
and leave every other call to vLLM's own implementation (see `ops.py`), and of
`UnquantizedFusedMoEMethod`, whose expert calls a bf16 MoE definition covers go to fib-runtime
the same way (see `moe.py`).
"""

from __future__ import annotations

from fib_runtime.adapters.plugin import register_engine


def register() -> None:
    """The `vllm.general_plugins` entry point (idempotent)."""
    register_engine("fib_runtime.adapters.vllm.ops")


__all__ = ["register"]
