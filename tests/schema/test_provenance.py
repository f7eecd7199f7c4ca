"""Timing regime and solution digest travel in environment.libs and survive a round trip."""

from __future__ import annotations

import dataclasses

from fib_runtime.schema import Environment, Evaluation, Solution, Status
from fib_runtime.schema.provenance import (
    DIGEST_KEY,
    TIMING_KEY,
    content_digest,
    digest_of,
    stamped,
    timing_of,
)

SOLUTION = {
    "name": "s", "definition": "d", "author": "a",
    "spec": {"language": "python", "target_hardware": ["cpu"], "entry_point": "main.py::run"},
    "sources": [{"path": "main.py", "content": "def run(x):\n    return x\n"}],
}


def _failed(environment: Environment) -> Evaluation:
    return Evaluation(Status.RUNTIME_ERROR, environment, "2026-01-01T00:00:00")


def test_unstamped_trace_is_device_time_of_unknown_content() -> None:
    evaluation = _failed(Environment("NVIDIA H200", {"torch": "2.11"}))
    assert timing_of(evaluation) == "device"
    assert digest_of(evaluation) is None


def test_stamp_round_trips_through_json() -> None:
    env = stamped(Environment("NVIDIA H200", {"torch": "2.11"}), timing="eager", digest="sha256:ab")
    again = Evaluation.from_dict(_failed(env).to_dict())
    assert timing_of(again) == "eager" and digest_of(again) == "sha256:ab"
    assert again.environment.libs["torch"] == "2.11"
    assert set(again.environment.libs) == {"torch", TIMING_KEY, DIGEST_KEY}


def test_digest_changes_with_source_and_spec_but_not_order_or_name() -> None:
    base = Solution.from_dict(SOLUTION)
    renamed = dataclasses.replace(base, name="other", description="x")
    assert content_digest(renamed) == content_digest(base)
    edited = Solution.from_dict({**SOLUTION, "sources": [
        {"path": "main.py", "content": "def run(x):\n    return x + 1\n"}]})
    assert content_digest(edited) != content_digest(base)
    respec = Solution.from_dict({**SOLUTION, "spec": {**SOLUTION["spec"],
                                                      "destination_passing_style": False}})
    assert content_digest(respec) != content_digest(base)
    two = [{"path": "main.py", "content": "from helper import f as run\n"},
           {"path": "helper.py", "content": "def f(x):\n    return x\n"}]
    a = Solution.from_dict({**SOLUTION, "sources": two})
    b = Solution.from_dict({**SOLUTION, "sources": two[::-1]})
    assert content_digest(a) == content_digest(b)
