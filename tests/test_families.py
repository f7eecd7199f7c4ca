"""Definition families: official names, eps in the name where it differs, generated
definitions written into a database with the catalogue solutions that declare the family,
and those solutions computing what the generated reference computes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fib_runtime import families
from fib_runtime.build.loader import build_reference, build_solution
from fib_runtime.catalogue import install, load_catalogue
from fib_runtime.errors import SchemaError
from fib_runtime.measure.compare import check_outputs
from fib_runtime.store import TraceDB


@pytest.fixture(scope="module")
def known():  # type: ignore[no-untyped-def]
    return load_catalogue().definitions


@pytest.mark.parametrize(("family", "constants", "name"), [
    ("rmsnorm", {"hidden_size": 2560, "eps": 1e-6}, "rmsnorm_h2560"),
    ("rmsnorm", {"hidden_size": 2560, "eps": 1e-5}, "rmsnorm_h2560_eps1e-5"),
    ("rmsnorm", {"hidden_size": 4096, "eps": 1e-5}, "rmsnorm_h4096"),  # the shipped one
    ("rmsnorm", {"hidden_size": 4096, "eps": 1e-6}, "rmsnorm_h4096_eps1e-6"),
    ("rmsnorm", {"hidden_size": 5120, "eps": 3e-7}, "rmsnorm_h5120_eps3e-7"),
    ("fused_add_rmsnorm", {"hidden_size": 2560, "eps": 1e-6}, "fused_add_rmsnorm_h2560"),
    ("silu_and_mul", {"intermediate_size": 9728}, "silu_and_mul_i9728"),
    ("gemm", {"n": 2560, "k": 9728}, "gemm_n2560_k9728"),
    ("rope", {"head_size": 128, "rotary_dim": 64},
     "rope_with_cos_sin_cache_neox_style_d128_rd64"),
    # other dtypes than the family's official one: a suffix, after the eps
    ("rmsnorm", {"hidden_size": 2560, "eps": 1e-6, "dtype": "float16"}, "rmsnorm_h2560_fp16"),
    ("rmsnorm", {"hidden_size": 2560, "eps": 1e-5, "dtype": "float32"},
     "rmsnorm_h2560_eps1e-5_fp32"),
    ("rmsnorm", {"hidden_size": 4096, "eps": 1e-5, "dtype": "float16"}, "rmsnorm_h4096_fp16"),
    ("rmsnorm", {"hidden_size": 4096, "eps": 1e-5, "dtype": "bfloat16"}, "rmsnorm_h4096"),
    ("fused_add_rmsnorm", {"hidden_size": 4096, "eps": 1e-6, "dtype": "float32"},
     "fused_add_rmsnorm_h4096_eps1e-6_fp32"),
    ("silu_and_mul", {"intermediate_size": 9728, "dtype": "float32"}, "silu_and_mul_i9728_fp32"),
    ("gemm", {"n": 4096, "k": 4096, "dtype": "bfloat16"}, "gemm_n4096_k4096_bf16"),
    ("gemm", {"n": 2560, "k": 9728, "dtype": "float16"}, "gemm_n2560_k9728"),
    ("rope", {"head_size": 64, "rotary_dim": 64, "dtype": "float16"},
     "rope_with_cos_sin_cache_neox_style_d64_rd64_fp16"),
])
def test_names_follow_the_official_scheme(known, family, constants, name) -> None:  # type: ignore[no-untyped-def]
    definition = families.resolve(family, known, **constants)
    assert definition.name == name
    dtype = constants.get("dtype", families.FAMILIES[family].dtype)
    assert families.dtype_of(definition) == dtype
    floats = {s.dtype for s in [*definition.inputs.values(), *definition.outputs.values()]
              if s.dtype.startswith(("float", "bfloat"))}
    assert floats == {dtype} | ({"float32"} if family == "rope" else set())  # rope's cache
    if "eps" in constants:
        assert families.eps_of(definition) == constants["eps"]
        assert definition.axes["hidden_size"].value == constants["hidden_size"]
    if name in known:
        assert definition is known[name]
    else:
        assert families.family_of(definition) == family


def test_unknown_family_or_dtype_is_an_error(known) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SchemaError, match="unknown definition family"):
        families.resolve("layernorm", known, hidden_size=8)
    with pytest.raises(SchemaError, match="no definitions in float64"):
        families.resolve("rmsnorm", known, hidden_size=8, eps=1e-6, dtype="float64")


def test_generated_definitions_get_the_family_solutions(known, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    generated = [families.resolve("rmsnorm", known, hidden_size=2560, eps=1e-5),
                 families.resolve("rmsnorm", known, hidden_size=2560, eps=3e-7),
                 families.resolve("silu_and_mul", known, intermediate_size=9728),
                 families.resolve("gemm", known, n=2560, k=9728),
                 families.resolve("rmsnorm", known, hidden_size=2560, eps=1e-5, dtype="float32"),
                 families.resolve("silu_and_mul", known, intermediate_size=9728,
                                  dtype="float16"),
                 families.resolve("gemm", known, n=2560, k=9728, dtype="float32")]
    db = TraceDB.open(tmp_path / "db", create=True)
    install(db, load_catalogue(generated=generated))
    db = TraceDB.open(tmp_path / "db")
    variants = {d.name: sorted(s.name.split("__")[1] for s in db.solutions_for(d.name))
                for d in generated}
    assert variants["rmsnorm_h2560_eps1e-5"] == [
        "cpu_chunked", "flashinfer", "torch", "triton_multirow", "triton_rowwise"]
    assert variants["rmsnorm_h2560_eps3e-7"] == []  # no solution has a function for that eps
    assert variants["silu_and_mul_i9728"] == ["cpu_chunked", "flashinfer", "torch", "triton"]
    assert "torch" in variants["gemm_n2560_k9728"]
    # Each solution serves the dtypes it declares: FlashInfer has no float32 kernels, the
    # Triton GEMM would round float32 operands to tf32.
    assert variants["rmsnorm_h2560_eps1e-5_fp32"] == [
        "cpu_chunked", "torch", "triton_multirow", "triton_rowwise"]
    assert variants["silu_and_mul_i9728_fp16"] == ["cpu_chunked", "flashinfer", "torch", "triton"]
    assert variants["gemm_n2560_k9728_fp32"] == ["cpu_fp32", "torch"]
    # The shipped definitions keep their solutions; a re-install is a no-op that keeps the
    # generated ones served.
    assert len(db.solutions_for("rmsnorm_h4096")) == 5
    assert install(db) == (0, 0)


@pytest.mark.parametrize("eps", [1e-5, 1e-6])
def test_family_solution_matches_the_generated_reference(known, eps: float,
                                                        tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    definition = families.resolve("rmsnorm", known, hidden_size=2560, eps=eps)
    solution = next(s for s in load_catalogue(generated=[definition]).solutions
                    if s.definition == definition.name and s.name.endswith("__torch"))
    x = torch.randn(3, 2560).bfloat16() * 1e-3  # small rows: eps matters
    w = torch.randn(2560).bfloat16()
    expected = build_reference(definition)(x, w)
    out = build_solution(solution, tmp_path / "cache").fn(x, w)
    torch.testing.assert_close(out, expected, atol=1e-2, rtol=1e-2)
    other = 1e-6 if eps == 1e-5 else 1e-5  # and the eps really is the definition's
    assert not torch.allclose(out, build_reference(
        families.resolve("rmsnorm", known, hidden_size=2560, eps=other))(x, w), atol=1e-2)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize(("head", "rotary"), [(32, 32), (64, 32)])
def test_rope_solutions_match_the_generated_reference(known, head: int, rotary: int,  # type: ignore[no-untyped-def]
                                                      dtype: str, tmp_path: Path) -> None:
    definition = families.resolve("rope", known, head_size=head, rotary_dim=rotary, dtype=dtype)
    solutions = [s for s in load_catalogue(generated=[definition]).solutions
                 if s.definition == definition.name]
    assert sorted(s.name.split("__")[1] for s in solutions) == ["torch", "triton"]
    torch.manual_seed(0)
    q = torch.randn(5, 8, head).to(getattr(torch, dtype))[:, ::2]  # strided heads, in place
    k = torch.randn(5, 2, head).to(getattr(torch, dtype))
    cache, positions = torch.randn(9, rotary), torch.tensor([0, 3, 8, 2, 2])
    before = [t.clone() for t in (q, k, cache, positions)]
    expected = build_reference(definition)(q, k, cache, positions)
    for solution in solutions:  # Triton runs in its interpreter without a GPU
        out = build_solution(solution, tmp_path / "cache").fn(q, k, cache, positions)
        check = check_outputs(definition, out, expected)  # retune's tolerances for the dtype
        assert check.status.value == "PASSED", (solution.name, check.log)
        assert all(torch.equal(a, b) for a, b in zip(before, (q, k, cache, positions),
                                                       strict=True)), solution.name


def test_catalogue_ls_lists_families(capsys: pytest.CaptureFixture[str]) -> None:
    from fib_runtime.cli.main import main

    assert main(["catalogue", "ls"]) == 0
    out = capsys.readouterr().out
    assert "rmsnorm  rmsnorm_h{hidden_size}[_eps{eps}]" in out
    assert "rope  rope_with_cos_sin_cache_neox_style_d{head_size}_rd{rotary_dim}" in out
    assert "torch_rope:torch, triton_rope:triton" in out


def test_install_serves_generated_definitions_already_in_a_database(  # type: ignore[no-untyped-def]
        known, tmp_path: Path) -> None:
    generated = families.resolve("silu_and_mul", known, intermediate_size=9728)
    db = TraceDB.open(tmp_path / "db", create=True)
    db.add_definition(generated)  # written by hand or by another tool: no solutions yet
    install(db)
    assert len(TraceDB.open(tmp_path / "db").solutions_for(generated.name)) == 4
