"""Shadow validation while serving (`DefinitionConfig.shadow`, off by default).

When a table is loaded (or reloaded), every choice a call site makes starts on probation:
one call in `round(1 / shadow)` of it, the first included, also runs the site's original
function on copies of the arguments and judges the outputs by the definition's check kind
(retune's, `fib_runtime.measure.checks`: values within tolerance; a sampler's ids inside the
support, since two random draws never compare). A choice that disagrees is
quarantined at once, before it serves alone, and that call is answered with the original's
outputs; one that passes `shadow_checks` comparisons graduates: the site's maps then hold
the solution itself again, so it serves at a plain hit's cost.

Off, nothing changes: the probation wrapper is made when a decision is taken (once per key,
in `frames.Binding._serve`), never on the hit path, like `validate_outputs`. On, a call on
probation pays one extra frame and a counter; a sampled one also pays copies of its tensor
arguments, the original's run and the comparison, which reads the results on the host (a
device sync). While a CUDA graph is being recorded nothing is compared (the call passes
through).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any, Protocol

from fib_runtime import cuda_graphs
from fib_runtime.dispatch.dispatcher import Dispatcher
from fib_runtime.regimes import Context

log = logging.getLogger("fib_runtime.dispatch")


class Binding(Protocol):
    """What probation needs of a call site's binding (frames.Binding)."""

    dispatcher: Dispatcher
    fallback: Callable[..., Any]  # the site's original function
    served: dict[Context, dict[tuple[int, ...], Callable[..., Any]]]  # per call context


class Probation:
    """A choice of one site and key on probation; called like the solution it wraps."""

    def __init__(self, call: Callable[..., Any], binding: Binding, solution: str,
                 destination: bool, fraction: float, checks: int) -> None:
        self.call = call
        self.binding = binding
        self.solution = solution
        self.destination = destination
        self.every = max(1, round(1.0 / fraction))
        self.left = checks
        self.calls = itertools.count()

    def __call__(self, *args: Any) -> Any:
        if next(self.calls) % self.every or self.left <= 0 or cuda_graphs.being_recorded():
            return self.call(*args)
        return self._compare(args)

    def _compare(self, args: tuple[Any, ...]) -> Any:
        import torch

        from fib_runtime.measure.checks import check_result
        from fib_runtime.measure.compare import as_tuple

        dispatcher = self.binding.dispatcher
        n_in = dispatcher.n_inputs
        copies = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)
        refused = sum(dispatcher.counters.fallbacks.values())
        result = self.call(*args)  # the solution's own errors go to the frame's handler
        if sum(dispatcher.counters.fallbacks.values()) != refused:
            return result  # its guard gave the call to the original: nothing to compare
        try:
            expected = self.binding.fallback(*copies)
            got = args[n_in:] if self.destination else as_tuple(result)
            want = copies[n_in:] if self.destination else as_tuple(expected)
            check = check_result(dispatcher.definition, got, want, copies[:n_in])
        except Exception as exc:  # the original cannot run here: nothing to compare with
            log.warning("%s: shadow check of %s not done: %s: %s", dispatcher.definition.name,
                        self.solution, type(exc).__name__, exc)
            self.left = 0
            self._graduate()  # unchecked, it serves as it would without shadow validation
            return result
        counts = dispatcher.counters.shadow
        counts["checked"] += 1
        if check.status.value == "PASSED":
            self.left -= 1
            if self.left <= 0:
                self._graduate()
            return result
        counts["mismatched"] += 1
        log.warning("%s: solution %s disagrees with the original function (%s); quarantined",
                    dispatcher.definition.name, self.solution, check.log.partition("\n")[0])
        dispatcher.quarantine(self.solution)
        if self.destination:  # the solution wrote the caller's buffers: the original's values
            for out, value in zip(args[n_in:], want, strict=True):
                out.copy_(value)
        return expected

    def _graduate(self) -> None:
        """Passed: the site's maps hold the solution itself from now on."""
        binding = self.binding
        with binding.dispatcher.lock:
            for served in binding.served.values():
                for key, fn in list(served.items()):
                    if fn is self:
                        served[key] = self.call


def on_probation(call: Callable[..., Any], binding: Binding, solution: str,
                 destination: bool) -> Callable[..., Any]:
    """`call`, or a Probation around it when the definition's policy asks for shadow checks."""
    policy = binding.dispatcher.policy
    if not policy.shadow:
        return call
    return Probation(call, binding, solution, destination, policy.shadow, policy.shadow_checks)
