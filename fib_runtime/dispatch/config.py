"""Dispatch configuration: a default policy plus per-definition overrides.

Every field is checked at construction: a wrong type or value raises DispatchConfigError
naming the field (and the file, when the config was read from one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fib_runtime import regimes
from fib_runtime.config_fields import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_policies,
    names,
    parse_config,
    read_config,
)
from fib_runtime.errors import DispatchConfigError
from fib_runtime.hardware import hardware_key

MissPolicy = Literal["interpolate", "nearest", "best_overall", "fallback"]
OtherHardware = Literal["never", "same_arch"]
MISS_POLICIES = ("interpolate", "nearest", "best_overall", "fallback")
OTHER_HARDWARE = ("never", "same_arch")
_E = DispatchConfigError


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
    # Inheritance: GPU models (hardware keys or device names, e.g. "H100") whose rankings
    # serve, in this order, the keys this GPU has not measured itself (its own traces win
    # wherever they exist); a model of another architecture only with inherit_across_arch.
    inherit: tuple[str, ...] = ()
    inherit_across_arch: bool = False
    quarantine_after: int = 3  # errors before a solution is dropped for the definition
    validate_outputs: bool = False  # debug: check output shapes/dtypes of every call
    # Which timing regime ranks the solutions (fib_runtime.regimes): "auto" = each call
    # context is served by the regime that serves it (a call resolved while a CUDA graph is
    # being recorded: graph; any other call: eager; each falls back to device time where it
    # has no traces); or pin one regime for every call.
    timing: str = regimes.AUTO
    # Shadow validation (dispatch/shadow.py): after a table is loaded, this fraction of the
    # calls of each new choice also runs the original and compares (0: off), until the
    # choice passed `shadow_checks` comparisons; one that disagrees is quarantined.
    shadow: float = 0.0
    shadow_checks: int = 3
    # The least relative difference that counts as faster in the ranking's noise rule
    # (None: the regime's own, regimes.Regime.noise_floor); raise it on a noisy host.
    noise_floor: float | None = None

    def __post_init__(self) -> None:
        check_number(self.max_abs_error, "max_abs_error", _E, none_ok=True)
        check_number(self.max_rel_error, "max_rel_error", _E, none_ok=True)
        check_choice(self.miss, "miss", _E, MISS_POLICIES)
        check_bool(self.strict, "strict", _E)
        object.__setattr__(self, "allow", names(self.allow, "allow", _E, none_ok=True))
        object.__setattr__(self, "deny", names(self.deny, "deny", _E))
        check_choice(self.other_hardware, "other_hardware", _E, OTHER_HARDWARE)
        object.__setattr__(self, "inherit", tuple(
            hardware_key(n) for n in names(self.inherit, "inherit", _E) or ()))
        check_bool(self.inherit_across_arch, "inherit_across_arch", _E)
        check_int(self.quarantine_after, "quarantine_after", _E, low=1)
        check_bool(self.validate_outputs, "validate_outputs", _E)
        check_choice(self.timing, "timing", _E, regimes.choices())
        check_number(self.shadow, "shadow", _E, high=1.0)
        check_int(self.shadow_checks, "shadow_checks", _E, low=1)
        check_number(self.noise_floor, "noise_floor", _E, high=1.0, none_ok=True)

    def regime(self, context: regimes.Context) -> str:
        """The regime whose ranking serves this definition's calls in `context`."""
        return regimes.for_context(self.timing, context)

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

    def __post_init__(self) -> None:
        check_policies(self.default, self.definitions, DefinitionConfig, _E,
                       "definition names")
        # 0 turns the background check off; a day at most (longer overflows a thread wait).
        check_number(self.check_interval_s, "check_interval_s", _E, high=86400.0)

    def for_definition(self, name: str) -> DefinitionConfig:
        return self.definitions.get(name, self.default)

    @classmethod
    def from_dict(cls, data: Any, *, file: str | Path | None = None) -> DispatchConfig:
        """Parse `{"default": {...}, "definitions": {name: {...}}, "check_interval_s": 5}`;
        `file` (where it was read from) prefixes every error message."""
        return parse_config(cls, DefinitionConfig, data, _E, "dispatch config", file)

    @classmethod
    def load(cls, path: str | Path) -> DispatchConfig:
        """Read a JSON config file (DispatchConfigError names the file and field)."""
        path, data = read_config(path, _E, "dispatch config")
        return cls.from_dict(data, file=path)
