"""Dispatch: @fib.apply, the per-GPU decision table, key extraction, miss policy."""

from fib_runtime.dispatch.api import (
    ApplySession,
    apply,
    disable_apply,
    dispatch_enabled,
    enable_apply,
    find_definition,
    reload,
    serves,
    stats,
    sync,
    warmup,
)
from fib_runtime.dispatch.config import DefinitionConfig, DispatchConfig
from fib_runtime.dispatch.explain import Explanation, explain
from fib_runtime.dispatch.ranks import RankGroup

__all__ = [
    "ApplySession", "DefinitionConfig", "DispatchConfig", "Explanation", "RankGroup", "apply",
    "disable_apply", "dispatch_enabled", "enable_apply", "explain", "find_definition", "reload",
    "serves", "stats", "sync", "warmup",
]
