"""Attacks: laundering code nobody trusted into trusted code. A copied database's family
definition remembered by `fib catalogue install`; foreign solutions merged into a database
trusted by its folder; a link inside a trusted folder to a file outside it. Retune and
serving run in child processes; hostile code leaves a marker file when it runs. Each test
ends with its control: the user trusts the same thing, and the same path runs it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fib_runtime import families
from fib_runtime.store import layout
from tests import factories
from tests.trust.attack import child, fib
from tests.trust.foreign import foreign_db, solution_path, write_json, write_lines

RETUNE = ("--devices", "cpu", "--warmup", "1", "--iters", "2", "--no-progress")
FAMILY_REFERENCE = """import pathlib
import torch

EPS = 1e-6


def run(hidden_states, weight):
    pathlib.Path({marker!r}).write_text("reference ran")
    x = hidden_states.float()
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * weight.float()
    return y.to(hidden_states.dtype)
"""
SERVE = """
import torch, fib_runtime as fib
from tests.trust.engine_site import DEF, engine_norm
with fib.enable_apply({root!r}):
    out = engine_norm(torch.ones(4, 8), torch.ones(8))
    print("answer", float(out[0, 0]) - 1.0, "stats", fib.stats().get(DEF))
"""


def serve(root: Path) -> str:
    """Serve one call from `root` in a child process: `answer 0.0` is the engine's function,
    `answer 100.0` the hostile solution."""
    result = child(SERVE.format(root=str(root)))
    assert result.returncode == 0, result.out
    return result.out


def test_catalogue_install_does_not_remember_a_copied_family_definition(
        tmp_path: Path) -> None:
    root, marker = tmp_path / "db", tmp_path / "reference.txt"
    definition = families.resolve("rmsnorm", {}, hidden_size=64, eps=1e-6).to_dict()
    assert "family:rmsnorm" in definition["tags"]
    definition["reference"] = FAMILY_REFERENCE.format(marker=str(marker))  # a tag is all
    write_json(layout.definition_file(root, "rmsnorm", definition["name"]), definition)
    write_lines(layout.workload_file(root, "rmsnorm", definition["name"]),
                [factories.workload(definition["name"], 4, hidden_states={"type": "random"},
                                    weight={"type": "random"})])
    assert fib("catalogue", "install", root).returncode == 0
    result = fib("retune", root, "--definition", definition["name"], *RETUNE)
    assert result.returncode == 0, result.out
    assert not marker.exists(), result.out
    assert f"definition {definition['name']} (its reference)" in result.out
    # Control: the user trusts the database; the same retune runs that reference.
    assert fib("trust", root).returncode == 0
    assert fib("retune", root, "--definition", definition["name"], *RETUNE).returncode == 0
    assert marker.read_text() == "reference ran"


def test_merge_into_a_trusted_folder_does_not_make_foreign_code_served(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    source = foreign_db(tmp_path / "foreign", marker)
    dest = tmp_path / "mine"
    dest.mkdir()
    assert fib("trust", dest, "--root").returncode == 0
    merged = fib("merge", source, dest)
    assert merged.returncode != 0 and "fast" in merged.out and "trust" in merged.out, \
        merged.out
    assert "answer 0.0" in serve(dest)
    assert not marker.exists()
    # Control: once the user trusts the source, the merge goes through and its code runs.
    assert fib("trust", source).returncode == 0
    assert fib("merge", source, dest).returncode == 0
    assert "answer 100.0" in serve(dest)
    assert marker.exists()


@pytest.mark.parametrize("link", ["file", "folder"])
def test_a_link_inside_a_trusted_folder_to_outside_is_not_read(tmp_path: Path,
                                                               link: str) -> None:
    marker = tmp_path / "ran.txt"
    outside = foreign_db(tmp_path / "foreign", marker)
    trusted = tmp_path / "mine"
    shutil.copytree(outside, trusted)
    hostile = solution_path(trusted, "fast")
    if link == "file":
        hostile.unlink()
        hostile.symlink_to(solution_path(outside, "fast"))
    else:
        shutil.rmtree(trusted / layout.SOLUTIONS)
        (trusted / layout.SOLUTIONS).symlink_to(outside / layout.SOLUTIONS)
    assert fib("trust", trusted, "--root").returncode == 0
    assert "answer 0.0" in serve(trusted)
    assert not marker.exists()
    validated = fib("validate", trusted)
    assert validated.returncode == 1 and "outside the database" in validated.out, \
        validated.out
    # Control: the same file copied into the trusted folder is served.
    hostile = solution_path(trusted, "fast")
    if link == "folder":
        (trusted / layout.SOLUTIONS).unlink()
    else:
        hostile.unlink()
    hostile.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(solution_path(outside, "fast"), hostile)
    assert "answer 100.0" in serve(trusted)
    assert marker.exists()
