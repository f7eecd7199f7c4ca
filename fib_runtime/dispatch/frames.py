"""The per-call paths of a call site, generated once per (site, dispatcher): the hot path.

A dispatching frame reads the key inline (the argument count, then each variable axis in
its hot form, `args[i].numel()` or `args[i].shape[j]`, then the first tensor's dtype and
device and grad mode, see keys.HotKey), does one dict lookup and calls what it found.
Everything else (the decision, the contract's dtype and device rules, the CUDA-graph
recording rule, keywords, failures) happens once per key in `Binding`; what must be tested
per call (a layout a solution cannot take, inputs that require grad in grad mode) is tested
by a guard around the solution of that key only (see contract), and a call that fails it is
answered by the original function, counted under its reason.

A frame is a code object that reads its state from one global, `DISPATCH` (the binding's
lookup, call counter, the binding itself and the grad-mode test, unpacked once per call), so
that a site can install it as the code of the decorated function itself: no wrapper frame
per call.

Timing regimes: a binding keeps one map per call context (`regimes.CONTEXTS`: eager calls,
calls recorded into a CUDA graph), `served[context]`, each holding the choices of the regime
that serves that context (`DefinitionConfig.regime`), and one state per context that reads
its map. While a CUDA graph is being recorded the site's DISPATCH holds the graph context's
state (see `graphs`): the hit path is the same lookup either way. A key is resolved in every
map at once, outside recording, so keys warmed up eagerly (as engines do before recording
their graphs) serve their graph choice inside the recording.
"""

from __future__ import annotations

import builtins
import logging
import types
from collections.abc import Callable
from typing import Any

from fib_runtime import cuda_graphs
from fib_runtime.dispatch import graphs
from fib_runtime.dispatch.contract import (
    DEVICE,
    DTYPE,
    Contract,
    runs_on,
    serving_device,
    several_devices,
)
from fib_runtime.dispatch.dispatcher import DESTINATION, Dispatcher
from fib_runtime.dispatch.shadow import on_probation
from fib_runtime.errors import FibError
from fib_runtime.keys import HotKey, Key, make_key_extractor
from fib_runtime.regimes import CONTEXTS, Context
from fib_runtime.schema import Definition

log = logging.getLogger("fib_runtime.dispatch")

Recorder = Callable[[Key, tuple[Any, ...]], None]

_DISPATCH_TEMPLATE = """
def call(*args, **kwargs):
    served_get, calls, binding, grad_enabled = DISPATCH
    if kwargs:
        return binding.keywords(args, kwargs)
    try:
        key = (len(args), {items})
    except Exception:
        return binding.fallback(*args)
    {record}
    fn = served_get(key)
    if fn is None:
        fn = binding.resolve(key, args)
    next(calls)
    try:
        return fn(*args)
    except BaseException as exc:
        return binding.failed(fn, key, args, exc)
"""


