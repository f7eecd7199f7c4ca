"""Issue 28's kernels against their definitions' references, with retune's tolerances.

The short-row norms (`triton_short_t*`: rmsnorm and fused_add_rmsnorm; `triton_multirow_t*`:
the engines' residual-output variant) at the small hidden sizes the families generate (128 to
1024, which the catalogue ships only as rmsnorm_h128 / h512; the generic tests cover those
and the residual-output variant's h2048 and up), the
per-head case (a [tokens, heads, head_dim] view into a fused qkv buffer, read in place), and
the split-K decode GEMMs (`triton_splitk*`). CPU: Triton's interpreter (set by conftest),
small shapes. GPU (marked): the sizes models run, M = 1..64 on the catalogue's GEMM shapes.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from catalogue_cases import DEFINITIONS, ROOT, example_inputs, import_file

from fib_runtime import families
from fib_runtime.build import Built, build_reference, value_returning
from fib_runtime.catalogue import declared_entries, entry_functions
from fib_runtime.measure.compare import as_tuple, check_outputs
from fib_runtime.schema import Definition

CUDA = torch.cuda.is_available()
NORMS = ROOT / "rmsnorm" / "solutions" / "triton_short_rows.py"
RESIDUAL = ROOT / "fused_add_rmsnorm" / "solutions" / "triton_multirow.py"
SPLITK = ROOT / "gemm" / "solutions" / "triton_splitk.py"
TILES = ("t1k", "t4k", "t16k")
SPLITS = ("triton_splitk1", "triton_splitk4", "triton_splitk8")


def residual_definition(hidden: int) -> Definition:
    """The engines' residual-output norm at `hidden` (the catalogue ships h2048 and up)."""
    data = DEFINITIONS["fused_add_rmsnorm_residual_h2048"].to_dict()
    data["name"] = f"fused_add_rmsnorm_residual_h{hidden}"
    data["axes"]["hidden_size"]["value"] = hidden
    data["reference"] = data["reference"].replace("HIDDEN_SIZE = 2048", f"HIDDEN_SIZE = {hidden}")
    return Definition.from_dict(data)


def norm_definition(family: str, hidden: int, dtype: str = "bfloat16") -> Definition:
    if family == "fused_add_rmsnorm_residual":
        return families.with_dtype(residual_definition(hidden), dtype)
    return families.resolve(family, DEFINITIONS, dtype, hidden_size=hidden, eps=1e-6)


def solution_call(path: Path, variant: str, definition: Definition):
    """The value-returning call of `variant` (a file's FIB_SOLUTIONS entry) for `definition`,
    found the way the catalogue finds it (None where the entry does not serve it)."""
    module = import_file(path)
    for spec in declared_entries(path):
        if spec["variant"] != variant:
            continue
        names = [*DEFINITIONS, definition.name]
        function = entry_functions(spec, names, path).get(definition.name)
        if function is not None:
            built = Built(variant, getattr(module, function),
                          spec.get("destination_passing_style", False))
            return value_returning(built, definition)
    return None


def check(call, definition: Definition, value: int, device: str = "cpu") -> None:
    inputs = example_inputs(definition, value, device)
    expected = as_tuple(build_reference(definition)(*inputs.args))
    result = check_outputs(definition, call(*inputs.args), expected)
    assert result.status.value == "PASSED", result.log
    assert all(torch.equal(a, inputs.canonical[i]) for i, a in enumerate(inputs.args)
               if i in inputs.canonical), "an input was written"


FAMILIES = ("rmsnorm", "fused_add_rmsnorm", "fused_add_rmsnorm_residual")


def norm_call(family: str, tile: str, definition: Definition):
    if family == "fused_add_rmsnorm_residual":
        return solution_call(RESIDUAL, f"triton_multirow_{tile}", definition)
    return solution_call(NORMS, f"triton_short_{tile}", definition)


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("hidden", [128, 256, 1024])
def test_short_rows_match_the_reference_on_cpu(family: str, hidden: int, tile: str):
    for dtype in ("bfloat16", "float32"):
        definition = norm_definition(family, hidden, dtype)
        call = norm_call(family, tile, definition)
        assert call is not None, f"{tile} does not serve {definition.name}"
        for rows in (1, 9, 130):
            check(call, definition, rows)


def test_short_rows_serve_short_hidden_sizes_only():
    """Long rows stay with triton_rowwise / triton_multirow."""
    for hidden, served in ((100, True), (512, True), (1024, True), (1536, False), (4096, False)):
        for family in ("rmsnorm", "fused_add_rmsnorm"):
            definition = norm_definition(family, hidden)
            assert (solution_call(NORMS, "triton_short_t1k", definition) is not None) == served
    assert solution_call(NORMS, "triton_short_t4k", norm_definition(
        "rmsnorm", 128, "float16")) is not None
    eps5 = families.resolve("rmsnorm", DEFINITIONS, hidden_size=128, eps=1e-5)
    check(solution_call(NORMS, "triton_short_t1k", eps5), eps5, 3)


