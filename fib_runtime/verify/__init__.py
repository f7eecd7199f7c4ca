"""The step gate (`fib verify`): keep a choice only where the step it runs in is faster.

Per-op timings do not compose (inside a step the previous op's output sits in L2, launches
queue behind each other), so the final judge is the step the engine runs. `verify(step, db)`
runs the step (`module:factory`, see steps.py) with dispatch on the database (the choices)
and with dispatch off (the engine's own path), in each call context asked for
(`regimes.CONTEXTS`, each served by its regime's choices: `eager`: back-to-back steps;
`graph`: CUDA-graph replays; a CPU has only eager), interleaved in rounds. The rule, per
context:

- the choices are *kept* only when the step with them is faster than the original's by more
  than the noise, `ranking.noise(regime, spread_choices, spread_original)` (the floor of the
  regime, or the two spreads together): as in retune's ranking, a candidate displaces the
  engine's own path only by a margin the noise cannot explain, so a step that is slower,
  or merely within the noise (which could be up to the noise slower), does not keep them;
- until they are kept, the definitions whose non-original choices the step uses are tried
  one at a time with their choices off (their calls then run the original); the one whose
  removal makes the step fastest is rejected, and the step is measured again without it
  (with every one rejected, the step is the engine's own);
- each rejected definition is pinned to the original at every key the step used, in the
  database, in the FlashInfer Trace format (pins.py), so dispatch serves the original there
  from then on and `fib explain` says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fib_runtime.dispatch import sites
from fib_runtime.dispatch.config import DispatchConfig
from fib_runtime.dispatch.runtime import Runtime
from fib_runtime.keys import Key, key_to_axes
from fib_runtime.ranking import noise
from fib_runtime.regimes import CONTEXTS
from fib_runtime.render import render_table
from fib_runtime.store import TraceDB
from fib_runtime.verify.pins import pin_traces
from fib_runtime.verify.steps import Step, Variant, load_step, time_variants

ORIGINAL = "original"
CHOICES = "choices"


@dataclass(frozen=True)
class RegimeVerdict:
    """What the gate measured and decided in one regime (times in ms per step)."""

    regime: str
    original_ms: float
    choices_ms: float
    final_ms: float  # with the rejected definitions on their original
    noise: float
    slower: bool  # the choices made the step slower beyond the noise
    rejected: tuple[str, ...]  # definitions pinned to the original, in order
    final_original_ms: float = 0.0  # the original in the last round (final_ms's pair)
    pinned: tuple[tuple[str, dict[str, int]], ...] = ()  # (definition, axes) pinned
    ablations: tuple[dict[str, float], ...] = ()  # per round of rejection: variant -> ms


@dataclass
class VerifyReport:
    step: str
    verdicts: list[RegimeVerdict] = field(default_factory=list)
    not_measured: dict[str, str] = field(default_factory=dict)  # regime -> why

    def table(self) -> str:
        rows = [[v.regime, f"{v.original_ms:.4f}", f"{v.choices_ms:.4f}",
                 f"{v.original_ms / v.choices_ms:.3f}x", f"{v.final_original_ms:.4f}",
                 f"{v.final_ms:.4f}", f"{v.final_original_ms / v.final_ms:.3f}x",
                 f"{v.noise:.1%}", _verdict(v)] for v in self.verdicts]
        lines = [f"step {self.step}",
                 render_table(["regime", "original ms", "choices ms", "speedup",
                               "original ms (last)", "verified ms", "speedup", "noise",
                               "verdict"], rows)]
        for verdict in self.verdicts:
            lines.extend(f"pinned to the original ({verdict.regime}): {d} at {axes}"
                         for d, axes in verdict.pinned)
        lines.extend(f"{regime}: not measured: {why}" for regime, why in
                     self.not_measured.items())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "not_measured": self.not_measured,
                "verdicts": [{**vars(v), "pinned": [list(p) for p in v.pinned],
                              "ablations": list(v.ablations)} for v in self.verdicts]}


def verify(step: str, db: TraceDB | str | Path, *, kwargs: Mapping[str, Any] | None = None,
           regimes: tuple[str, ...] = CONTEXTS, rounds: int = 5,
           config: DispatchConfig | None = None, pin: bool = True) -> VerifyReport:
    """Gate the choices of `db` on the step `step` (module:factory); see the module doc."""
    import torch

    root = db.root if isinstance(db, TraceDB) else Path(db)
    config = replace(config or DispatchConfig(), check_interval_s=0.0)
    run = load_step(step, kwargs)
    cuda = torch.cuda.is_available()
    report = VerifyReport(step)
    previous = sites.current_runtime()
    try:
        for regime in regimes:
            if regime == "graph" and not cuda:
                report.not_measured[regime] = "CUDA graphs need a GPU (a CPU runs eager only)"
                continue
            chosen = Runtime(root, config, watch=False)
            try:
                verdict = _gate(run, root, config, chosen, regime, rounds, cuda)
            except Exception as exc:  # e.g. a step that cannot be recorded in a graph
                if regime == "eager":
                    raise
                report.not_measured[regime] = f"{type(exc).__name__}: {exc}"
                continue
            if pin and verdict.rejected:
                verdict = _pin(chosen, verdict, step)
            report.verdicts.append(verdict)
    finally:
        sites.set_runtime(previous)
    return report


def _verdict(v: RegimeVerdict) -> str:
    if not v.rejected:
        return "kept"
    why = "slower" if v.slower else "no gain beyond the noise"
    return f"{why}: rejected " + ", ".join(v.rejected)


def _used(runtime: Runtime, regime: str) -> dict[str, list[Key]]:
    """Per definition, the keys at which the step was served a solution (not the original)
    in `regime` (after the step ran with this runtime)."""
    used: dict[str, list[Key]] = {}
    for name, dispatcher in runtime.dispatchers.items():
        if dispatcher is None:
            continue
        timing = dispatcher.effective(dispatcher.policy.regime(regime))
        keys = sorted({key for (t, _, key), d in list(dispatcher.decisions.items())
                       if t == timing and d.solution is not None and not d.original})
        if keys:
            used[name] = keys
    return used


def _without(root: Path, config: DispatchConfig, names: list[str]) -> Runtime:
    """A runtime whose definitions `names` admit no solution: their calls run the original."""
    off = {n: replace(config.for_definition(n), allow=()) for n in names}
    return Runtime(root, replace(config, definitions={**config.definitions, **off}),
                   watch=False)


def _gate(step: Step, root: Path, config: DispatchConfig, chosen: Runtime, regime: str,
          rounds: int, cuda: bool) -> RegimeVerdict:
    sites.set_runtime(chosen)
    step()  # every key the step uses is resolved (in both regimes' maps)
    step()
    used = _used(chosen, regime)
    original = Variant(ORIGINAL, None)
    rejected: list[str] = []
    ablations: list[dict[str, float]] = []
    current = Variant(CHOICES, chosen)
    first: tuple[float, float, float] | None = None
    while True:
        times = time_variants(step, [original, current], regime, rounds=rounds, cuda=cuda,
                              seed=len(rejected))
        o, c = times[ORIGINAL], times[current.name]
        margin = noise(regime, o.spread, c.spread)
        if first is None:
            first = (float(o), float(c), margin)
        left = [d for d in used if d not in rejected]
        if float(c) * (1.0 + margin) < float(o) or not left:
            break
        trials = [current] + [Variant(f"without {d}", _without(root, config, [*rejected, d]))
                              for d in left]
        tried = time_variants(step, trials, regime, rounds=rounds, cuda=cuda,
                              seed=100 + len(rejected))
        ablations.append({name: float(t) for name, t in tried.items()})
        best = min(left, key=lambda d: float(tried[f"without {d}"]))
        rejected.append(best)
        current = Variant(f"without {', '.join(rejected)}", _without(root, config, rejected))
    slower = first[1] > first[0] * (1.0 + first[2])
    return RegimeVerdict(regime, first[0], first[1], float(c), first[2], slower,
                         tuple(rejected), float(o), (), tuple(ablations))


def _pin(chosen: Runtime, verdict: RegimeVerdict, step: str) -> RegimeVerdict:
    """Write the pins of the rejected definitions at the keys the step used."""
    used = _used(chosen, verdict.regime)
    reason = (f"fib verify {step} ({verdict.regime}): the step took {verdict.choices_ms:.4f} "
              f"ms with the choices against {verdict.original_ms:.4f} ms on the engine's own "
              f"path ({verdict.choices_ms / verdict.original_ms - 1:+.1%}, noise "
              f"{verdict.noise:.1%}: {_verdict(verdict)}); with this definition on its "
              f"original: {verdict.final_ms:.4f} ms against {verdict.final_original_ms:.4f}")
    traces = []
    pinned = []
    for name in verdict.rejected:
        dispatcher = chosen.dispatchers[name]
        assert dispatcher is not None
        timing = dispatcher.policy.regime(verdict.regime)
        for key in used.get(name, []):
            made = pin_traces(chosen, dispatcher, key, timing, reason)
            if made:
                traces.extend(made)
                pinned.append((name, key_to_axes(dispatcher.definition, key)))
    TraceDB.open(chosen.root).append_traces(traces)
    return replace(verdict, pinned=tuple(pinned))
