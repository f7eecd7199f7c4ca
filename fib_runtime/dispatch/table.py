"""The decision tables of a definition on this hardware, one per timing regime, compiled
from the traces (dispatch.served keeps them in files)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from fib_runtime import regimes
from fib_runtime.dispatch.config import DefinitionConfig, DispatchConfig
from fib_runtime.hardware import arch_of_key
from fib_runtime.keys import Key
from fib_runtime.ranking import Ranking, rank, timings_in
from fib_runtime.schema import Definition, Trace
from fib_runtime.store import TraceDB

log = logging.getLogger("fib_runtime.dispatch")


@dataclass(frozen=True)
class DefinitionTable:
    """Per timing regime that ranks something here (fib_runtime.regimes; `device` always
    present, maybe empty), per measured key, the candidates fastest first (an empty ranking:
    none passed). Which candidate is the engine's own function is not the table's to say
    (see fib_runtime.original.vouched)."""

    rankings: dict[str, dict[Key, Ranking]]
    # per regime, the keys whose ranking was inherited: key -> the GPU model it was measured
    # on (DefinitionConfig.inherit); every other key was measured here
    inherited: dict[str, dict[Key, str]] = field(default_factory=dict)

    def for_timing(self, timing: str) -> dict[Key, Ranking]:
        """The rankings of a regime; device time where that regime has no traces."""
        return self.rankings.get(timing) or self.rankings.get(regimes.DEVICE.name, {})


def empty_table() -> DefinitionTable:
    return DefinitionTable({regimes.DEVICE.name: {}})


def compile_table(db: TraceDB, definition: Definition, hardware_key: str,
                  config: DispatchConfig) -> DefinitionTable:
    """Rank the solutions measured on this hardware (or its architecture, when allowed)."""
    policy = config.for_definition(definition.name)
    traces = db.traces_for(definition.name, hardware_key)
    if not traces and policy.other_hardware == "same_arch" and arch_of_key(hardware_key):
        sources = [k for k in db.hardware_keys(definition.name)
                   if arch_of_key(k) == arch_of_key(hardware_key)]
        traces = [t for k in sources for t in db.traces_for(definition.name, k)]
        if traces:
            log.warning("%s: no traces for %s; using those of %s (same architecture)",
                        definition.name, hardware_key, ", ".join(sources))
    # Traces of the same architecture rank as if measured here: their solutions must
    # target this hardware all the same.
    def ranked(measured: list[Trace], timing: str) -> dict[Key, Ranking]:
        results = rank(definition, measured, db.solutions, hardware_key, policy, timing)
        return {key: result.ranking for key, result in results.items()}

    device = regimes.DEVICE.name
    siblings = [(k, db.traces_for(definition.name, k))
                for k in siblings_of(policy, hardware_key, db.hardware_keys(definition.name))]
    timings = timings_in(traces).union(*(timings_in(t) for _, t in siblings)) - {device}
    rankings: dict[str, dict[Key, Ranking]] = {}
    inherited: dict[str, dict[Key, str]] = {}
    for timing in [device, *sorted(timings, key=regimes.order)]:
        own = ranked(traces, timing)
        for sibling, their in siblings:
            for key, ranking in ranked(their, timing).items():
                if key not in own:
                    own[key] = ranking
                    inherited.setdefault(timing, {})[key] = sibling
        if own or timing == device:
            rankings[timing] = own
    return DefinitionTable(rankings, inherited)


def siblings_of(policy: DefinitionConfig, hardware_key: str, measured: Iterable[str]
                ) -> list[str]:
    """The GPU models whose rankings this one inherits (policy.inherit, in order): those
    with traces of the definition, not itself, of its architecture unless allowed."""
    have = set(measured)
    arch = arch_of_key(hardware_key)
    return [k for k in policy.inherit if k != hardware_key and k in have and (
        policy.inherit_across_arch or (arch is not None and arch_of_key(k) == arch))]


def compile_tables(db: TraceDB, hardware_key: str, config: DispatchConfig
                   ) -> dict[str, DefinitionTable]:
    """The table of every definition of `db` on this hardware."""
    return {name: compile_table(db, d, hardware_key, config)
            for name, d in db.definitions.items()}


def reads_other_hardware(config: DispatchConfig) -> bool:
    """Whether some definition may rank traces of other GPU models (`same_arch`), so that
    a table build must read every hardware key's traces, not only this one's."""
    return any(policy.other_hardware != "never" or policy.inherit
               for policy in (config.default, *config.definitions.values()))
