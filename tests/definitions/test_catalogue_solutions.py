"""Every catalogue solution against its definition's reference, discovered from the catalogue.

CPU: every solution that runs on the CPU (torch, cpu, and Triton in the interpreter,
TRITON_INTERPRET=1 set by conftest) on small workloads made the way retune makes them, checked
with retune's own tolerances; flashinfer solutions import without flashinfer. Kernel-specific
tests follow (odd shapes, strides). GPU (marked): every solution that runs on an NVIDIA GPU, on
batch sizes from 1 to 16384.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from catalogue_cases import (
    CASES,
    CATALOGUE,
    CPU_INPUT_BYTES,
    DEFINITIONS,
    ROOT,
    entry,
    example_inputs,
    import_file,
    input_bytes,
    reference,
    solution_file,
)

from fib_runtime import families
from fib_runtime.build import Built, build_reference, value_returning
from fib_runtime.measure.checks import TOLERANCE, check_kind, check_result
from fib_runtime.measure.compare import as_tuple

GPU_BATCHES = (1, 7, 33, 255, 1000, 4097, 16384)
CUDA = torch.cuda.is_available()
# Solutions the interpreter runs too slowly at the catalogue's sizes (their kernels are
# checked on small odd shapes below).
INTERPRETER_MAX_ELEMENTS = 1 << 26


def _runs_on_cpu(solution) -> bool:
    return solution.spec.language == "triton" or \
        bool({"any", "cpu"} & set(solution.spec.target_hardware))


def _interpretable(solution) -> bool:
    if solution.spec.language != "triton":
        return True
    definition = DEFINITIONS[solution.definition]
    consts = definition.const_axes
    largest = max((eval("*".join(str(consts.get(a, 1)) for a in spec.shape) or "1")
                   for spec in definition.inputs.values() if spec.shape), default=1)
    return largest <= INTERPRETER_MAX_ELEMENTS // 64


CPU_CASES = sorted(s.name for s in CASES if _runs_on_cpu(s) and _interpretable(s)
                   and input_bytes(DEFINITIONS[s.definition]) <= CPU_INPUT_BYTES)
GPU_CASES = sorted(s.name for s in CASES if {"any", "nvidia"} & set(s.spec.target_hardware))
SOLUTIONS = {s.name: s for s in CATALOGUE.solutions}


def _check(name: str, var: int, device: str = "cpu", scale: float = 1.0) -> None:
    """The solution matches the reference within retune's tolerances, leaves its inputs
    untouched (float32 ones too, where `.float()` is no copy) and returns no view of them."""
    solution = SOLUTIONS[name]
    definition = DEFINITIONS[solution.definition]
    call = value_returning(Built(name, entry(name), solution.spec.dps), definition)
    inputs = example_inputs(definition, var, device, scale)
    expected = as_tuple(reference(solution.definition)(*inputs.args))
    got = call(*inputs.args)
    # by its check kind (a sampler: support only; its frequencies in test_sampling_check)
    check = check_result(definition, got, expected, inputs.args)
    written = [i for i, a in inputs.canonical.items() if not torch.equal(a, inputs.args[i])]
    storages = {a.untyped_storage().data_ptr() for a in inputs.args if torch.is_tensor(a)}
    aliased = [i for i, out in enumerate(as_tuple(got))
               if torch.is_tensor(out) and out.untyped_storage().data_ptr() in storages]
    inputs.restore()
    assert check.status.value == "PASSED", check.log
    assert not written, f"inputs {written} were written"
    assert not aliased, f"outputs {aliased} are views of an input"


@pytest.mark.parametrize("name", CPU_CASES)
def test_matches_reference_on_cpu(name: str):
    for rows in (1, 7):
        _check(name, rows)
    # Tiny values: where an eps is part of the definition, it dominates, so a wrong eps
    # entry point fails here.
    _check(name, 3, scale=1e-3)


def _rmsnorm_fp32(x: torch.Tensor, w: torch.Tensor, eps: float,
                  dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    x = x.float()
    return (x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps) * w.float()).to(dtype)


@pytest.mark.parametrize("stem", ["triton_rowwise", "triton_multirow"])
@pytest.mark.parametrize(("rows", "hidden"), [(1, 100), (7, 48), (67, 300), (130, 33)])
def test_triton_norms_take_sizes_from_tensors(stem: str, rows: int, hidden: int):
    module = import_file(solution_file(f"rmsnorm_h4096__{stem}"))
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
    module = import_file(solution_file("silu_and_mul_i14336__triton"))
    x = (torch.randn(tokens, 2 * inter) * 3).bfloat16()
    gate, up = x[:, :inter].float(), x[:, inter:].float()
    torch.testing.assert_close(module.silu_and_mul(x), (gate * torch.sigmoid(gate) * up).bfloat16())
    columns = x.t().contiguous().t()  # strided columns: copied first
    torch.testing.assert_close(module.silu_and_mul(columns), module.silu_and_mul(x))


@pytest.mark.parametrize("entry_point", ["gemm_small_m", "gemm_large_m"])
@pytest.mark.parametrize(("m", "n", "k"), [(1, 40, 72), (17, 300, 256), (130, 260, 100)])
def test_triton_gemm_takes_sizes_from_tensors(entry_point: str, m: int, n: int, k: int):
    gemm = getattr(import_file(solution_file("gemm_n4096_k4096__triton_small_m")), entry_point)
    a = (torch.randn(m, k) * k**-0.25).half()
    b = (torch.randn(n, k) * k**-0.25).half()
    expected = (a.float() @ b.float().t()).half()
    torch.testing.assert_close(gemm(a, b), expected, rtol=1e-2, atol=1e-2)
    # A column-major A works through its strides.
    column_major = a.t().contiguous().t()
    torch.testing.assert_close(gemm(column_major, b), expected, rtol=1e-2, atol=1e-2)


FLASHINFER_CASES = sorted(n for n, s in SOLUTIONS.items()
                          if "flashinfer" in (s.spec.dependencies or ()))


@pytest.mark.parametrize("name", FLASHINFER_CASES)
def test_flashinfer_solutions_import_without_flashinfer(monkeypatch: pytest.MonkeyPatch,
                                                        name: str):
    for mod in [m for m in sys.modules if m == "flashinfer" or m.startswith("flashinfer.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "flashinfer", None)  # makes `import flashinfer...` fail
    definition = DEFINITIONS[SOLUTIONS[name].definition]
    fn = entry(name)
    with pytest.raises(ImportError):
        fn(*example_inputs(definition, 2).args)


@pytest.mark.parametrize("name", FLASHINFER_CASES)
def test_flashinfer_solutions_answer_an_empty_batch_themselves(monkeypatch: pytest.MonkeyPatch,
                                                               name: str):
    """FlashInfer's kernels reject a batch of 0 (an idle engine rank sends one): the wrapper
    answers it with the reference's shapes and dtypes, without reaching flashinfer."""
    monkeypatch.setitem(sys.modules, "flashinfer", None)  # reaching flashinfer would raise
    definition = DEFINITIONS[SOLUTIONS[name].definition]
    inputs = example_inputs(definition, 0)
    expected = as_tuple(reference(SOLUTIONS[name].definition)(*inputs.args))
    got = as_tuple(entry(name)(*inputs.args))
    assert [(o.shape, o.dtype) for o in got] == [(e.shape, e.dtype) for e in expected]


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", GPU_CASES)
def test_matches_reference_on_gpu(name: str):
    definition = DEFINITIONS[SOLUTIONS[name].definition]
    # a sampler's reference draws row by row in Python: up to 255 rows
    batches = GPU_BATCHES if check_kind(definition) == TOLERANCE else GPU_BATCHES[:4]
    for batch in batches:
        _check(name, batch, device="cuda")
    _check(name, 33, device="cuda", scale=1e-3)


