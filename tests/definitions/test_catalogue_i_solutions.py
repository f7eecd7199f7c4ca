"""Catalogue part I solutions against the definitions' references.

CPU: torch and cpu solutions on every definition; Triton solutions in the interpreter
(TRITON_INTERPRET=1, set by conftest) on few rows of every definition and on small odd shapes;
flashinfer solutions import without flashinfer. GPU (marked): every solution that runs on an
NVIDIA GPU, on batch sizes from 1 to 16384.
"""

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

from fib_runtime.catalogue import declared_entries, entry_functions

REPO = Path(__file__).resolve().parents[2]
OP_TYPES = ("rmsnorm", "gemm", "activation")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
GPU_BATCHES = (1, 7, 33, 255, 1000, 4097, 16384)
# The interpreter runs big GEMMs slowly; these run there on small odd shapes instead.
INTERPRETER_SKIPS = {"gemm_n6144_k4096", "gemm_n28672_k4096", "gemm_n4096_k14336"}
CUDA = torch.cuda.is_available()


def _import(path: Path) -> ModuleType:
    """Import a solution file by path, as the database build does with its single source."""
    name = f"catalogue_i_{path.parent.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _solution_file(op_type: str, stem: str) -> Path:
    return REPO / "definitions" / op_type / "solutions" / f"{stem}.py"


DEFINITIONS = {
    p.stem: json.loads(p.read_text())
    for op in OP_TYPES
    for p in (REPO / "definitions" / op).glob("*.json")
}
# (definition, variant, language, target_hardware, file, entry point)
CASES = sorted(
    (name, e["variant"], e["language"], tuple(e["target_hardware"]), path, function)
    for op in OP_TYPES
    for path in (REPO / "definitions" / op / "solutions").glob("*.py")
    for e in declared_entries(path)
    for name, function in entry_functions(e, DEFINITIONS).items()
)


def _case_id(case: tuple) -> str:
    return f"{case[0]}__{case[1]}"


def _entry(path: Path, entry_point: str) -> Callable:
    return getattr(_import(path), entry_point)


def _reference(name: str) -> Callable:
    namespace: dict = {}
    exec(compile(DEFINITIONS[name]["reference"], name, "exec"), namespace)
    return namespace["run"]


def _inputs(name: str, var: int, device: str = "cpu", scale: float = 1.0) -> list[torch.Tensor]:
    """Fresh random inputs with every var axis set to `var`; GEMM operands scaled to O(1) sums."""
    d = DEFINITIONS[name]
    axes = {n: a["value"] if a["type"] == "const" else var for n, a in d["axes"].items()}
    if d["op_type"] == "gemm":
        scale = axes["K"] ** -0.25
    return [
        (torch.randn([axes[a] for a in s["shape"]], device=device) * scale).to(DTYPES[s["dtype"]])
        for s in d["inputs"].values()
    ]


def _check(fn: Callable, name: str, var: int, device: str = "cpu", scale: float = 1.0) -> None:
    """fn matches the reference, returns the output dtype, and leaves its inputs untouched."""
    inputs = _inputs(name, var, device, scale)
    before = [t.clone() for t in inputs]
    expected = _reference(name)(*inputs)
    got = fn(*inputs)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    tol = 1.6e-2 if got.dtype == torch.bfloat16 else 1e-2
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol)
    for old, new in zip(before, inputs, strict=True):
        assert torch.equal(old, new), "an input was written"


def _runs_on_cpu(case: tuple) -> bool:
    return case[2] == "triton" or bool({"any", "cpu"} & set(case[3]))


CPU_CASES = [
    c for c in CASES if _runs_on_cpu(c) and not (c[2] == "triton" and c[0] in INTERPRETER_SKIPS)
]
GPU_CASES = [c for c in CASES if {"any", "nvidia"} & set(c[3])]


@pytest.mark.parametrize("case", CPU_CASES, ids=_case_id)
def test_matches_reference_on_cpu(case: tuple):
    name, _, _, _, path, entry_point = case
    fn = _entry(path, entry_point)
    for rows in (1, 19):
        _check(fn, name, rows)
    if DEFINITIONS[name]["op_type"] == "rmsnorm":
        # Mean square ~1e-6: the result depends on eps, so a wrong eps entry point fails here.
        _check(fn, name, 5, scale=1e-3)


