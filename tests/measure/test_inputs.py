"""Materialised inputs: random by dtype, scalars, and structured paged-attention indices."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from fib_runtime.measure.inputs import InputError, materialise, register_inputs, unregister_inputs
from fib_runtime.schema import Definition, RandomInput, Workload
from tests import factories
from tests.conftest import REPO

GQA = REPO / "definitions" / "gqa_paged" / "gqa_paged_decode_h32_kv8_d128_ps1.json"


def _random_workload(definition: Definition, uuid: str = "wl-1", **axes: int) -> Workload:
    return Workload(uuid, axes, {name: RandomInput() for name in definition.inputs})


def _load(path: Path) -> Definition:
    return Definition.from_dict(json.loads(path.read_text()))


def check_paged(definition: Definition, args: dict[str, torch.Tensor], batch: int,
                pages: int, used: int) -> None:
    """The constraints every paged-attention kernel relies on."""
    indptr, indices = args["kv_indptr"], args["kv_indices"]
    assert indptr.dtype == torch.int32 and indices.dtype == torch.int32
    assert indptr.shape == (batch + 1,) and indptr[0] == 0 and indptr[-1] == used
    lengths = indptr.diff()
    assert (lengths >= 0).all() and len(set(lengths.tolist())) > 1  # uneven sequences
    assert indices.shape == (used,)
    assert ((indices >= 0) & (indices < pages)).all()
    assert len(set(indices.tolist())) == used  # no page twice while there are enough
    assert not (indices.diff() == 1).all()  # not one contiguous run
    head_dim = definition.const_axes.get("head_dim") or definition.const_axes["head_dim_ckv"]
    assert args["sm_scale"] == pytest.approx(1 / math.sqrt(head_dim))


def test_gqa_paged_decode_inputs_satisfy_constraints() -> None:
    definition = _load(GQA)
    wl = _random_workload(definition, batch_size=6, num_pages=97, len_indptr=7,
                          num_kv_indices=50)
    inputs = materialise(definition, wl)
    args = dict(zip(definition.inputs, inputs.args, strict=True))
    check_paged(definition, args, batch=6, pages=97, used=50)
    for name in ("q", "k_cache", "v_cache"):
        assert args[name].dtype == torch.bfloat16 and args[name].abs().sum() > 0
    # The reference accepts them and gives finite outputs.
    from fib_runtime.build import build_reference

    output, lse = build_reference(definition)(*inputs.args)
    assert torch.isfinite(output.float()).all() and torch.isfinite(lse).all()


def test_official_mla_paged_inputs_satisfy_constraints(official: Path) -> None:
    path = next((official / "definitions" / "mla_paged").glob("mla_paged_decode_h16_*ps1.json"))
    definition = _load(path)
    wl = _random_workload(definition, batch_size=3, num_pages=40, len_indptr=4,
                          num_kv_indices=25)
    inputs = materialise(definition, wl)
    args = dict(zip(definition.inputs, inputs.args, strict=True))
    check_paged(definition, args, batch=3, pages=40, used=25)


def test_official_prefill_keeps_kv_at_least_as_long_as_queries(official: Path) -> None:
    path = official / "definitions" / "gqa_paged" / "gqa_paged_prefill_causal_h32_kv8_d128_ps1.json"
    definition = _load(path)
    wl = _random_workload(definition, len_indptr=5, total_q=20, num_kv_indices=60, num_pages=80)
    args = dict(zip(definition.inputs, materialise(definition, wl).args, strict=True))
    assert args["qo_indptr"][-1] == 20 and args["kv_indptr"][-1] == 60
    assert (args["kv_indptr"].diff() >= args["qo_indptr"].diff()).all()


def test_same_workload_gives_same_inputs_and_others_differ() -> None:
    definition = Definition.from_dict(factories.definition())
    first = materialise(definition, _random_workload(definition, "a", batch_size=3))
    again = materialise(definition, _random_workload(definition, "a", batch_size=3))
    other = materialise(definition, _random_workload(definition, "b", batch_size=3))
    assert torch.equal(first.args[0], again.args[0])
    assert not torch.equal(first.args[0], other.args[0])


def test_refill_changes_plain_inputs_and_restore_brings_them_back() -> None:
    definition = _load(GQA)
    wl = _random_workload(definition, batch_size=2, num_pages=8, len_indptr=3, num_kv_indices=5)
    inputs = materialise(definition, wl)
    before = [a.clone() if isinstance(a, torch.Tensor) else a for a in inputs.args]
    inputs.refill(0)
    q, indptr, indices = inputs.args[0], inputs.args[3], inputs.args[4]
    assert not torch.equal(q, before[0])
    assert torch.equal(indptr, before[3]) and torch.equal(indices, before[4])  # structure kept
    inputs.refill(1)
    after_one = q.clone()
    inputs.refill(0)
    assert not torch.equal(q, after_one)
    inputs.restore()
    assert all(torch.equal(a, b) for a, b in zip(inputs.args[:5], before[:5], strict=True))


def test_dtypes_are_never_all_zero() -> None:
    data = factories.definition()
    data["inputs"] = {name: {"shape": ["batch_size"], "dtype": dtype} for name, dtype in
                      [("a", "float16"), ("b", "int32"), ("c", "bool"), ("d", "int8"),
                       ("e", "float8_e4m3fn")]}
    data["reference"] = "def run(a, b, c, d, e):\n    return a\n"
    data["outputs"] = {"y": {"shape": ["batch_size"], "dtype": "float16"}}
    definition = Definition.from_dict(data)
    inputs = materialise(definition, _random_workload(definition, batch_size=1))
    for value in inputs.args:
        assert value.float().abs().sum() > 0
    assert inputs.args[4].dtype == torch.float8_e4m3fn


def test_scalar_descriptor_is_used_as_given() -> None:
    definition = _load(GQA)
    raw = {"uuid": "s", "axes": {"batch_size": 1, "num_pages": 4, "len_indptr": 2,
                                 "num_kv_indices": 3},
           "inputs": {**{n: {"type": "random"} for n in definition.inputs},
                      "sm_scale": {"type": "scalar", "value": 0.5}}}
    assert materialise(definition, Workload.from_dict(raw)).args[5] == 0.5


def test_impossible_workloads_raise_input_error() -> None:
    definition = _load(GQA)
    with pytest.raises(InputError, match="no value for axes num_pages"):
        materialise(definition, _random_workload(definition, batch_size=1, len_indptr=2,
                                                 num_kv_indices=1))
    blob = {"type": "safetensors", "path": "blob/x.safetensors", "tensor_key": "q"}
    raw = {"uuid": "b", "axes": {"batch_size": 1, "num_pages": 4, "len_indptr": 2,
                                 "num_kv_indices": 3},
           "inputs": {**{n: {"type": "random"} for n in definition.inputs}, "q": blob}}
    with pytest.raises(InputError, match="needs a blob"):
        materialise(definition, Workload.from_dict(raw))


def test_restore_repairs_structured_inputs_a_solution_wrote_into() -> None:
    definition = _load(GQA)
    wl = _random_workload(definition, batch_size=2, num_pages=8, len_indptr=3, num_kv_indices=5)
    inputs = materialise(definition, wl)
    indices = inputs.args[4].clone()
    inputs.args[4].zero_()
    inputs.restore()
    assert torch.equal(inputs.args[4], indices)


def test_an_input_maker_by_definition_or_family_wins_over_the_naming_rules() -> None:
    def sevens(name: str, spec: Any, values: Any, gen: Any) -> Any:
        return torch.full((values["batch_size"], values["hidden_size"]), 7.0) \
            if name == "x" else None

    def threes(name: str, spec: Any, values: Any, gen: Any) -> Any:
        return torch.full((values["hidden_size"],), 3.0) if name == "weight" else None

    plain = Definition.from_dict(factories.definition("maker_norm_h8"))
    tagged = Definition.from_dict(factories.definition("maker_fam_h8", tags=["family:fam"]))
    register_inputs("maker_norm_h8", sevens)
    register_inputs("fam", threes)
    try:
        x, weight = materialise(plain, Workload.from_dict(
            factories.workload("maker_norm_h8", 3)["workload"])).args
        assert bool((x == 7.0).all()) and not bool((weight == 3.0).all())
        x, weight = materialise(tagged, Workload.from_dict(
            factories.workload("maker_fam_h8", 3)["workload"])).args
        assert bool((weight == 3.0).all()) and not bool((x == 7.0).all())
    finally:
        unregister_inputs("maker_norm_h8")
        unregister_inputs("fam")