class Binding:
    """One call site bound to a dispatcher: what this site serves per (argument count, key).

    The dispatcher's decisions are shared by every site of a definition; a binding adds the
    site's own fallback (each decorated function is its own) and caches the result.
    """

    def __init__(self, dispatcher: Dispatcher, fallback: Callable[..., Any],
                 recorder: Recorder | None, original: Callable[..., Any] | None = None) -> None:
        self.dispatcher = dispatcher
        self.fallback = fallback
        self.original = original  # what the site records as its engine's path (unwrapped)
        self.recorder = recorder
        self.contract = Contract.of(dispatcher.definition)
        self.hot = HotKey.of(dispatcher.definition, device=several_devices(),
                             grad=bool(self.contract.grad_inputs))
        self.extract = make_key_extractor(dispatcher.definition)
        self.served: dict[Context, dict[tuple[int, ...], Callable[..., Any]]] = {
            context: {} for context in CONTEXTS}
        self.warmed: set[tuple[Any, ...]] = set()  # decided by fib.warmup, not yet called
        # solution, convention, timing regime
        self.owners: dict[Callable[..., Any], tuple[str, str, str]] = {}
        self._counted: dict[str, Callable[..., Any]] = {}
        # What the frame's global DISPATCH holds: the state of the context calls run in
        # (eager, or graph while a CUDA graph is being recorded).
        import torch

        self.states = {context: (served.get, dispatcher.counters.calls, self,
                                 torch.is_grad_enabled)
                       for context, served in self.served.items()}
        self.code = _dispatch_code(dispatcher.definition, self.hot, recorder is not None)
        self.globals: dict[str, Any] = {"__builtins__": builtins,
                                        "DISPATCH": self.state_for(graphs.context())}
        self.frame: Callable[..., Any] = types.FunctionType(self.code, self.globals)
        self.unbind = dispatcher.on_change(self.clear)

    def state_for(self, context: Context) -> tuple[Any, ...]:
        """The DISPATCH state for calls in `context`."""
        return self.states[context]

    def clear(self) -> None:
        """Forget cached choices (a quarantine). The dict objects stay the same, so the
        frames' bound lookups stay valid. `owners` is kept: a call in flight on another
        thread may still need to know whose error it caught."""
        for served in self.served.values():
            served.clear()
        self.warmed.clear()

    def fallback_for(self, reason: str) -> Callable[..., Any]:
        """The site's fallback, counting the calls it answers for this reason."""
        counted = self._counted.get(reason)
        if counted is None:
            fallbacks, original = self.dispatcher.counters.fallbacks, self.fallback

            def counted(*args: Any, **kwargs: Any) -> Any:
                fallbacks[reason] += 1
                return original(*args, **kwargs)

            self._counted[reason] = counted
        return counted

    def resolve(self, hot: tuple[Any, ...], args: tuple[Any, ...]) -> Callable[..., Any]:
        """First call of a (count, hot key) on this site: decide, cache, return the callable.

        The hot key must agree with the shapes; a call that does not (other dimensions than
        the definition's) is answered by the fallback and never cached, so it cannot decide
        for the valid calls that share its hot key. A call outside the contract for its whole
        key (a tensor of another dtype, tensors on several devices, a device the chosen
        solution does not run on: see contract) is cached as a counted fallback.

        `args` empty: a warm-up (fib.warmup). The key is decided and its solutions built,
        nothing is cached: its first call, even while a CUDA graph is being recorded, makes
        the checks above without building anything."""
        dispatcher = self.dispatcher
        generation = dispatcher.generation
        convention = dispatcher.convention(hot[0])
        key = self.hot.decode(hot[1:])
        dtype, device, grad = self.hot.tail(hot)
        refused = None
        if args and key is not None:
            try:
                valid = self.extract(args) == key and \
                    dispatcher.definition.axes_from_inputs(args[:dispatcher.n_inputs]) is not None
            except Exception:
                valid = False
            key = key if valid else None
            refused = self.contract.first_call(args)
        if key is None:
            return self.fallback_for("arguments")
        if convention is None:
            fns = dict.fromkeys(CONTEXTS, self.fallback_for("arguments"))
        elif self.contract.wrong_dtype(dtype) or refused is not None:
            fns = dict.fromkeys(CONTEXTS, self.fallback_for(refused or DTYPE))
        elif cuda_graphs.being_recorded() and hot not in self.warmed:
            return self.fallback_for("graph_capture")  # not cached: warm up keys ahead
        else:
            fns = self._serve_contexts(key, convention, device, grad)
        if not args:
            self.warmed.add(hot)
            return fns["eager"]
        with dispatcher.lock:  # not a choice made before a quarantine or reload cleared them
            if dispatcher.generation == generation:
                for context, fn in fns.items():
                    self.served[context][hot] = fn
        return fns[graphs.context()]

    def warm(self, key: Key) -> None:
        """Decide a workload key ahead of its first call (fib.warmup), for value-returning
        calls of the definition's dtype on the current device, in either grad mode."""
        contract = self.contract
        dtype = None if contract.primary is None else contract.dtypes[contract.primary]
        for grad in (False, True)[:1 + self.hot.grad]:
            self.resolve((contract.n_inputs,
                          *self.hot.encode(key, dtype, serving_device(), grad)), ())

    def _serve_contexts(self, key: Key, convention: str, device: int,
                        grad: bool) -> dict[Context, Callable[..., Any]]:
        """What this site calls for a key in each call context: the choice of the regime
        that serves the context (one choice per regime)."""
        policy = self.dispatcher.policy
        by_regime: dict[str, Callable[..., Any]] = {}
        for context in CONTEXTS:
            regime = policy.regime(context)
            if regime not in by_regime:
                by_regime[regime] = self._serve(key, convention, regime, device, grad)
        return {context: by_regime[policy.regime(context)] for context in CONTEXTS}

    def _serve(self, key: Key, convention: str, timing: str, device: int,
               grad: bool) -> Callable[..., Any]:
        """What this site calls for a key in one regime: a solution behind the per-call
        guards it needs (see contract), its own function when that is fastest (a hit; its
        errors are the engine's own), or the counted fallback (also when the solution does
        not run on the call's device)."""
        decision = self.dispatcher.decide(key, convention, timing)
        if decision.original and decision.call is not None:
            if decision.built is not None and decision.built.fn is self.original:
                return self.fallback  # this site's own record: its engine path, as it runs
            return decision.call
        if decision.call is None:
            return self.fallback_for(decision.reason)
        built = decision.built
        if built is not None and not runs_on(built.targets, built.language, device):
            return self.fallback_for(DEVICE)
        owner = (decision.solution or "", convention, timing)
        self.owners[decision.call] = owner
        any_layout = built is not None and built.any_layout
        call = self.contract.guard(decision.call, self.refused, layout=not any_layout,
                                   grad=grad, destination=convention == DESTINATION)
        self.owners[call] = owner
        call = on_probation(call, self, owner[0], convention == DESTINATION)
        self.owners[call] = owner
        return call

    def refused(self, args: tuple[Any, ...], reason: str) -> Any:
        """A call its solution's guard turned away (see contract): answered by the fallback,
        counted under the reason."""
        return self.fallback_for(reason)(*args)

    def failed(self, fn: Callable[..., Any], key: tuple[int, ...], args: tuple[Any, ...],
               exc: BaseException) -> Any:
        """What a call raised: the fallback's own errors propagate (even KeyboardInterrupt
        and SystemExit); a solution's, whatever they are, are answered by the next
        candidate or the fallback (see Dispatcher.failed)."""
        owner = self.owners.get(fn)
        key = self.hot.decode(key[1:])
        if owner is None or key is None:
            raise exc
        answered, result = self.dispatcher.failed(owner[0], key, owner[1], args, exc, owner[2])
        return result if answered else self.fallback_for("error")(*args)

    def keywords(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A call with keywords: reordered into the definition's positional order."""
        ordered = positional(self.dispatcher.names, args, kwargs)
        if ordered is None:
            next(self.dispatcher.counters.calls)
            return self.fallback_for("keywords")(*args, **kwargs)
        return self.frame(*ordered)


def _dispatch_code(definition: Definition, hot: HotKey, recording: bool) -> types.CodeType:
    """The code of a dispatching frame for a definition (see the module doc)."""
    source = _DISPATCH_TEMPLATE.format(
        items=", ".join(hot.items),
        record="binding.recorder(binding.extract(args), args)" if recording else "pass")
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<fib dispatch {definition.name}>", "exec"), namespace)
    return namespace["call"].__code__


def recording_frame(definition: Definition, fallback: Callable[..., Any],
                    recorder: Recorder) -> Callable[..., Any]:
    """Capture only: record the key, then run the original function."""
    try:
        extract = make_key_extractor(definition)
    except FibError as exc:
        log.warning("capture of %s is off: %s", definition.name, exc)
        return fallback
    names = (*definition.inputs, *definition.outputs)

    def call(*args: Any, **kwargs: Any) -> Any:
        if kwargs:
            ordered = positional(names, args, kwargs)
            if ordered is None:
                return fallback(*args, **kwargs)
            args = ordered
        try:
            key = extract(args)
        except Exception:
            return fallback(*args)
        recorder(key, args)
        return fallback(*args)

    return call


def positional(names: tuple[str, ...], args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
    """Arguments in definition order, or None when keywords do not map onto it."""
    ordered = list(args)
    for name in names[len(args):]:
        if name not in kwargs:
            break
        ordered.append(kwargs[name])
    if len(ordered) - len(args) != len(kwargs):
        return None
    return tuple(ordered)
