"""The built-in catalogue: how solution files declare what they serve, and installing it."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from fib_runtime.catalogue import install, load_catalogue
from fib_runtime.errors import SchemaError
from fib_runtime.store import TraceDB
from tests.factories import definition

SOLUTION = '''
FIB_SOLUTIONS = [
    {{
        "variant": "plain",
        {serves}
        "language": "python",
        "target_hardware": ["any"],
        "description": "test",
    }},
]


def eps_a(x, weight):
    return x


def eps_b(x, weight):
    return x
'''


def make_catalogue(root: Path, serves: str) -> Path:
    for name in ("norm_h8", "norm_h16", "norm_h32"):
        path = root / "rmsnorm" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(definition(name=name)))
    solutions = root / "rmsnorm" / "solutions"
    solutions.mkdir()
    (solutions / "plain.py").write_text(SOLUTION.format(serves=serves))
    return root


def test_first_matching_pattern_wins(tmp_path: Path) -> None:
    root = make_catalogue(tmp_path, '"entry_points": {"norm_h16": "eps_a", "norm_h*": "eps_b"},')
    entry_points = {s.name: s.spec.entry_point for s in load_catalogue(root).solutions}
    assert entry_points == {"norm_h16__plain": "plain.py::eps_a",
                            "norm_h32__plain": "plain.py::eps_b",
                            "norm_h8__plain": "plain.py::eps_b"}


def test_definitions_list_with_one_entry_point(tmp_path: Path) -> None:
    root = make_catalogue(tmp_path, '"definitions": ["norm_h8", "norm_h3*"], '
                                    '"entry_point": "eps_a",')
    solutions = load_catalogue(root).solutions
    assert sorted(s.definition for s in solutions) == ["norm_h32", "norm_h8"]
    assert {s.sources[0].path for s in solutions} == {"plain.py"}


@pytest.mark.parametrize(("serves", "needle"), [
    ('"entry_points": {"norm_h*": "eps_b", "norm_h16": "eps_a"},', "no definition left"),
    ('"definitions": ["gemm_*"], "entry_point": "eps_a",', "no definition matches"),
    ('"definitions": ["norm_h8"], "entry_point": "eps_a", "speed": 1,', "unknown keys"),
    ('"definitions": ["norm_h8"], "entry_point": "eps_a", "dtypes": ["float64"],',
     "dtypes must be a list"),
])
def test_bad_declarations_name_the_file(tmp_path: Path, serves: str, needle: str) -> None:
    root = make_catalogue(tmp_path, serves)
    with pytest.raises(SchemaError, match=needle) as info:
        load_catalogue(root)
    assert "plain.py" in str(info.value)


def test_dtype_variants_are_served_by_the_entries_that_list_their_dtype(tmp_path: Path) -> None:
    root = make_catalogue(tmp_path, '"entry_points": {"norm_h16": "eps_a", "norm_h*": "eps_b"}, '
                                    '"dtypes": ["float32", "float16"],')
    catalogue = load_catalogue(root)
    # the toy definitions are float32: the catalogue adds their bfloat16 and float16 variants
    variant = catalogue.definitions["norm_h8_fp16"]
    assert catalogue.definitions["norm_h8_bf16"].outputs["y"].dtype == "bfloat16"
    assert {s.dtype for s in [*variant.inputs.values(), *variant.outputs.values()]} == {
        "float16"}
    assert variant.reference == catalogue.definitions["norm_h8"].reference
    entry_points = {s.name: s.spec.entry_point for s in catalogue.solutions}
    # patterns match a variant's name without its dtype suffix; bfloat16 is not listed
    assert entry_points == {f"norm_h{h}{d}__plain": f"plain.py::{'eps_a' if h == 16 else 'eps_b'}"
                            for h in (8, 16, 32) for d in ("", "_fp16")}


def test_a_computed_declaration_is_refused(tmp_path: Path) -> None:
    root = make_catalogue(tmp_path, '"definitions": [n for n in ["norm_h8"]], '
                                    '"entry_point": "eps_a",')
    with pytest.raises(SchemaError, match="not a literal"):
        load_catalogue(root)


def test_install_writes_the_built_in_catalogue_once(tmp_path: Path) -> None:
    db = TraceDB.open(tmp_path, create=True)
    catalogue = load_catalogue()
    assert install(db) == (len(catalogue.definitions), len(catalogue.solutions))
    assert install(TraceDB.open(tmp_path)) == (0, 0)
    reloaded = TraceDB.open(tmp_path)
    assert reloaded.load_errors == []
    assert set(reloaded.solutions) == {s.name for s in catalogue.solutions}
