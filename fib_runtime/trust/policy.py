"""Whose code may run: the decision for the solutions and definition references of a database.

A solution runs when, in this order, `FIB_TRUST=all` is set, its content digest is trusted,
its author is trusted, its database folder is trusted, or it is exactly a solution the
installed catalogue ships (same digest as `fib_runtime.catalogue` produces, whatever author
it claims). A definition's reference (run by retune only) runs when `FIB_TRUST=all`, its
digest is trusted, its folder is trusted, or it equals a shipped catalogue definition.
The decision is made by the process that plans the work (dispatch, retune's driver); worker
processes only receive what was decided.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path

from fib_runtime.errors import BuildError
from fib_runtime.schema import Definition, Solution
from fib_runtime.schema.provenance import solution_digest
from fib_runtime.trust.memory import definition_digest
from fib_runtime.trust.store import TrustStore, load_store

TRUST_ENV = "FIB_TRUST"  # "all": trust everything (e.g. a container built from a known image)


class Untrusted(BuildError):
    """A solution was not run: nobody trusted it (see `fib trust`)."""


def root_key(root: Path) -> str:
    """How a database folder is named in the store: its resolved absolute path."""
    return str(Path(root).expanduser().resolve())


class Trust:
    """The trust decisions for one database, from one reading of the store."""

    def __init__(self, root: Path | None, definitions: Mapping[str, Definition] | None = None,
                 store: TrustStore | None = None) -> None:
        self.store = store if store is not None else load_store()
        self.everything = os.environ.get(TRUST_ENV, "").strip().lower() == "all"
        self.root_trusted = root is not None and self.store.has("databases", root_key(root))
        self._definitions = definitions or {}

    def solution(self, solution: Solution) -> str | None:
        """Why `solution` may run, or None when it may not."""
        if self.everything:
            return f"{TRUST_ENV}=all"
        if self.store.has("solutions", solution_digest(solution)):
            return "its content is trusted"
        if self.store.has("authors", solution.author):
            return f"author '{solution.author}' is trusted"
        if self.root_trusted:
            return "its database is trusted"
        if _is_shipped(solution, self._definitions):
            return "shipped with fib-runtime"
        return None

    def definition(self, definition: Definition) -> str | None:
        """Why `definition`'s reference may run, or None when it may not."""
        if self.everything:
            return f"{TRUST_ENV}=all"
        if self.store.has("definitions", definition_digest(definition)):
            return "its content is trusted"
        if self.root_trusted:
            return "its database is trusted"
        if _shipped_definitions().get(definition.name) == definition:
            return "shipped with fib-runtime"
        return None


# -- the shipped catalogue ----------------------------------------------------------------


@functools.cache
def _shipped_files() -> dict[str, str]:
    """File name -> text of every shipped catalogue solution file."""
    from fib_runtime.catalogue import catalogue_root

    return {p.name: p.read_text() for p in sorted(catalogue_root().glob("*/solutions/*.py"))}


@functools.cache
def _shipped_definitions() -> dict[str, Definition]:
    from fib_runtime.catalogue import load_catalogue

    return load_catalogue().definitions


_SHIPPED_DIGESTS: dict[tuple[str, ...], frozenset[str]] = {}


def _shipped_digests(generated: tuple[Definition, ...]) -> frozenset[str]:
    """Digests of the catalogue's solutions over its definitions and these generated ones."""
    from fib_runtime.catalogue import load_catalogue

    key = tuple(definition_digest(d) for d in generated)
    found = _SHIPPED_DIGESTS.get(key)
    if found is None:
        found = frozenset(solution_digest(s)
                          for s in load_catalogue(generated=generated).solutions)
        _SHIPPED_DIGESTS[key] = found
    return found


def _is_shipped(solution: Solution, definitions: Mapping[str, Definition]) -> bool:
    """Exactly a solution the catalogue produces (its single source is a shipped file)."""
    if len(solution.sources) != 1:
        return False
    source = solution.sources[0]
    if _shipped_files().get(source.path) != source.content:
        return False  # the cheap test first: most untrusted code is not even a shipped file
    from fib_runtime.families import family_of

    generated = tuple(d for _, d in sorted(definitions.items()) if family_of(d) is not None)
    return solution_digest(solution) in _shipped_digests(generated)