def _qkv_views(tokens: int, heads: int, kv_heads: int, head_dim: int, device: str):
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * head_dim, device=device).bfloat16()
    q = qkv[:, :heads * head_dim].view(tokens, heads, head_dim)
    k = qkv[:, heads * head_dim:(heads + kv_heads) * head_dim].view(tokens, kv_heads, head_dim)
    return q, k


def _per_head(device: str, tokens: int) -> None:
    module = import_file(NORMS)
    definition = DEFINITIONS["rmsnorm_h128"]
    reference = build_reference(definition)
    weight = torch.randn(128, device=device).bfloat16()
    for view in _qkv_views(tokens, 8, 2, 128, device):
        # a 2-D reshape would copy it (one token's view counts as contiguous: torch skips
        # the strides of size-1 dimensions)
        assert tokens == 1 or not view.is_contiguous()
        for tile in TILES:
            got = getattr(module, f"rmsnorm_{tile}_eps1e6")(view, weight)
            assert got.shape == view.shape
            want = reference(view.reshape(-1, 128), weight)
            result = check_outputs(definition, got.reshape(-1, 128), (want,))
            assert result.status.value == "PASSED", result.log


def test_short_rows_read_per_head_views_in_place():
    _per_head("cpu", 5)


def test_short_rows_residual_outputs_may_alias_inputs():
    """The engines call the residual-output norm in place (output is hidden_states,
    residual_out is residual), with strided rows too."""
    module = import_file(RESIDUAL)
    for tile in TILES:
        wide_x, wide_r = torch.randn(2, 7, 160).bfloat16()
        x, r = wide_x[:, :128], wide_r[:, :128]
        w = torch.randn(128).bfloat16()
        s = x.float() + r.float()
        want = (s * torch.rsqrt(s.square().mean(-1, keepdim=True) + 1e-6) * w.float())
        getattr(module, f"fused_add_rmsnorm_residual_{tile}_eps1e6")(x, r, w, x, r)
        torch.testing.assert_close(x, want.bfloat16())
        torch.testing.assert_close(r, s.bfloat16(), rtol=2 ** -7, atol=0)
        assert torch.equal(wide_x[:, 128:], wide_x[:, 128:].clone())  # padding untouched


def gemm_definition(n: int, k: int, dtype: str = "float16") -> Definition:
    return families.resolve("gemm", DEFINITIONS, dtype, n=n, k=k)


@pytest.mark.parametrize("variant", SPLITS)
@pytest.mark.parametrize(("n", "k"), [(96, 1024), (40, 72), (300, 1100)])
def test_splitk_matches_the_reference_on_cpu(variant: str, n: int, k: int):
    """float16 only: Triton 3.6's interpreter computes bfloat16 tl.dot wrongly (the
    catalogue's triton_gemm too); bfloat16 is checked on the GPU."""
    definition = gemm_definition(n, k)
    call = solution_call(SPLITK, variant, definition)
    for m in (1, 5, 33, 70):
        check(call, definition, m)


def test_splitk_takes_any_strides_and_empty_batches():
    module = import_file(SPLITK)
    a = (torch.randn(9, 512) * 512 ** -0.25).half()
    b = (torch.randn(64, 512) * 512 ** -0.25).half()
    want = (a.float() @ b.float().t()).half()
    for split in (1, 4, 8):
        gemm = getattr(module, f"gemm_split{split}")
        torch.testing.assert_close(gemm(a.t().contiguous().t(), b), want, rtol=1e-2, atol=1e-2)
        torch.testing.assert_close(gemm(a, b.t().contiguous().t()), want, rtol=1e-2, atol=1e-2)
        assert gemm(a[:0], b).shape == (0, 64)


# GPU: the sizes models run.


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("hidden", [128, 512, 1024])
def test_short_rows_match_the_reference_on_gpu(family: str, hidden: int):
    """Every tile in bfloat16, one in float32 (float16 takes bfloat16's path); row counts of
    each integer specialisation Triton compiles (1, odd, multiple of 16)."""
    for dtype, tiles in (("bfloat16", TILES), ("float32", ("t4k",))):
        definition = norm_definition(family, hidden, dtype)
        for tile in tiles:
            call = norm_call(family, tile, definition)
            for rows in (1, 7, 4096, 65536):
                check(call, definition, rows, "cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_short_rows_read_per_head_views_in_place_on_gpu():
    for tokens in (1, 16, 1000):
        _per_head("cuda", tokens)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", sorted(n for n in DEFINITIONS if n.startswith("gemm_")
                                        and families.split_dtype(n)[1] != "float32"))
def test_splitk_matches_the_reference_on_gpu(name: str):
    definition = DEFINITIONS[name]
    for variant in SPLITS:
        call = solution_call(SPLITK, variant, definition)
        for m in (1, 2, 3, 4, 8, 16, 24, 32, 48, 64, 128, 1000):
            check(call, definition, m, "cuda")
