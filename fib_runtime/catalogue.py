"""The built-in op catalogue: definitions/<op_type>/*.json and solutions/*.py, as package data.

Each solution file declares a module-level literal `FIB_SOLUTIONS` (read with the ast module,
so no import is needed) listing the definitions it serves; `install` writes them into a
database as FlashInfer Trace Solutions whose single source is the file itself. An entry that
declares `"families": [...]` also serves the definitions generated from those family
templates (`fib_runtime.families`) that its patterns match.

The catalogue also holds every shipped definition of `families.VARIED_OP_TYPES` in the
other float dtypes (`rmsnorm_h4096_fp16`, `gemm_n4096_k4096_bf16`; see
`fib_runtime.families`). An entry serves a name with a dtype suffix only when it lists that
dtype in `"dtypes": [...]` (the dtypes its functions compute correctly); its patterns match
the name without the suffix.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.resources
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from fib_runtime.errors import SchemaError
from fib_runtime.families import DTYPE_SUFFIXES, dtype_variants, family_of, split_dtype
from fib_runtime.schema import BuildSpec, Definition, Solution, SourceFile
from fib_runtime.store import TraceDB, announce_own_writes

AUTHOR = "fib-runtime"
_ENTRY_KEYS = frozenset({
    "variant", "definitions", "entry_point", "entry_points", "language",
    "destination_passing_style", "target_hardware", "dependencies", "description", "families",
    "dtypes",
})


@dataclass(frozen=True)
class Catalogue:
    definitions: dict[str, Definition]
    solutions: list[Solution]


def catalogue_root() -> Path:
    """The folder holding the built-in catalogue: the installed package data, or the
    checkout's `definitions/` when the package is used from source (PYTHONPATH)."""
    try:
        return Path(str(importlib.resources.files("fib_runtime.definitions")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[1] / "definitions"


def load_catalogue(root: Path | None = None,
                   generated: Iterable[Definition] = ()) -> Catalogue:
    """Read every built-in definition, add its dtype variants, and expand every solution
    file's entries over those and the `generated` family definitions (which are included)."""
    root = root or catalogue_root()
    definitions: dict[str, Definition] = {}
    for path in sorted(root.glob("*/*.json")):
        try:
            definition = Definition.from_dict(orjson.loads(path.read_bytes()))
        except SchemaError as exc:
            raise exc.located(str(path)) from None
        definitions[definition.name] = definition
    definitions.update({v.name: v for d in list(definitions.values()) for v in dtype_variants(d)})
    extra = {d.name: d for d in generated if d.name not in definitions}
    solutions = []
    for path in sorted(root.glob("*/solutions/*.py")):
        solutions.extend(solutions_of_file(path, definitions, extra))
    return Catalogue({**definitions, **extra}, solutions)


def solutions_of_file(path: Path, definitions: dict[str, Definition],
                      generated: dict[str, Definition] | None = None) -> list[Solution]:
    """The Solutions declared by one file's FIB_SOLUTIONS literal."""
    text = path.read_text()
    solutions = []
    for i, entry in enumerate(declared_entries(path)):
        field = f"FIB_SOLUTIONS[{i}]"
        unknown = set(entry) - _ENTRY_KEYS
        if unknown:
            raise SchemaError(f"unknown keys {sorted(unknown)}", file=str(path), field=field)
        families = set(entry.get("families", ()))
        names = [*definitions, *(n for n, d in (generated or {}).items()
                                 if family_of(d) in families)]
        for name, function in entry_functions(entry, names, path, field).items():
            spec = BuildSpec(
                language=entry["language"],
                target_hardware=tuple(entry.get("target_hardware", ())),
                entry_point=f"{path.name}::{function}",
                destination_passing_style=entry.get("destination_passing_style", False),
                dependencies=tuple(entry.get("dependencies", ())) or None,
            )
            solutions.append(Solution(
                name=f"{name}__{entry['variant']}", definition=name, author=AUTHOR, spec=spec,
                sources=(SourceFile(path.name, text),), description=entry.get("description"),
            ))
    return solutions


def entry_functions(entry: dict[str, Any], definitions: Iterable[str], path: Path | str = "",
                    field: str = "FIB_SOLUTIONS") -> dict[str, str]:
    """Definition name -> entry function of one FIB_SOLUTIONS entry.

    An entry names its definitions either as `"definitions": [...]` with one
    `"entry_point"`, or as `"entry_points": {pattern: function}`, where a definition takes
    the function of the first pattern it matches (so `rmsnorm_h4096` can come before the
    catch-all `rmsnorm_h*`; a `None` function means "not served", e.g. eps values the file
    has no function for). Patterns are exact names or shell patterns. A pattern that matches
    nothing is an error, except in an entry serving `families` (its patterns also anticipate
    generated names). Names with a dtype suffix take part only when the entry's `dtypes`
    lists their dtype, and patterns match them without the suffix.
    """
    dtypes = entry.get("dtypes", [])
    if not isinstance(dtypes, list) or not set(dtypes) <= set(DTYPE_SUFFIXES):
        raise SchemaError(f"dtypes must be a list of {', '.join(DTYPE_SUFFIXES)}",
                          file=str(path), field=f"{field}.dtypes")
    # each name this entry may serve (its dtype listed, or none in the name) -> the name
    # its patterns match: without the dtype suffix
    bases = {}
    for name in definitions:
        base, dtype = split_dtype(name)
        if dtype is None or dtype in dtypes:
            bases[name] = base
    lenient = bool(entry.get("families"))
    if "entry_points" in entry:
        chosen: dict[str, str | None] = {}
        for pattern, function in entry["entry_points"].items():
            matched = [n for n, b in bases.items()
                       if n not in chosen and fnmatch.fnmatchcase(b, pattern)]
            if not matched and not lenient and function is not None:
                raise SchemaError(f"no definition left for '{pattern}'", file=str(path),
                                  field=f"{field}.entry_points")
            chosen.update(dict.fromkeys(matched, function))
        return {n: f for n, f in chosen.items() if f is not None}
    matched = []
    for pattern in entry["definitions"]:
        found = [n for n, b in bases.items() if fnmatch.fnmatchcase(b, pattern)]
        if not found and not lenient:
            raise SchemaError(f"no definition matches '{pattern}'", file=str(path),
                              field=f"{field}.definitions")
        matched.extend(n for n in sorted(found) if n not in matched)
    return dict.fromkeys(matched, entry["entry_point"])


def declared_entries(path: Path) -> list[dict[str, Any]]:
    """A solution file's FIB_SOLUTIONS literal, read without importing the file."""
    text = path.read_text()
    for node in ast.parse(text, filename=str(path)).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "FIB_SOLUTIONS" for t in node.targets):
            try:
                return ast.literal_eval(node.value)
            except ValueError as exc:
                raise SchemaError(f"not a literal: {exc}", file=str(path),
                                  field="FIB_SOLUTIONS") from None
    raise SchemaError("no module-level FIB_SOLUTIONS list", file=str(path),
                      field="FIB_SOLUTIONS")


def install(db: TraceDB, catalogue: Catalogue | None = None) -> tuple[int, int]:
    """Write the catalogue into a database; idempotent. Returns (definitions, solutions) written.

    Records already present with identical content are left alone; changed ones are replaced.
    The default catalogue includes the family definitions the database already holds, so
    their solutions are (re)written too. Announced as our own (trust remembers them): the
    catalogue's solutions (shipped code) and the definitions written here, never a
    definition read from the database (a copied one may carry any reference behind a family
    tag).
    """
    catalogue = catalogue or load_catalogue(
        generated=[d for d in db.definitions.values() if family_of(d) is not None])
    written_defs: list[Definition] = []
    written_sols = 0
    for definition in catalogue.definitions.values():
        if db.definitions.get(definition.name) != definition:
            db.add_definition(definition, replace=True, own=False)
            written_defs.append(definition)
    for solution in catalogue.solutions:
        if db.solutions.get(solution.name) != solution:
            db.add_solution(solution, replace=True, own=False)
            written_sols += 1
    announce_own_writes(catalogue.solutions, written_defs)  # trust remembers all at once
    return len(written_defs), written_sols