DEVICE = "cuda" if CUDA else "cpu"  # the layout tests: the GPU where there is one


def _weights(hidden: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """A contiguous weight and the layouts a caller may pass instead (same values or not)."""
    return {"contiguous": torch.randn(hidden).to(DEVICE, dtype),
            "strided": torch.randn(2 * hidden).to(DEVICE, dtype)[::2],
            "stride_0": torch.randn(1).to(DEVICE, dtype).expand(hidden),
            "offset": torch.randn(hidden + 3).to(DEVICE, dtype)[3:]}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("stem", ["triton_rowwise", "triton_multirow"])
def test_triton_norms_read_weights_of_any_layout(stem: str, dtype: torch.dtype):
    module = import_file(solution_file(f"rmsnorm_h4096__{stem}"))
    x, r = torch.randn(2, 5, 48).to(DEVICE, dtype)
    for layout, w in _weights(48, dtype).items():
        want = _rmsnorm_fp32(x, w, 1e-6, dtype)
        torch.testing.assert_close(module.rmsnorm_eps1e6(x, w), want, msg=layout)
        want = _rmsnorm_fp32(x.float() + r.float(), w, 1e-5, dtype)
        torch.testing.assert_close(module.fused_add_rmsnorm_eps1e5(x, r, w), want, msg=layout)


def test_triton_engine_fused_norm_takes_any_layout():
    """The engines' destination-passing fused norm: strided or stride-0 weights, columns
    with a stride in the inputs and in the outputs (which may alias the inputs)."""
    module = import_file(solution_file("fused_add_rmsnorm_residual_h4096__triton_rowwise"))
    x, r = torch.randn(2, 5, 48).to(DEVICE, torch.bfloat16)
    for layout, w in _weights(48, torch.bfloat16).items():
        s = x.float() + r.float()
        want = _rmsnorm_fp32(s, w, 1e-5)
        out, res = torch.empty_like(x), torch.empty_like(r)
        module.fused_add_rmsnorm_residual_eps1e5(x, r, w, out, res)
        torch.testing.assert_close(out, want, msg=layout)
        torch.testing.assert_close(res, s.bfloat16(), rtol=2 ** -7, atol=0, msg=layout)
    columns_x, columns_r = x.t().contiguous().t(), r.t().contiguous().t()
    module.fused_add_rmsnorm_residual_eps1e5(columns_x, columns_r, w, columns_x, columns_r)
    torch.testing.assert_close(columns_x, want)
    torch.testing.assert_close(columns_r, s.bfloat16(), rtol=2 ** -7, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_triton_rope_reads_positions_of_any_layout(dtype: torch.dtype):
    definition = families.resolve("rope", DEFINITIONS, head_size=32, rotary_dim=32)
    run = import_file(ROOT / "rope" / "solutions" / "triton_rope.py").run
    q, k = torch.randn(4, 3, 32).to(DEVICE, dtype), torch.randn(4, 1, 32).to(DEVICE, dtype)
    cache = torch.randn(9, 32, device=DEVICE)
    layouts = {"contiguous": torch.tensor([0, 5, 8, 2], device=DEVICE),
               "strided": torch.tensor([0, 7, 5, 7, 8, 7, 2, 7], device=DEVICE)[::2],
               "stride_0": torch.tensor([6], device=DEVICE).expand(4),
               "int32": torch.tensor([1, 2, 3, 4], dtype=torch.int32, device=DEVICE)}
    for layout, positions in layouts.items():
        expected = build_reference(definition)(q, k, cache, positions.long())
        for got, want in zip(run(q, k, cache, positions), expected, strict=True):
            torch.testing.assert_close(got, want, atol=2e-2, rtol=2e-2, msg=layout)
