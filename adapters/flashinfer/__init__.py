"""FlashInfer's Python API with covered calls routed to fib-runtime, contracts kept.

    from fib_runtime.adapters import flashinfer as fib_flashinfer
    fib_flashinfer.install()      # or FIB_FLASHINFER=1 with the vLLM / SGLang plugin
    ...                           # flashinfer.norm.rmsnorm, fused_add_rmsnorm,
                                  # activation.silu_and_mul, BatchDecodeWithPagedKVCacheWrapper,
                                  # BatchPrefillWith{Paged,Ragged}KVCacheWrapper,
                                  # mla.BatchMLAPagedAttentionWrapper,
                                  # sampling.top_k_(top_p_)sampling_from_probs, top_p_...
    fib_flashinfer.stats()        # {"routed": {...}, "unchanged": {function: {reason: n}}}
    fib_flashinfer.uninstall()

`install()` replaces the functions in `flashinfer`, `flashinfer.norm`,
`flashinfer.activation` and `flashinfer.sampling`, and the decode, prefill and MLA wrappers'
`plan` / `run` (class attributes, so every wrapper instance is covered); `uninstall()` puts
FlashInfer's own back. Routing needs fib-runtime on (`fib.enable_apply(...)`, or
FIB_ENABLE_APPLY / FIB_ENABLE_TRACING); see norm.py, decode.py, prefill.py, mla.py and
sampling.py for what is covered.
"""

from __future__ import annotations

import threading

from fib_runtime.adapters.flashinfer.counters import replaced as _saved
from fib_runtime.adapters.flashinfer.counters import reset, saved, stats

from fib_runtime.config_fields import env_flag

ENV_VAR = "FIB_FLASHINFER"
_lock = threading.Lock()


def installed() -> bool:
    return bool(_saved)


def install() -> None:
    """Route FlashInfer's norm, activation, paged decode, prefill and MLA calls (idempotent)."""
    import flashinfer
    import flashinfer.activation
    import flashinfer.decode
    import flashinfer.mla
    import flashinfer.norm
    import flashinfer.prefill
    import flashinfer.sampling
    from fib_runtime.adapters.flashinfer import decode, mla, norm, prefill, sampling

    with _lock:
        if _saved:
            return
        originals = {
            "rmsnorm": flashinfer.norm.rmsnorm,
            "fused_add_rmsnorm": flashinfer.norm.fused_add_rmsnorm,
            "silu_and_mul": flashinfer.activation.silu_and_mul,
        }
        replacements = norm.wrap(originals)
        owners = {"rmsnorm": (flashinfer, flashinfer.norm),
                  "fused_add_rmsnorm": (flashinfer, flashinfer.norm),
                  "silu_and_mul": (flashinfer, flashinfer.activation)}
        for name, modules in owners.items():
            for module in modules:
                if getattr(module, name, None) is originals[name]:
                    _saved[module, name] = originals[name]
                    setattr(module, name, replacements[name])
        own = {name: getattr(flashinfer.sampling, name) for name in sampling.FUNCTIONS}
        for name, fn in sampling.wrap(own).items():
            for module in (flashinfer, flashinfer.sampling):
                if getattr(module, name, None) is own[name]:
                    _saved[module, name] = own[name]
                    setattr(module, name, fn)
        cls = flashinfer.decode.BatchDecodeWithPagedKVCacheWrapper
        plan, run = decode.wrap(cls.plan, cls.run)
        for name, fn in (("plan", plan), ("run", run)):
            _saved[cls, name] = cls.__dict__[name]
            setattr(cls, name, fn)
        for paged, cls in ((True, flashinfer.prefill.BatchPrefillWithPagedKVCacheWrapper),
                           (False, flashinfer.prefill.BatchPrefillWithRaggedKVCacheWrapper)):
            plan, run = prefill.wrap(paged, cls.plan, cls.run)
            for name, fn in (("plan", plan), ("run", run)):
                _saved[cls, name] = cls.__dict__[name]
                setattr(cls, name, fn)
        cls = flashinfer.mla.BatchMLAPagedAttentionWrapper
        plan, run = mla.wrap(cls.plan, cls.run)
        for name, fn in (("plan", plan), ("run", run)):
            _saved[cls, name] = cls.__dict__[name]
            setattr(cls, name, fn)


def uninstall() -> None:
    """Put FlashInfer's own functions back."""
    from fib_runtime.adapters.flashinfer import norm, sampling

    with _lock:
        for (owner, name), original in _saved.items():
            setattr(owner, name, original)
        _saved.clear()
        norm.clear_routes()
        sampling.clear_routes()


def install_from_env() -> bool:
    """install() when FIB_FLASHINFER is set (the engine plugins call this); True if so."""
    if not env_flag(ENV_VAR):
        return False
    install()
    return True


__all__ = ["ENV_VAR", "install", "install_from_env", "installed", "reset", "saved", "stats",
           "uninstall"]