def _rmsnorm_fp32(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.float()
    return (x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps) * w.float()).bfloat16()


@pytest.mark.parametrize("stem", ["triton_rowwise", "triton_multirow"])
@pytest.mark.parametrize(("rows", "hidden"), [(1, 100), (7, 48), (67, 300), (130, 33)])
def test_triton_norms_take_sizes_from_tensors(stem: str, rows: int, hidden: int):
    module = _import(_solution_file("rmsnorm", stem))
    x, r = torch.randn(2, rows, hidden).bfloat16()
    w = torch.randn(hidden).bfloat16()
    torch.testing.assert_close(module.rmsnorm_eps1e6(x, w), _rmsnorm_fp32(x, w, 1e-6))
    fused = module.fused_add_rmsnorm_eps1e5(x, r, w)
    torch.testing.assert_close(fused, _rmsnorm_fp32(x.float() + r.float(), w, 1e-5))
    # Rows with a stride (a view into a wider buffer) are read in place.
    wide = torch.randn(rows, hidden + 16).bfloat16()
    view = wide[:, :hidden]
    torch.testing.assert_close(module.rmsnorm_eps1e6(view, w), _rmsnorm_fp32(view, w, 1e-6))
    # Strided columns are made contiguous first, for the input and the residual.
    columns = torch.randn(hidden, rows).bfloat16().t()
    torch.testing.assert_close(module.rmsnorm_eps1e6(columns, w), _rmsnorm_fp32(columns, w, 1e-6))
    fused = module.fused_add_rmsnorm_eps1e5(view, columns, w)
    torch.testing.assert_close(fused, _rmsnorm_fp32(view.float() + columns.float(), w, 1e-5))


@pytest.mark.parametrize("tokens", [1, 5])
@pytest.mark.parametrize("inter", [1000, 2048, 2500])
def test_triton_silu_and_mul_takes_sizes_from_tensors(tokens: int, inter: int):
    module = _import(_solution_file("activation", "triton_silu_mul"))
    x = (torch.randn(tokens, 2 * inter) * 3).bfloat16()
    gate, up = x[:, :inter].float(), x[:, inter:].float()
    torch.testing.assert_close(module.silu_and_mul(x), (gate * torch.sigmoid(gate) * up).bfloat16())
    columns = x.t().contiguous().t()  # strided columns: copied first
    torch.testing.assert_close(module.silu_and_mul(columns), module.silu_and_mul(x))


@pytest.mark.parametrize("entry_point", ["gemm_small_m", "gemm_large_m"])
@pytest.mark.parametrize(("m", "n", "k"), [(1, 40, 72), (17, 300, 256), (130, 260, 100)])
def test_triton_gemm_takes_sizes_from_tensors(entry_point: str, m: int, n: int, k: int):
    gemm = _entry(_solution_file("gemm", "triton_gemm"), entry_point)
    a = (torch.randn(m, k) * k**-0.25).half()
    b = (torch.randn(n, k) * k**-0.25).half()
    expected = (a.float() @ b.float().t()).half()
    torch.testing.assert_close(gemm(a, b), expected, rtol=1e-2, atol=1e-2)
    # A column-major A works through its strides.
    column_major = a.t().contiguous().t()
    torch.testing.assert_close(gemm(column_major, b), expected, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize(
    ("op_type", "stem"), [("rmsnorm", "flashinfer_norm"), ("activation", "flashinfer_act")]
)
def test_flashinfer_solutions_import_without_flashinfer(
    monkeypatch: pytest.MonkeyPatch, op_type: str, stem: str
):
    for mod in [m for m in sys.modules if m == "flashinfer" or m.startswith("flashinfer.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "flashinfer", None)  # makes `import flashinfer...` fail
    path = _solution_file(op_type, stem)
    module = _import(path)
    for entry in declared_entries(path):
        for name, function in entry_functions(entry, DEFINITIONS).items():
            with pytest.raises(ImportError):
                getattr(module, function)(*_inputs(name, 2))


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("case", GPU_CASES, ids=_case_id)
def test_matches_reference_on_gpu(case: tuple):
    name, _, _, _, path, entry_point = case
    fn = _entry(path, entry_point)
    for batch in GPU_BATCHES:
        _check(fn, name, batch, device="cuda")
    if DEFINITIONS[name]["op_type"] == "rmsnorm":
        _check(fn, name, 33, device="cuda", scale=1e-3)
