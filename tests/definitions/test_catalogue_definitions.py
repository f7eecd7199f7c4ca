"""Every catalogue definition: JSON, reference, FIB_SOLUTIONS declarations, official data.

Definitions and solution files are discovered from the catalogue (catalogue_cases); nothing
here names an op type. Everything runs on CPU; kernels are checked in test_catalogue_solutions.
"""

import ast
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from catalogue_cases import (
    CPU_INPUT_BYTES,
    DEFINITION_PATHS,
    DEFINITIONS,
    OFFICIAL_NAMES,
    ROOT,
    SOLUTION_PATHS,
    example_axes,
    example_inputs,
    input_bytes,
    reference,
)

from fib_runtime.catalogue import declared_entries, entry_functions
from fib_runtime.hardware import arch_of_key, hardware_key
from fib_runtime.tensors import torch_dtype

OFFICIAL = ROOT.parents[1] / "shared" / "flashinfer-trace" / "definitions"
if not OFFICIAL.is_dir():  # an installed package: the checkout's ../shared
    OFFICIAL = Path(__file__).resolve().parents[3] / "shared" / "flashinfer-trace" / "definitions"
ALLOWED_IMPORTS = {"torch", "triton", "flashinfer", "functools", "math", "os"}
# The one runtime module a solution may use: the fast Triton launcher.
ALLOWED_RUNTIME_MODULES = {"fib_runtime.triton_launch"}
# Every hidden size the official data has for the two norms (the catalogue must cover them).
RMSNORM_SIZES = (128, 512, 1536, 2048, 3072, 4096, 5120, 5376, 7168)
FUSED_SIZES = (2048, 3072, 4096, 5120, 5376, 7168)
RAW = {p.stem: json.loads(p.read_text()) for p in DEFINITION_PATHS}


def test_catalogue_covers_the_brief():
    expected = {f"rmsnorm_h{h}" for h in RMSNORM_SIZES}
    expected |= {f"fused_add_rmsnorm_h{h}" for h in FUSED_SIZES}
    expected |= {"silu_and_mul_i14336", "gemm_n6144_k4096", "gemm_n4096_k4096"}
    expected |= {"gemm_n28672_k4096", "gemm_n4096_k14336"}
    expected |= {"gqa_paged_decode_h32_kv8_d128_ps1", "gqa_paged_decode_h32_kv4_d128_ps1"}
    assert expected <= set(DEFINITIONS)


@pytest.mark.parametrize("path", DEFINITION_PATHS, ids=lambda p: p.stem)
def test_definition_is_consistent(path: Path):
    d = RAW[path.stem]
    assert d["name"] == path.stem
    assert d["op_type"] == path.parent.name
    assert d["description"].strip() and d["tags"]
    for axis in d["axes"].values():
        assert axis["type"] in ("const", "var")
        assert (axis["type"] == "const") == isinstance(axis.get("value"), int)
    for spec in [*d["inputs"].values(), *d["outputs"].values()]:
        assert set(spec["shape"] or ()) <= set(d["axes"])
    assert not set(d["inputs"]) & set(d["outputs"])
    consts = {n: a["value"] for n, a in d["axes"].items() if a["type"] == "const"}
    for constraint in d.get("constraints", []):
        names = {n.id for n in ast.walk(ast.parse(constraint)) if isinstance(n, ast.Name)}
        if names <= set(consts):
            assert eval(constraint, {}, consts), constraint
    body = ast.parse(d["reference"]).body
    functions = {n.name: n for n in body if isinstance(n, ast.FunctionDef)}
    assert [a.arg for a in functions["run"].args.args] == list(d["inputs"])


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
def test_reference_runs_on_cpu(name: str):
    definition = DEFINITIONS[name]
    if input_bytes(definition) > CPU_INPUT_BYTES:
        pytest.skip(f"inputs of {input_bytes(definition) >> 20} MiB: the GPU tests run it")
    out = reference(name)(*example_inputs(definition, 3).args)
    outs = out if isinstance(out, tuple) else (out,)
    assert len(outs) == len(definition.outputs)
    axes = {**definition.const_axes, **example_axes(definition, 3)}
    for tensor, spec in zip(outs, definition.outputs.values(), strict=True):
        assert list(tensor.shape) == [axes[a] for a in spec.shape or ()]
        assert tensor.dtype == torch_dtype(spec.dtype)
        assert torch.isfinite(tensor.float()).all()


@pytest.mark.skipif(not OFFICIAL.is_dir(), reason="../shared/flashinfer-trace is absent")
@pytest.mark.parametrize("name", OFFICIAL_NAMES)
def test_matches_official_definition(name: str):
    found = list(OFFICIAL.glob(f"*/{name}.json"))
    if not found:
        pytest.skip(f"{name} is not in the official data")
    ours, official = RAW[name], json.loads(found[0].read_text())
    assert ours["op_type"] == official["op_type"]

    def strip(fields: dict) -> dict:
        return {n: {k: v for k, v in a.items() if k != "description"} for n, a in fields.items()}

    assert strip(ours["axes"]) == strip(official["axes"])
    for kind in ("inputs", "outputs"):
        assert list(strip(ours[kind]).items()) == list(strip(official[kind]).items())
    assert ours.get("constraints", []) == official.get("constraints", [])
    if input_bytes(DEFINITIONS[name]) > CPU_INPUT_BYTES:  # the GPU tests compare these
        return
    # Same semantics (eps included): tiny inputs make eps dominate the mean square.
    namespace: dict = {}
    exec(compile(official["reference"], name, "exec"), namespace)
    for scale in (1.0, 1e-3):
        inputs = example_inputs(DEFINITIONS[name], 5, scale=scale).args
        torch.manual_seed(0)  # a sampler's draws agree from the same generator state
        ours_out = reference(name)(*inputs)
        torch.manual_seed(0)
        torch.testing.assert_close(ours_out, namespace["run"](*inputs))


@pytest.mark.parametrize("path", SOLUTION_PATHS, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_fib_solutions_literal(path: Path):
    tree = ast.parse(path.read_text())
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    entries = declared_entries(path)
    assert entries
    for entry in entries:
        assert entry["language"] in ("python", "triton")
        # a kind of device, or GPU models whose architecture is known (FP8 kernels: sm90)
        assert all(t in ("any", "cpu", "nvidia") or arch_of_key(hardware_key(t))
                   for t in entry["target_hardware"]), entry["target_hardware"]
        assert entry["description"].strip() and entry["variant"].isidentifier()
        dps = entry.get("destination_passing_style", False)
        for name, function_name in entry_functions(entry, DEFINITIONS).items():
            params = [a.arg for a in functions[function_name].args.args]
            # A file serves its folder's op type, or one of the same attention kind (the
            # prefill kernels under gqa_paged/ serve gqa_ragged: ragged keys are pages of one)
            assert DEFINITIONS[name].op_type.split("_")[0] == \
                path.parent.parent.name.split("_")[0]
            expected = list(DEFINITIONS[name].inputs)
            if dps:
                expected += list(DEFINITIONS[name].outputs)
            assert params == expected, (name, function_name)
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
