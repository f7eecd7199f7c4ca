"""An engine op's constants -> its shipped definition, across dtypes: the names every adapter
routes to, and the same names `families.resolve` gives the transformers adapter."""

from __future__ import annotations

import pytest

from fib_runtime import engine_ops, families
from fib_runtime.catalogue import load_catalogue
from fib_runtime.errors import SchemaError


def test_each_dtype_finds_its_own_definition_and_never_another() -> None:
    assert engine_ops.definition_for("rmsnorm", 4096, 1e-5, "bfloat16") == "rmsnorm_h4096"
    assert engine_ops.definition_for("rmsnorm", 4096, 1e-5, "float16") == "rmsnorm_h4096_fp16"
    assert engine_ops.definition_for("fused_add_rmsnorm_residual", 2048, 1e-6, "float32") == (
        "fused_add_rmsnorm_residual_h2048_fp32")
    assert engine_ops.definition_for("silu_and_mul", 14336, None, "float16") == (
        "silu_and_mul_i14336_fp16")
    assert engine_ops.definition_for("rmsnorm", 4096, 1e-5, "float64") is None
    assert engine_ops.definition_for("rmsnorm", 4096, 1e-6, "float16") is None  # eps differs
    assert engine_ops.shipped_eps("rmsnorm_h4096_fp32") == 1e-5


def test_family_names_are_the_bfloat16_definitions_the_engines_route() -> None:
    names = engine_ops.shipped(["rmsnorm", "fused_add_rmsnorm_residual", "silu_and_mul"])
    assert "silu_and_mul_i14336" in names and "rmsnorm_h4096" in names
    assert not any(n.endswith(("_fp16", "_fp32", "_bf16")) for n in names)
    assert all(engine_ops.shipped_size(n) > 0 for n in names)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_engine_lookup_and_family_resolution_agree(dtype: str) -> None:
    """What an engine adapter routes to is what `families.resolve` (the transformers
    adapter) names, for every shipped size, in every dtype."""
    catalogue = load_catalogue().definitions
    for name in engine_ops.shipped(["rmsnorm", "silu_and_mul"]):
        size, eps = engine_ops.shipped_size(name), engine_ops.shipped_eps(name)
        if name.startswith("rmsnorm_"):
            family, constants = "rmsnorm", {"hidden_size": size, "eps": eps}
        else:
            family, constants = "silu_and_mul", {"intermediate_size": size}
        resolved = families.resolve(family, catalogue, dtype, **constants)
        assert engine_ops.definition_for(family, size, eps, dtype) == resolved.name
        assert resolved.name in catalogue  # a shipped size: its variant is in the catalogue


def test_the_shipped_only_family_is_named_like_the_others() -> None:
    catalogue = load_catalogue().definitions
    assert families.definition_name("fused_add_rmsnorm_residual", catalogue, "float32",
                                    hidden_size=2048, eps=1e-6) == (
        "fused_add_rmsnorm_residual_h2048_fp32")
    assert families.definition_name("fused_add_rmsnorm_residual", catalogue,
                                    hidden_size=2048, eps=1e-5) == (
        "fused_add_rmsnorm_residual_h2048_eps1e-5")  # not shipped: no engine routes to it
    assert engine_ops.definition_for("fused_add_rmsnorm_residual", 2048, 1e-5,
                                     "bfloat16") is None
    with pytest.raises(SchemaError, match="unknown definition family"):
        families.resolve("fused_add_rmsnorm_residual", catalogue, hidden_size=2048, eps=1e-6)


@pytest.mark.parametrize("eps", [1e-5 * (1 + 1e-7), 1e-5 * (1 - 1e-7), 1e-6])
def test_an_eps_not_exactly_the_definitions_is_another_definition_on_both_paths(
        eps: float) -> None:
    """One eps rule: the engine adapters once took an eps within 1e-6 (relative) of the
    definition's as its own, where the transformers adapter named another definition; both
    now compare exactly, so a routed call computes exactly the module's eps."""
    catalogue = load_catalogue().definitions
    assert engine_ops.definition_for("rmsnorm", 4096, eps, "bfloat16") is None
    assert families.resolve("rmsnorm", catalogue, "bfloat16", hidden_size=4096,
                            eps=eps).name != "rmsnorm_h4096"
    assert engine_ops.definition_for("rmsnorm", 4096, 1e-5, "bfloat16") == "rmsnorm_h4096"


def test_moe_definition_by_the_layers_constants():
    assert engine_ops.moe_definition_for(8, 64, 2048, 1024) == "moe_bf16_topk8_e64_h2048_i1024"
    assert engine_ops.moe_definition_for(2, 8, 4096, 14336) == "moe_bf16_topk2_e8_h4096_i14336"
    for constants in ((8, 64, 2048, 768), (4, 64, 2048, 1024), (8, 32, 7168, 2048)):
        assert engine_ops.moe_definition_for(*constants) is None
    assert engine_ops.shipped_moe() == sorted(
        n for n in engine_ops._shipped() if n.startswith("moe_bf16_topk"))
    assert "moe_bf16_topk8_e128_h2048_i768" in engine_ops.shipped_moe()
