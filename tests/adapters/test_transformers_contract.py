"""What a user of a routed HF model relies on beyond bfloat16 inference: float16 and float32
models route and match the unpatched model; a training step gives the unpatched gradients;
weights loaded after `apply` (every way) are the ones served; retune times the adapter's
own originals."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from fib_runtime.adapters.transformers import apply

import fib_runtime as fib
from fib_runtime.dispatch import sites
from fib_runtime.original import is_original, untimeable_reason
from fib_runtime.retuning import retune
from fib_runtime.store import TraceDB
from tests.adapters.hf_models import (
    VOCAB,
    expected_routes,
    logits,
    make,
    measure_captured,
    remove_routes,
)

assert remove_routes  # an autouse fixture of this module too
SUFFIX = {torch.float16: "_fp16", torch.float32: "_fp32"}
# dispatch served by the catalogue's torch solutions against transformers' own math
SERVED_TOLERANCE = {torch.bfloat16: 3e-2, torch.float16: 1e-2, torch.float32: 1e-4}


def _served(model: Any, root: Path, ids: torch.Tensor, names: list[str]) -> None:
    """Capture one forward of `model` into `root` and measure the torch solutions there."""
    with fib.enable_capture(root):
        logits(model, ids)
    measure_captured(root, names)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("kind", ["llama", "qwen3"])
def test_float16_and_float32_models_route_and_match_the_unpatched_model(
        kind: str, dtype: torch.dtype, tmp_path: Path) -> None:
    model = make(kind, dtype)
    ids = torch.randint(0, VOCAB, (2, 5))
    original = logits(model, ids)
    routing = apply(model, db=tmp_path / "db")
    assert routing.routed == {path: name + SUFFIX[dtype]
                              for path, name in expected_routes(kind).items()}
    assert torch.equal(logits(model, ids), original)  # dispatch off: the modules' own math

    _served(model, tmp_path / "db", ids, routing.definitions)
    with fib.enable_apply(tmp_path / "db", {"check_interval_s": 0}):
        served = logits(model, ids)
        stats = fib.stats()
    tolerance = SERVED_TOLERANCE[dtype]
    torch.testing.assert_close(served, original, atol=tolerance, rtol=tolerance)
    for name in routing.definitions:
        assert stats[name]["hits"] >= 1 and not stats[name]["fallbacks"], (name, stats[name])


def _train_step(model: Any, ids: torch.Tensor) -> dict[str, torch.Tensor | None]:
    model.train()
    model.zero_grad()
    model(ids, labels=ids).loss.backward()
    return {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("dispatch", ["off", "on"])
def test_a_train_step_gives_the_unpatched_gradients(dispatch: str, dtype: torch.dtype,
                                                    tmp_path: Path) -> None:
    ids = torch.randint(0, VOCAB, (2, 5))
    unpatched = make("llama", dtype)
    expected = _train_step(unpatched, ids)
    model = make("llama", dtype)
    routing = apply(model, db=tmp_path / "db")
    if dispatch == "on":
        _served(model, tmp_path / "db", ids, routing.definitions)
    with (fib.enable_apply(tmp_path / "db", {"check_interval_s": 0}) if dispatch == "on"
          else contextlib.nullcontext()):
        got = _train_step(model, ids)
        for name, grad in expected.items():
            assert got[name] is not None, f"{name} got no gradient"
            assert torch.equal(got[name], grad), name
        # the step's in-place update is what the next (routed, no-grad) forward computes with
        for m in (unpatched, model):
            torch.optim.SGD(m.parameters(), lr=0.5).step()
            m.eval()
        tolerance = 0 if dispatch == "off" else SERVED_TOLERANCE[dtype]
        torch.testing.assert_close(logits(model, ids), logits(unpatched, ids),
                                   atol=tolerance, rtol=tolerance)
        if dispatch == "on":
            hits = {n: fib.stats()[n]["hits"] for n in routing.definitions}
            assert all(hits.values()), hits  # the no-grad forward was served


def _load_copy(model: Any, new: dict[str, torch.Tensor]) -> None:
    model.load_state_dict(new)


def _load_assign(model: Any, new: dict[str, torch.Tensor]) -> None:
    model.load_state_dict({k: v.clone() for k, v in new.items()}, assign=True)


def _set_data(model: Any, new: dict[str, torch.Tensor]) -> None:
    for name, param in model.named_parameters():
        param.data = new[name].clone()


def _copy_into_data(model: Any, new: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.data.copy_(new[name])


def _dtype_round_trip(model: Any, new: dict[str, torch.Tensor]) -> None:
    model.float().bfloat16()  # every parameter is a new tensor now
    model.load_state_dict(new)


RELOADS: dict[str, Callable[[Any, dict[str, torch.Tensor]], None]] = {
    "load_state_dict": _load_copy, "load_state_dict_assign": _load_assign,
    "param_data": _set_data, "param_data_copy": _copy_into_data,
    "dtype_round_trip": _dtype_round_trip,
}


@pytest.mark.parametrize("how", sorted(RELOADS))
def test_weights_loaded_after_apply_are_served(how: str, tmp_path: Path) -> None:
    ids = torch.randint(0, VOCAB, (2, 5))
    model = make("llama")
    apply(model, db=tmp_path / "db")
    logits(model, ids)  # a routed call before the new weights
    fresh = make("llama", seed=1)  # other weights, never routed
    RELOADS[how](model, {k: v.detach().clone() for k, v in fresh.state_dict().items()})
    assert torch.equal(logits(model, ids), logits(fresh, ids))
    mlp = model.model.layers[0].mlp  # still one weight for gate and up after the reload
    assert mlp.gate_proj.weight.data_ptr() + mlp.gate_proj.weight.nbytes == \
        mlp.up_proj.weight.data_ptr()


def test_weights_loaded_after_apply_are_served_with_dispatch_on(tmp_path: Path) -> None:
    ids = torch.randint(0, VOCAB, (2, 5))
    model = make("llama")
    routing = apply(model, db=tmp_path / "db")
    _served(model, tmp_path / "db", ids, routing.definitions)
    fresh = make("llama", seed=1)
    with fib.enable_apply(tmp_path / "db", {"check_interval_s": 0}):
        logits(model, ids)
        _load_assign(model, fresh.state_dict())
        served = logits(model, ids)
        assert fib.stats()["silu_and_mul_i160"]["hits"] == 2 * 2  # two calls, two layers
    torch.testing.assert_close(served, logits(fresh, ids), atol=2e-2, rtol=2e-2)


def test_retune_times_the_adapter_originals(tmp_path: Path) -> None:
    model = make("llama")
    ids = torch.randint(0, VOCAB, (2, 5))
    routing = apply(model, db=tmp_path / "db")
    with fib.enable_capture(tmp_path / "db"):
        logits(model, ids)
    db = TraceDB.open(tmp_path / "db")
    # (other tests' live sites of these definitions record their own originals too)
    originals = [s for name in routing.definitions for s in db.solutions_for(name)
                 if is_original(s) and "__original__fib_runtime.adapters." in s.name]
    assert sorted(s.definition for s in originals) == routing.definitions
    assert [untimeable_reason(s) for s in originals] == [None] * len(originals)
    summary = retune(db, routing.definitions, [s.name for s in originals], devices="cpu",
                     warmup=1, iters=3, progress=False)
    assert not [note for note in summary.notes if "not timed" in note]
    statuses = {o.solution: o.status for o in summary.outcomes}
    assert {s.name for s in originals} == set(statuses)
    assert set(statuses.values()) == {"PASSED"}, statuses
    # the only measured candidates: dispatch calls the originals themselves, which compute
    # exactly what the unpatched modules compute
    expected = logits(model, ids)
    with fib.enable_apply(tmp_path / "db", {"check_interval_s": 0}):
        assert torch.equal(logits(model, ids), expected)
        served = {name: {fn.__module__ + "." + fn.__qualname__
                         for s in sites.sites_of(name) if s.binding is not None
                         for fn in s.binding.served["eager"].values()}
                  for name in routing.definitions}
    assert served == {
        "rmsnorm_h64_eps1e-5": {"fib_runtime.adapters.transformers.ops.rmsnorm_eps1em05"},
        "silu_and_mul_i160": {"fib_runtime.adapters.transformers.ops.silu_and_mul"},
        "rope_with_cos_sin_cache_neox_style_d16_rd16": {
            "fib_runtime.adapters.transformers.rope.rope_llama"}}


def test_fusing_again_under_inference_mode_leaves_the_model_trainable(tmp_path: Path) -> None:
    ids = torch.randint(0, VOCAB, (2, 5))
    unpatched, model = make("llama"), make("llama")
    apply(model, db=tmp_path / "db")
    model.float().bfloat16()  # new parameter tensors: the next routed call fuses again
    with torch.inference_mode():
        assert torch.equal(model(ids).logits, logits(unpatched, ids))
    expected = _train_step(unpatched, ids)
    got = _train_step(model, ids)
    assert all(torch.equal(got[name], grad) for name, grad in expected.items())
    torch.optim.SGD(model.parameters(), lr=0.5).step()  # in place, outside inference mode
