"""Attack: code nobody trusted runs in `fib retune` because a definition is named like the
gate's key for a trusted solution. Each retune runs in a child process; hostile code leaves
a marker file when it runs, the trusted code another (the control: the path is real)."""

from __future__ import annotations

from pathlib import Path

from fib_runtime.store import layout
from tests import factories
from tests.trust.attack import fib
from tests.trust.foreign import HOSTILE, HOSTILE_REFERENCE, write_json, write_lines

RETUNE = ("--devices", "cpu", "--warmup", "1", "--iters", "2", "--no-progress")
MARKS = """import pathlib

def run(x, weight):
    pathlib.Path({marker!r}).write_text("called")
    return x * weight
"""


def _definition(root: Path, name: str, reference: str | None = None) -> None:
    data = factories.definition(name)
    if reference is not None:
        data["reference"] = reference
    write_json(layout.definition_file(root, "rmsnorm", name), data)
    write_lines(layout.workload_file(root, "rmsnorm", name),
                [factories.workload(name, 4)])


def _solution(root: Path, definition: str, name: str, author: str, code: str) -> None:
    write_json(layout.solution_file(root, author, "rmsnorm", definition, name),
               {**factories.solution(name, definition, code=code), "author": author})


def test_a_definition_named_like_a_trusted_solution_key_runs_nothing(tmp_path: Path) -> None:
    """The user trusts one solution (`fib trust DB --solution good`); the attacker named its
    definition after the gate's key of his own solution in the same definition."""
    root, good, evil = tmp_path / "db", tmp_path / "good.txt", tmp_path / "evil.txt"
    definition = "solution evil (author mallory)"
    _definition(root, definition)
    _solution(root, definition, "good", "alice", MARKS.format(marker=str(good)))
    _solution(root, definition, "evil", "mallory", HOSTILE.format(marker=str(evil)))
    assert fib("trust", root, "--solution", "good").returncode == 0
    result = fib("retune", root, *RETUNE)
    assert good.exists(), result.out  # control: the trusted solution was run
    assert not evil.exists(), result.out
    assert "solution evil (author mallory)" in result.out  # said to be left out


def test_an_author_trust_does_not_trust_a_reference_named_like_its_key(
        tmp_path: Path) -> None:
    """The user trusts an author (`fib trust --author alice`), which never trusts a
    reference; the attacker named a definition with a hostile reference after the gate's
    key of one of alice's solutions, in a definition that sorts first."""
    root, reference = tmp_path / "db", tmp_path / "reference.txt"
    _definition(root, "a_norm_h8")
    _solution(root, "a_norm_h8", "tool", "alice", factories.RMSNORM_REFERENCE)
    hostile = "solution tool (author alice)"
    _definition(root, hostile, HOSTILE_REFERENCE.format(marker=str(reference)))
    _solution(root, hostile, "helper", "alice", factories.RMSNORM_REFERENCE)
    assert fib("trust", "--author", "alice").returncode == 0
    result = fib("retune", root, *RETUNE)
    assert result.returncode == 0, result.out
    assert not reference.exists(), result.out
    assert f"definition {hostile} (its reference)" in result.out
    # Control: once the user trusts the database, the same retune runs that reference.
    assert fib("trust", root).returncode == 0
    assert fib("retune", root, *RETUNE).returncode == 0
    assert reference.read_text() == "reference ran"

