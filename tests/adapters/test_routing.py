"""The engine adapters' constants -> definition lookup, across dtypes."""

from __future__ import annotations

import pytest
from fib_runtime.adapters import routing

from fib_runtime import families
from fib_runtime.catalogue import load_catalogue


def test_each_dtype_finds_its_own_definition_and_never_another() -> None:
    assert routing.definition_for("rmsnorm", 4096, 1e-5, "bfloat16") == "rmsnorm_h4096"
    assert routing.definition_for("rmsnorm", 4096, 1e-5, "float16") == "rmsnorm_h4096_fp16"
    assert routing.definition_for("fused_add_rmsnorm_residual", 2048, 1e-6, "float32") == (
        "fused_add_rmsnorm_residual_h2048_fp32")
    assert routing.definition_for("silu_and_mul", 14336, None, "float16") == (
        "silu_and_mul_i14336_fp16")
    assert routing.definition_for("rmsnorm", 4096, 1e-5, "float64") is None
    assert routing.definition_for("rmsnorm", 4096, 1e-6, "float16") is None  # eps differs
    assert routing.definition_eps("rmsnorm_h4096_fp32") == 1e-5


def test_family_names_are_the_bfloat16_definitions_the_engines_route() -> None:
    names = routing.family_names(["rmsnorm", "fused_add_rmsnorm_residual", "silu_and_mul"])
    assert "silu_and_mul_i14336" in names and "rmsnorm_h4096" in names
    assert not any(n.endswith(("_fp16", "_fp32", "_bf16")) for n in names)
    assert all(routing.definition_size(n) > 0 for n in names)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_engine_lookup_and_family_resolution_agree(dtype: str) -> None:
    """What an engine adapter routes to is what `families.resolve` (the transformers
    adapter) names, for every shipped size, in every dtype."""
    catalogue = load_catalogue().definitions
    for name in routing.family_names(["rmsnorm", "silu_and_mul"]):
        size, eps = routing.definition_size(name), routing.definition_eps(name)
        if name.startswith("rmsnorm_"):
            family, constants = "rmsnorm", {"hidden_size": size, "eps": eps}
        else:
            family, constants = "silu_and_mul", {"intermediate_size": size}
        resolved = families.resolve(family, catalogue, dtype, **constants)
        assert routing.definition_for(family, size, eps, dtype) == resolved.name
        assert resolved.name in catalogue  # a shipped size: its variant is in the catalogue
