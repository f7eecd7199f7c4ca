"""Catalogue part I (rmsnorm, gemm, activation): definition JSON, references, FIB_SOLUTIONS.

Everything here runs on CPU; the kernels themselves are checked in test_catalogue_i_solutions.
"""

import ast
import json
from pathlib import Path

import pytest
import torch

from fib_runtime.catalogue import declared_entries, entry_functions

REPO = Path(__file__).resolve().parents[2]
OP_TYPES = ("rmsnorm", "gemm", "activation")
DEF_PATHS = sorted(p for op in OP_TYPES for p in (REPO / "definitions" / op).glob("*.json"))
SOLUTION_PATHS = sorted(
    p for op in OP_TYPES for p in (REPO / "definitions" / op / "solutions").glob("*.py")
)
OFFICIAL = REPO.parent / "shared" / "flashinfer-trace" / "definitions"
DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
}
ALLOWED_IMPORTS = {"torch", "triton", "flashinfer", "functools", "math"}
# The one runtime module a solution may use: the fast Triton launcher.
ALLOWED_RUNTIME_MODULES = {"fib_runtime.triton_launch"}
# Every hidden size the official data has for the two norms (the catalogue must cover them).
RMSNORM_SIZES = (128, 512, 1536, 2048, 3072, 4096, 5120, 5376, 7168)
FUSED_SIZES = (2048, 3072, 4096, 5120, 5376, 7168)


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _reference(definition: dict):
    namespace: dict = {}
    exec(compile(definition["reference"], definition["name"], "exec"), namespace)
    return namespace["run"]


def _inputs(definition: dict, var: int, scale: float = 1.0) -> list[torch.Tensor]:
    """Random inputs with every var axis set to `var` (never all zeros)."""
    axes = {
        name: axis["value"] if axis["type"] == "const" else var
        for name, axis in definition["axes"].items()
    }
    gen = torch.Generator().manual_seed(var)
    return [
        (torch.randn([axes[a] for a in spec["shape"]], generator=gen) * scale).to(
            DTYPES[spec["dtype"]]
        )
        for spec in definition["inputs"].values()
    ]


DEFINITIONS = {p.stem: _load(p) for p in DEF_PATHS}


def test_catalogue_covers_the_brief():
    expected = {f"rmsnorm_h{h}" for h in RMSNORM_SIZES}
    expected |= {f"fused_add_rmsnorm_h{h}" for h in FUSED_SIZES}
    expected |= {"silu_and_mul_i14336", "gemm_n6144_k4096", "gemm_n4096_k4096"}
    expected |= {"gemm_n28672_k4096", "gemm_n4096_k14336"}
    assert set(DEFINITIONS) == expected


@pytest.mark.parametrize("path", DEF_PATHS, ids=lambda p: p.stem)
def test_definition_is_consistent(path: Path):
    d = _load(path)
    assert d["name"] == path.stem
    assert d["op_type"] == path.parent.name
    assert d["description"].strip() and d["tags"]
    for axis in d["axes"].values():
        assert axis["type"] in ("const", "var")
        assert (axis["type"] == "const") == isinstance(axis.get("value"), int)
    for spec in [*d["inputs"].values(), *d["outputs"].values()]:
        assert set(spec["shape"]) <= set(d["axes"])
        assert spec["dtype"] in DTYPES
    assert not set(d["inputs"]) & set(d["outputs"])
    consts = {n: a["value"] for n, a in d["axes"].items() if a["type"] == "const"}
    for constraint in d.get("constraints", []):
        assert eval(constraint, {}, consts), constraint
    body = ast.parse(d["reference"]).body
    functions = {n.name: n for n in body if isinstance(n, ast.FunctionDef)}
    assert [a.arg for a in functions["run"].args.args] == list(d["inputs"])


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
def test_reference_runs_on_cpu(name: str):
    d = DEFINITIONS[name]
    var = 3
    out = _reference(d)(*_inputs(d, var))
    outs = out if isinstance(out, tuple) else (out,)
    assert len(outs) == len(d["outputs"])
    for tensor, spec in zip(outs, d["outputs"].values(), strict=True):
        axes = {n: a.get("value", var) for n, a in d["axes"].items()}
        assert list(tensor.shape) == [axes[a] for a in spec["shape"]]
        assert tensor.dtype == DTYPES[spec["dtype"]]
        assert torch.isfinite(tensor.float()).all()


@pytest.mark.skipif(not OFFICIAL.is_dir(), reason="../shared/flashinfer-trace is absent")
@pytest.mark.parametrize("name", sorted(DEFINITIONS))
def test_matches_official_definition(name: str):
    found = list(OFFICIAL.glob(f"*/{name}.json"))
    if not found:
        pytest.skip(f"{name} is not in the official data")
    ours, official = DEFINITIONS[name], _load(found[0])
    assert ours["op_type"] == official["op_type"]

    def strip(axes: dict) -> dict:
        return {n: {k: v for k, v in a.items() if k != "description"} for n, a in axes.items()}

    assert strip(ours["axes"]) == strip(official["axes"])
    for kind in ("inputs", "outputs"):
        assert list(ours[kind]) == list(official[kind])
        for tensor, spec in ours[kind].items():
            assert spec["shape"] == official[kind][tensor]["shape"]
            assert spec["dtype"] == official[kind][tensor]["dtype"]
    # Same semantics (eps included): tiny inputs make eps dominate the mean square.
    for scale in (1.0, 1e-3):
        inputs = _inputs(ours, 5, scale)
        torch.testing.assert_close(_reference(ours)(*inputs), _reference(official)(*inputs))


@pytest.mark.parametrize("path", SOLUTION_PATHS, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_fib_solutions_literal(path: Path):
    tree = ast.parse(path.read_text())
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    entries = declared_entries(path)
    assert entries
    for entry in entries:
        assert entry["language"] in ("python", "triton")
        assert entry["destination_passing_style"] is False
        assert set(entry["target_hardware"]) <= {"any", "cpu", "nvidia"}
        assert entry["description"].strip() and entry["variant"].isidentifier()
        for name, function_name in entry_functions(entry, DEFINITIONS).items():
            params = [a.arg for a in functions[function_name].args.args]
            assert DEFINITIONS[name]["op_type"] == path.parent.parent.name
            assert params == list(DEFINITIONS[name]["inputs"]), (name, function_name)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0
            assert (node.module.split(".")[0] in ALLOWED_IMPORTS
                    or node.module in ALLOWED_RUNTIME_MODULES), node.module
        elif isinstance(node, ast.Import):
            assert {a.name.split(".")[0] for a in node.names} <= ALLOWED_IMPORTS


def test_solution_names_are_unique_and_every_definition_runs_on_cpu():
    names: list[str] = []
    cpu_capable: set[str] = set()
    for path in SOLUTION_PATHS:
        for entry in declared_entries(path):
            served = entry_functions(entry, DEFINITIONS)
            names += [f"{d}__{entry['variant']}" for d in served]
            if {"any", "cpu"} & set(entry["target_hardware"]):
                cpu_capable.update(served)
    assert len(names) == len(set(names))
    assert cpu_capable == set(DEFINITIONS)
