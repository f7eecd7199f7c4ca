"""How a definition's outputs are judged: its check kind.

- `tolerance` (the default): the outputs against the reference's, within per-dtype
  tolerances (`fib_runtime.measure.compare`).
- `distribution`: a random output (sampling): each call's ids inside the support, and, where
  the solution can be called again, frequencies over many draws within a statistical bound
  (`fib_runtime.measure.sampling_check`). The reference's own draw is never compared.

A definition names its kind with a tag `check:<kind>`; without one, its op type's default
applies (`DEFAULT_BY_OP_TYPE`: the official sampling definitions carry no such tag).
Retune's worker calls `check_call`, shadow validation `check_result` (one call, no redraws).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fib_runtime.errors import SchemaError
from fib_runtime.measure.compare import Check, Tolerance, check_outputs
from fib_runtime.schema import Definition, Status

TOLERANCE = "tolerance"
DISTRIBUTION = "distribution"
KINDS = (TOLERANCE, DISTRIBUTION)
DEFAULT_BY_OP_TYPE = {"sampling": DISTRIBUTION}
_TAG = "check:"


def check_kind(definition: Definition) -> str:
    """The definition's check kind: its `check:` tag, else its op type's default."""
    for tag in definition.tags or ():
        if tag.startswith(_TAG):
            kind = tag[len(_TAG):]
            if kind not in KINDS:
                raise SchemaError(f"definition {definition.name}: tag {tag!r} names no check "
                                  f"kind (known: {', '.join(KINDS)})")
            return kind
    return DEFAULT_BY_OP_TYPE.get(definition.op_type, TOLERANCE)


def check_result(definition: Definition, got: Any, expected: Sequence[Any],
                 args: Sequence[Any], tolerance: Tolerance | None = None) -> Check:
    """One call's outputs `got` (for the inputs `args`) judged by the definition's kind."""
    if check_kind(definition) == TOLERANCE:
        return check_outputs(definition, got, expected, tolerance)
    from fib_runtime.measure.sampling_check import support_check

    shape = check_outputs(definition, got, expected, (float("inf"), 0.0))  # shape and dtype
    if shape.status is not Status.PASSED:
        return shape
    return support_check(definition, got, args)


def check_call(definition: Definition, call: Callable[..., Any], args: Sequence[Any],
               got: Any, expected: Sequence[Any], tolerance: Tolerance | None = None) -> Check:
    """`check_result`, then for a random output the frequencies of `call` over many draws."""
    first = check_result(definition, got, expected, args, tolerance)
    if first.status is not Status.PASSED or check_kind(definition) == TOLERANCE:
        return first
    from fib_runtime.measure.sampling_check import frequency_check

    return frequency_check(definition, call, args)
