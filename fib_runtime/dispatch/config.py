"""Dispatch configuration: a default policy plus per-definition overrides."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from fib_runtime.errors import FibError

MissPolicy = Literal["interpolate", "nearest", "best_overall", "fallback"]
OtherHardware = Literal["never", "same_arch"]
Timing = Literal["auto", "device", "eager", "graph"]
TIMING_CHOICES = ("auto", "device", "eager", "graph")


@dataclass(frozen=True)
class DefinitionConfig:
    """How one definition chooses among its measured solutions."""

    max_abs_error: float | None = None  # ignore traces whose error exceeds these
    max_rel_error: float | None = None
    # What an unmeasured key uses: "interpolate" (one variable axis, between two measured
    # keys: latencies interpolated; else the nearest key), "nearest", "best_overall" or
    # "fallback" (the original function).
    miss: MissPolicy = "interpolate"
    strict: bool = False  # re-raise solution errors instead of falling back
    allow: tuple[str, ...] | None = None  # only these solutions (None: all)
    deny: tuple[str, ...] = ()
    other_hardware: OtherHardware = "never"  # use traces of other GPUs of the same arch?
    quarantine_after: int = 3  # errors before a solution is dropped for the definition
    validate_outputs: bool = False  # debug: check output shapes/dtypes of every call
    # Which timing regime ranks the solutions: "auto" = a call resolved while a CUDA graph
    # is captured uses the graph ranking, any other call the eager one (each falls back to
    # device time where it has no traces); or pin one regime for every call.
    timing: Timing = "auto"

    def __post_init__(self) -> None:
        if self.miss not in ("interpolate", "nearest", "best_overall", "fallback"):
            raise FibError(f"dispatch config: unknown miss policy {self.miss!r}")
        if self.other_hardware not in ("never", "same_arch"):
            raise FibError(f"dispatch config: unknown other_hardware {self.other_hardware!r}")
        if self.timing not in TIMING_CHOICES:
            raise FibError(f"dispatch config: unknown timing {self.timing!r}; expected one of "
                           f"{', '.join(TIMING_CHOICES)}")

    def regimes(self) -> tuple[str, str]:
        """The regimes whose rankings serve (eager calls, calls inside graph capture)."""
        if self.timing == "auto":
            return "eager", "graph"
        return self.timing, self.timing

    def admits(self, solution: str) -> bool:
        allowed = self.allow is None or solution in self.allow
        return allowed and solution not in self.deny

    def within_tolerance(self, abs_error: float, rel_error: float) -> bool:
        return ((self.max_abs_error is None or abs_error <= self.max_abs_error)
                and (self.max_rel_error is None or rel_error <= self.max_rel_error))


@dataclass(frozen=True)
class DispatchConfig:
    """The default policy, overrides by definition name, and the DB change-check period."""

    default: DefinitionConfig = field(default_factory=DefinitionConfig)
    definitions: dict[str, DefinitionConfig] = field(default_factory=dict)
    check_interval_s: float = 5.0  # how often a background thread looks for DB changes

    def for_definition(self, name: str) -> DefinitionConfig:
        return self.definitions.get(name, self.default)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DispatchConfig:
        """Parse `{"default": {...}, "definitions": {name: {...}}, "check_interval_s": 5}`."""
        known = {f.name for f in fields(DefinitionConfig)}

        def parse(raw: dict[str, Any], where: str, base: DefinitionConfig) -> DefinitionConfig:
            unknown = set(raw) - known
            if unknown:
                raise FibError(f"dispatch config: {where}: unknown keys {sorted(unknown)}")
            values = {k: tuple(v) if k in ("allow", "deny") and v is not None else v
                      for k, v in raw.items()}
            return replace(base, **values)

        default = parse(data.get("default", {}), "default", DefinitionConfig())
        overrides = {name: parse(raw, f"definitions.{name}", default)
                     for name, raw in data.get("definitions", {}).items()}
        return cls(default, overrides, float(data.get("check_interval_s", 5.0)))
