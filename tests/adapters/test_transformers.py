"""The transformers adapter on tiny random Llama, Qwen3 and Mistral models (hidden sizes the
catalogue does not ship, so every definition comes from a family template): routing, capture,
dispatch against the unpatched logits, remove, skip reasons, and torch.compile."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fib_runtime.adapters.transformers import apply, remove
from fib_runtime.adapters.transformers.hub import kernels_available

import fib_runtime as fib
from fib_runtime.hardware import current_hardware
from fib_runtime.store import TraceDB
from tests.adapters.hf_models import (
    MODELS,
    VOCAB,
    expected_routes,
    logits,
    make,
    measured,
    remove_routes,
    transformers,
)

assert remove_routes  # an autouse fixture of this module too


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_route_capture_dispatch_remove(kind: str, tmp_path: Path) -> None:
    model = make(kind)
    ids = torch.randint(0, VOCAB, (2, 5))
    original = logits(model, ids)

    routing = apply(model, db=tmp_path / "db")
    assert routing.routed == expected_routes(kind)
    assert set(routing.generated) == set(routing.definitions)  # none shipped: all generated
    # Norms go through kernels' kernelize where transformers marks them (it does when a
    # kernels version it supports is installed), else they are bound per instance.
    marked = hasattr(transformers.models.llama.modeling_llama.LlamaRMSNorm, "kernel_layer_name")
    norm_hook = "kernels" if marked and kernels_available() else "instance"
    assert {routing.hooks[p] for p in routing.routed if p.endswith("norm")} == {norm_hook}
    assert all(path.endswith("self_attn") for path in routing.skipped)
    assert torch.equal(logits(model, ids), original)  # dispatch off: the modules' own math

    with fib.enable_capture(tmp_path / "db"):
        logits(model, ids)
    db = TraceDB.open(tmp_path / "db")
    head_norm = MODELS[kind][1].get("head_norm")
    hardware = current_hardware().name
    traces = []
    for name in routing.definitions:
        workloads = db.workloads_for(name)
        # 2 x 5 tokens; Qwen3's q/k norms see every head's row (4 and 2 heads)
        assert {next(iter(w.workload.axes.values())) for w in workloads} == (
            {40, 20} if name == head_norm else {10}), name
        traces += [measured(w, f"{name}__torch", hardware) for w in workloads]
    db.append_traces(traces)

    with fib.enable_apply(tmp_path / "db", {"check_interval_s": 0}):
        served = logits(model, ids)
        stats = fib.stats()
    torch.testing.assert_close(served.float(), original.float(), atol=2e-2, rtol=2e-2)
    for name in routing.definitions:
        assert stats[name]["hits"] >= 1 and not stats[name]["fallbacks"], (name, stats[name])

    assert remove(model) == len(routing.routed)
    assert torch.equal(logits(model, ids), original)
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_generate_with_dispatch_on(tmp_path: Path) -> None:
    model = make("llama")
    ids = torch.randint(0, VOCAB, (3, 4))
    kwargs = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        expected = model.generate(ids, **kwargs)
    routing = apply(model, db=tmp_path / "db")
    with fib.enable_capture(tmp_path / "db"), torch.no_grad():
        model.generate(ids, **kwargs)
    db = TraceDB.open(tmp_path / "db")
    name = "rmsnorm_h64_eps1e-5"
    # prefill (3 x 4 rows) and each decode step (3 rows) are separate workloads
    assert {w.workload.axes["batch_size"] for w in db.workloads_for(name)} == {12, 3}
    assert routing.routed["model.norm"] == name
    with fib.enable_apply(tmp_path / "db"), torch.no_grad():
        served = model.generate(ids, **kwargs)
    assert torch.equal(served, expected)


def test_skip_reasons(tmp_path: Path) -> None:
    db = tmp_path / "db"
    apply(make("llama"), db=db)  # rmsnorm_h64_eps1e-5 now exists
    # Pinning a definition whose eps differs: never routed, with the reason.
    routing = apply(make("llama", eps=1e-6), ops={"rmsnorm": "rmsnorm_h64_eps1e-5"}, db=db)
    assert routing.routed == {}
    assert routing.skipped["model.norm"] == ("eps mismatch: module eps 1e-06 != 1e-05 of "
                                             "rmsnorm_h64_eps1e-5")
    assert routing.skipped["model.layers.0.mlp"] == "silu_and_mul not in ops"
    # An eps no solution has a function for: its definition is generated, not routed.
    routing = apply(make("llama", eps=3e-7), db=db)
    assert routing.skipped["model.norm"] == "no solution serves rmsnorm_h64_eps3e-7"
    assert "rmsnorm_h64_eps3e-7" in TraceDB.open(db).definitions
    # A float32 model with a bfloat16 definition pinned: never routed, with the reason.
    routing = apply(make("llama", dtype=torch.float32), ops={"rmsnorm": "rmsnorm_h64_eps1e-5"},
                    db=db)
    assert routing.routed == {}
    assert routing.skipped["model.norm"] == "dtype float32 != bfloat16 of rmsnorm_h64_eps1e-5"
    # A float64 model: no definitions come in that dtype.
    routing = apply(make("llama", dtype=torch.float64), db=db)
    assert routing.routed == {}
    assert routing.skipped["model.norm"] == (
        "dtype float64: definitions come in bfloat16, float16, float32")
    # Gemma's norm scales by (1 + weight): an unsupported variant.
    gemma = torch.nn.ModuleDict({"norm": transformers.models.gemma.modeling_gemma.GemmaRMSNorm(
        64)}).to(torch.bfloat16)
    routing = apply(gemma, db=db)
    assert routing.skipped == {
        "norm": "unsupported variant GemmaRMSNorm: output * (1 + weight) (Gemma-style)"}


def test_torch_compile_fullgraph_of_a_routed_block(tmp_path: Path) -> None:
    model = make("qwen3")
    layer = model.model.layers[0]

    def block(x: torch.Tensor) -> torch.Tensor:
        h = layer.post_attention_layernorm(x)
        return x + layer.mlp(h) + layer.self_attn.q_norm(x.view(*x.shape[:-1], 3, 32)).flatten(-2)

    x = torch.randn(2, 3, 96, dtype=torch.bfloat16)
    with torch.no_grad():
        expected = block(x)
    routing = apply(model, db=tmp_path / "db")
    with fib.enable_capture(tmp_path / "db"), torch.no_grad():
        block(x)
    db = TraceDB.open(tmp_path / "db")
    hardware = current_hardware().name
    db.append_traces([measured(w, f"{w.definition}__torch", hardware)
                      for name in routing.definitions for w in db.workloads_for(name)])
    with fib.enable_apply(tmp_path / "db", {"check_interval_s": 0}), torch.no_grad():
        compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
        served = compiled(x)
        hits = {name: fib.stats()[name]["hits"] for name in routing.definitions}
    torch.testing.assert_close(served.float(), expected.float(), atol=3e-2, rtol=3e-2)
    assert hits == {"rmsnorm_h96": 1, "rmsnorm_h32": 1, "silu_and_mul_i192": 1,
                    "rope_with_cos_sin_cache_neox_style_d32_rd32": 0}  # rope: not in the block


def test_rope_routes_only_the_applied_model(tmp_path: Path) -> None:
    modeling = transformers.models.llama.modeling_llama
    original_rope = modeling.apply_rotary_pos_emb
    routed, plain = make("llama"), make("llama")
    ids = torch.randint(0, VOCAB, (2, 5))
    expected = logits(plain, ids)
    routing = apply(routed, db=tmp_path / "db")
    rope_name = routing.routed["model.rotary_emb"]
    assert modeling.apply_rotary_pos_emb is not original_rope
    with fib.enable_capture(tmp_path / "db"):
        assert torch.equal(logits(plain, ids), expected)  # the unrouted model: its own path
    assert TraceDB.open(tmp_path / "db").workloads_for(rope_name) == []
    remove(routed)
    assert modeling.apply_rotary_pos_emb is original_rope
