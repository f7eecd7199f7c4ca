"""Whose code may run: the decision for the solutions and definition references of a database.

A solution runs when, in this order, `FIB_TRUST=all` is set, its content digest is trusted,
its author is trusted, its database folder is trusted, or it is exactly a solution the
installed catalogue ships (same digest as `fib_runtime.catalogue` produces, whatever author
it claims). A definition's reference (run by retune only) runs when `FIB_TRUST=all`, its
digest is trusted, its folder is trusted, or it equals a shipped catalogue definition or
exactly what a family template writes for its constants.
Verdicts are kept per kind and content (a solution's digest and author, a definition's
digest), never per name: a record that changes is judged again, and no name can stand for
another record. The decision is made by the process that plans the work (dispatch, retune's
driver); worker processes only receive what was decided.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from fib_runtime.errors import BuildError, StoreError
from fib_runtime.schema import Definition, Solution
from fib_runtime.schema.provenance import content_digest
from fib_runtime.store import TraceDB
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
        self._verdicts: dict[tuple[str, ...], str | None] = {}

    def solution(self, solution: Solution) -> str | None:
        """Why `solution` may run, or None when it may not (kept per digest and author)."""
        key = ("solution", content_digest(solution), solution.author)
        if key not in self._verdicts:
            self._verdicts[key] = self._solution(solution, key[1])
        return self._verdicts[key]

    def definition(self, definition: Definition) -> str | None:
        """Why `definition`'s reference may run, or None when it may not (kept per digest)."""
        key = ("definition", definition_digest(definition))
        if key not in self._verdicts:
            self._verdicts[key] = self._definition(definition, key[1])
        return self._verdicts[key]

    def _solution(self, solution: Solution, digest: str) -> str | None:
        if self.everything:
            return f"{TRUST_ENV}=all"
        if self.store.has("solutions", digest):
            return "its content is trusted"
        if self.store.has("authors", solution.author):
            return f"author '{solution.author}' is trusted"
        if self.root_trusted:
            return "its database is trusted"
        if _is_shipped(solution, self._definitions):
            return "shipped with fib-runtime"
        return None

    def _definition(self, definition: Definition, digest: str) -> str | None:
        if self.everything:
            return f"{TRUST_ENV}=all"
        if self.store.has("definitions", digest):
            return "its content is trusted"
        if self.root_trusted:
            return "its database is trusted"
        if _shipped_definitions().get(definition.name) == definition:
            return "shipped with fib-runtime"
        if _is_template_output(definition):
            return "written by a fib-runtime family template"
        return None


class UntrustedMerge(StoreError):
    """A merge that would make code nobody trusted run: nothing was written."""


def refuse_laundering(dest: TraceDB, sources: Sequence[TraceDB]) -> None:
    """Into a destination trusted by its folder, only records trusted where they come from;
    UntrustedMerge otherwise. Registered as the store's copy check (`store.hooks`), so `fib
    merge` asks it before anything is written."""
    if not Trust(dest.root).root_trusted:
        return
    untrusted = []
    for src in sources:
        trust = Trust(src.root, src.definitions)
        untrusted += [f"solution {n} of {src.root}" for n, s in sorted(src.solutions.items())
                      if n not in dest.solutions and trust.solution(s) is None]
        untrusted += [f"definition {n} of {src.root}"
                      for n, d in sorted(src.definitions.items())
                      if n not in dest.definitions and trust.definition(d) is None]
    if untrusted:
        shown = "; ".join(untrusted[:5]) + (f"; and {len(untrusted) - 5} more"
                                            if len(untrusted) > 5 else "")
        raise UntrustedMerge(f"{dest.root} is trusted as a folder: merging would let code "
                             f"nobody trusted run there ({shown}); trust it first (`fib "
                             "trust SRC`, `--solution`), or merge into a folder that is not "
                             "trusted as such")


# -- the shipped catalogue ----------------------------------------------------------------


@functools.cache
def _shipped_sources() -> frozenset[tuple[str, str]]:
    """(file name, text) of every shipped catalogue solution file: by content, as several
    folders hold files of one name (`torch_native.py`, ...)."""
    from fib_runtime.catalogue import catalogue_root

    return frozenset((p.name, p.read_text())
                     for p in sorted(catalogue_root().glob("*/solutions/*.py")))


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
        found = frozenset(content_digest(s)
                          for s in load_catalogue(generated=generated).solutions)
        _SHIPPED_DIGESTS[key] = found
    return found


def _is_shipped(solution: Solution, definitions: Mapping[str, Definition]) -> bool:
    """Exactly a solution the catalogue produces (its single source is a shipped file)."""
    if len(solution.sources) != 1:
        return False
    source = solution.sources[0]
    if (source.path, source.content) not in _shipped_sources():
        return False  # the cheap test first: most untrusted code is not even a shipped file
    from fib_runtime.families import family_of

    generated = tuple(d for _, d in sorted(definitions.items()) if family_of(d) is not None)
    return content_digest(solution) in _shipped_digests(generated)


def _is_template_output(definition: Definition) -> bool:
    """Exactly what its family's template writes for the constants it states (its const
    axes, its eps, its first input's dtype): then its reference is the template's code."""
    from fib_runtime.families import FAMILIES, dtype_of, eps_of, family_of, split_dtype, with_dtype

    family = FAMILIES.get(family_of(definition) or "")
    if family is None or not definition.inputs:
        return False
    consts = {name.lower(): getattr(axis, "value", None)
              for name, axis in definition.axes.items()}
    try:
        constants = {c: eps_of(definition) if c == "eps" else consts[c]
                     for c in family.constants}
        official = Definition.from_dict(family.build(split_dtype(definition.name)[0],
                                                     **constants))
        made = with_dtype(official, dtype_of(definition))
    except Exception:  # constants it does not state: not a template's output
        return False
    return made == definition
