"""The engine's own function (the one `fib.apply` decorates) as a candidate solution.

Retune times the original like any solution wherever another process can import it: a
module-level function, or a function reached through classes of an importable module
(a static method, or a method that does not read `self`). Its record in the database is a
plain FlashInfer Trace Solution, author `ORIGINAL_AUTHOR`, language python, whose source
imports the module and binds the function as its entry point (no wrapper frame).

A function that cannot be imported that way (a closure, a lambda, one defined in
`__main__`, a bound method, a method that reads its instance) is recorded too, as a
solution that says why (`untimeable_reason`): retune notes it and never runs it; `fib
explain` prints the reason. `original_solution` is the one place that writes either.

A database record is the engine's own function only when a live call site of this process
vouches for it: the site's function, recorded now, gives exactly that record (`vouch`, done
by each site whenever dispatch or capture starts; `vouched`). The author string proves
nothing: a record that no site vouches for is an ordinary solution, trusted or not like any
other. A record written by an earlier process is vouched for again by the same site after a
restart, so it is served by calling the function, with no database code run.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

from fib_runtime.schema import Definition, Solution
from fib_runtime.schema.provenance import ORIGINAL_AUTHOR, content_digest
from fib_runtime.schema.solution import BuildSpec, SourceFile

log = logging.getLogger("fib_runtime.dispatch")

UNTIMEABLE = "The engine's own function; not timeable: "
MARK = "__fib_original__"  # on a decorated function: the function it decorates
_ENTRY = "original.py"


def unwrapped(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The engine's function behind a `fib.apply` decoration (or `fn` itself)."""
    return getattr(fn, MARK, fn)


def original_name(definition: str, fn: Callable[..., Any]) -> str:
    """The solution name of an original: `<definition>__original__<module>.<qualname>`,
    file-safe (one function may serve several definitions)."""
    fn = unwrapped(fn)
    where = f"{getattr(fn, '__module__', None) or '?'}.{getattr(fn, '__qualname__', '?')}"
    return f"{definition}__original__" + "".join(c if c.isalnum() or c in "-_." else "_"
                                                 for c in where)


def original_problem(fn: Callable[..., Any]) -> str | None:
    """Why another process cannot import and call `fn` as it is (None: it can)."""
    if isinstance(fn, types.MethodType):
        return "it is a bound method (its instance's state is not importable)"
    fn = unwrapped(fn)
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname:
        return "it has no module and qualified name"
    if qualname.endswith("<lambda>"):
        return "it is a lambda"
    if "<locals>" in qualname:
        return "it is a closure (defined inside a function)"
    if module == "__main__":
        return "it is defined in __main__, which another process cannot import"
    if "." in qualname and _reads_self(fn):
        return "it is a method that reads its instance (self)"
    try:
        target: Any = sys.modules.get(module) or importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
    except Exception:
        return f"{module}.{qualname} cannot be imported"
    if unwrapped(target) is not fn:
        return f"{module}.{qualname} names another object"
    return None


def _reads_self(fn: Callable[..., Any]) -> bool:
    try:
        first = next(iter(inspect.signature(fn).parameters), None)
    except (TypeError, ValueError):
        return True
    return first in ("self", "cls")


def original_solution(definition: Definition, fn: Callable[..., Any]) -> Solution:
    """The Solution that stands for `fn` in the database (timeable or saying why not)."""
    base = unwrapped(fn)
    module = getattr(base, "__module__", None) or "?"
    qualname = getattr(base, "__qualname__", None) or "?"
    problem = original_problem(fn)
    if problem is None:
        source = (f'"""The engine\'s own function {module}.{qualname}, timed by fib-runtime '
                  'as a candidate."""\n\nimport importlib\n\n\ndef _resolve():\n'
                  f'    target = importlib.import_module({module!r})\n'
                  f'    for part in {qualname!r}.split("."):\n'
                  '        target = getattr(target, part)\n'
                  f'    return getattr(target, {MARK!r}, target)\n\n\nrun = _resolve()\n')
        description = f"The engine's own function {module}.{qualname}."
    else:
        source = (f'"""{module}.{qualname} cannot be timed: {problem}."""\n\n'
                  f'raise ImportError({(UNTIMEABLE + problem)!r})\n')
        description = UNTIMEABLE + problem
    spec = BuildSpec("python", ("any",), f"{_ENTRY}::run", destination_passing_style=False)
    return Solution(original_name(definition.name, fn), definition.name, ORIGINAL_AUTHOR, spec,
                    (SourceFile(_ENTRY, source),), description)


# solution name -> (digest of the record a live site writes for its function, the function)
_vouched: dict[str, tuple[str, Callable[..., Any]]] = {}
_vouched_lock = threading.Lock()


def vouch(definition: Definition, fn: Callable[..., Any]) -> Solution | None:
    """A live call site of `definition` stands for `fn`: a database record equal to the one
    returned is served by calling `fn` (never raises; None when it cannot be recorded)."""
    try:
        solution = original_solution(definition, fn)
        entry = (content_digest(solution), unwrapped(fn))
    except Exception as exc:  # an odd callable: it is simply not vouched for
        log.debug("%s: the original %r is not vouched for: %s", definition.name, fn, exc)
        return None
    with _vouched_lock:
        _vouched[solution.name] = entry
    return solution


def vouched(solution: Solution) -> Callable[..., Any] | None:
    """The engine's function a live site of this process vouches for as exactly this record,
    or None (whatever its author says)."""
    entry = _vouched.get(solution.name)
    if entry is None or entry[0] != content_digest(solution):
        return None
    return entry[1]


def is_original(solution: Solution | None) -> bool:
    """Recorded as an engine's function (for reports and notes only: see `vouched`)."""
    return solution is not None and solution.author == ORIGINAL_AUTHOR


def untimeable_reason(solution: Solution) -> str | None:
    """Why an original cannot be timed, or None (timeable, or not an original)."""
    if is_original(solution) and (solution.description or "").startswith(UNTIMEABLE):
        return (solution.description or "")[len(UNTIMEABLE):]
    return None
