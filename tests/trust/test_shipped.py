"""Every solution the catalogue ships, copied into a database by hand (never through our
API, so the trust store knows nothing of it), is recognised as shipped: those over the
shipped definitions and those over a generated definition of each family. Several folders
hold files of one name (`torch_native.py`, `cpu_chunked.py`, ...): the check is by content."""

from __future__ import annotations

from pathlib import Path

from fib_runtime import families
from fib_runtime.catalogue import load_catalogue
from fib_runtime.store import TraceDB, layout
from fib_runtime.trust import Trust
from tests.trust.foreign import write_json


def _generated() -> list:
    """One definition of each family in each dtype, for constants the catalogue does not
    ship."""
    return [families.resolve(name, {}, dtype, **{c: 1e-6 if c == "eps" else 96
                                                 for c in family.constants})
            for name, family in families.FAMILIES.items() for dtype in families.DTYPE_SUFFIXES]


def test_every_shipped_solution_copied_by_hand_is_recognised(tmp_path: Path) -> None:
    catalogue = load_catalogue(generated=_generated())
    names = {s.definition for s in catalogue.solutions}
    assert names >= {d.name for d in _generated()}  # every family is served by something
    for definition in catalogue.definitions.values():
        write_json(layout.definition_file(tmp_path, definition.op_type, definition.name),
                   definition.to_dict())
    for solution in catalogue.solutions:
        op_type = catalogue.definitions[solution.definition].op_type
        write_json(layout.solution_file(tmp_path, solution.author, op_type,
                                        solution.definition, solution.name),
                   solution.to_dict())
    db = TraceDB.open(tmp_path)
    assert not db.load_errors and len(db.solutions) == len(catalogue.solutions)
    trust = Trust(tmp_path, db.definitions)
    refused = sorted(n for n, s in db.solutions.items() if trust.solution(s) is None)
    assert refused == []
    refused = sorted(n for n, d in db.definitions.items() if trust.definition(d) is None)
    assert refused == []
