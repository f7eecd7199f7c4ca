"""The transformers adapter's attention routing (AttentionInterface -> the GQA ragged-prefill
definitions) on tiny Llama / Qwen3 models with the definitions' heads (32 query heads, 8 or
4 KV heads, head_dim 128): prefill and decode steps served by dispatch, the calls no
definition covers left to transformers' sdpa and counted, capture, and the original."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from fib_runtime.adapters.transformers import apply, attention, remove
from fib_runtime.adapters.transformers.patch import KINDS
from fib_runtime.adapters.transformers.sdpa import ragged_prefill

import fib_runtime as fib
from fib_runtime.catalogue import load_catalogue
from fib_runtime.measure.compare import check_outputs
from fib_runtime.original import original_name, original_problem
from fib_runtime.schema import Status
from fib_runtime.store import TraceDB
from tests.adapters.hf_models import _made, make, measure_captured, remove_routes, transformers

assert remove_routes  # an autouse fixture of this module too

ROOT = Path(__file__).resolve().parents[2]
VOCAB = 96
GENERATE = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": 0}


def tiny(kv_heads: int = 8, dtype: torch.dtype = torch.bfloat16, kind: str = "llama",
         **config: Any) -> Any:
    """A 2-layer model with the definitions' attention shapes and little else."""
    torch.manual_seed(0)
    common = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
              "num_attention_heads": 32, "num_key_value_heads": kv_heads, "head_dim": 128,
              "vocab_size": VOCAB, **config}
    if kind == "qwen3":
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**common))
    else:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**common))
    model = model.to(dtype).eval()
    _made.append(model)
    return model


def reference(name: str) -> Any:
    """The definition's reference `run`, executed from its source text."""
    definition = json.loads((ROOT / "definitions/gqa_ragged" / f"{name}.json").read_text())
    scope: dict[str, Any] = {}
    exec(compile(definition["reference"], name, "exec"), scope)
    return scope["run"]


@pytest.fixture(autouse=True)
def counters() -> Any:
    attention.reset()
    yield
    attention.reset()


def test_attention_is_routed_only_when_asked_for(tmp_path: Path) -> None:
    """Its original pays an lse pass the model's own call does not (patch.DEFAULT_KINDS)."""
    model = tiny(8)
    routing = apply(model, db=tmp_path / "db")
    assert not any(p.endswith("self_attn") for p in routing.routed)
    assert model.config._attn_implementation == "sdpa"
    assert any(p.endswith("input_layernorm") for p in routing.routed)  # the rest is


@pytest.mark.parametrize("kind,kv_heads", [("llama", 8), ("qwen3", 4)])
def test_prefill_and_decode_dispatched(kind: str, kv_heads: int, tmp_path: Path) -> None:
    model = tiny(kv_heads, kind=kind)
    name = f"gqa_ragged_prefill_causal_h32_kv{kv_heads}_d128"
    ids = torch.randint(1, VOCAB, (2, 6))  # no pad id (0)
    with torch.no_grad():
        expected = model(ids).logits
        expected_tokens = model.generate(ids, **GENERATE)
    routing = apply(model, db=tmp_path / "db", ops=KINDS)
    assert {p: n for p, n in routing.routed.items() if p.endswith("self_attn")} == {
        f"model.layers.{i}.self_attn": name for i in range(2)}
    assert routing.hooks["model.layers.0.self_attn"] == "AttentionInterface"
    assert model.config._attn_implementation == attention.IMPLEMENTATION
    with torch.no_grad():  # dispatch off: the site's original, transformers' own sdpa
        assert torch.equal(model(ids).logits, expected)

    with fib.enable_capture(tmp_path / "db"), torch.no_grad():
        model.generate(ids, **GENERATE)
    db = TraceDB.open(tmp_path / "db")
    axes = sorted((w.workload.axes["total_q"], w.workload.axes["total_kv"])
                  for w in db.workloads_for(name))
    # the prefill (2 x 6 queries and keys), then 3 decode steps over the growing cache
    assert axes == [(2, 14), (2, 16), (2, 18), (12, 12)]
    assert {w.workload.axes["len_indptr"] for w in db.workloads_for(name)} == {3}
    assert original_name(name, ragged_prefill) in db.solutions  # the engine's path, a candidate

    measure_captured(tmp_path / "db", [name], "torch_prefill")
    attention.reset()
    with fib.enable_apply(tmp_path / "db", {"check_interval_s": 0}), torch.no_grad():
        served = model(ids).logits
        tokens = model.generate(ids, **GENERATE)
        stats = fib.stats()[name]
    torch.testing.assert_close(served.float(), expected.float(), atol=2e-2, rtol=2e-2)
    assert torch.equal(tokens, expected_tokens)
    assert stats["hits"] == 2 + 2 + 3 * 2 and not stats["fallbacks"], stats
    assert attention.stats() == {"routed": 10, "unchanged": {}}

    assert remove(model) == len(routing.routed)
    assert model.config._attn_implementation == "sdpa"
    with torch.no_grad():
        assert torch.equal(model(ids).logits, expected)


def test_uncovered_calls_reach_sdpa_and_are_counted(tmp_path: Path) -> None:
    model = tiny()
    ids = torch.randint(1, VOCAB, (2, 6))  # no pad id (0)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding: transformers builds a mask tensor
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).logits
    apply(model, db=tmp_path / "db", ops=KINDS)
    with fib.enable_apply(tmp_path / "db"), torch.no_grad():
        assert torch.equal(model(ids, attention_mask=mask).logits, expected)
    assert attention.stats() == {"routed": 0, "unchanged": {"mask": 2}}

    attention.reset()
    model.train()  # autograd records the call: transformers' own attention and gradients
    model(ids).logits.sum().backward()
    model.eval()
    assert attention.stats()["unchanged"] == {"grad": 2}

    layer = model.model.layers[0].self_attn
    q = torch.randn(1, 32, 3, 128, dtype=torch.bfloat16)
    k = torch.randn(1, 8, 3, 128, dtype=torch.bfloat16)
    cases: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("dropout", (q, k, k, None), {"dropout": 0.1}),
        ("not_causal", (q, k, k, None), {"is_causal": False}),
        ("sliding_window", (q, k, k, None), {"sliding_window": 2}),
        ("soft_cap", (q, k, k, None), {"softcap": 30.0}),
        ("sinks", (q, k, k, None), {"s_aux": torch.zeros(32)}),
        ("dtype", (q.float(), k.float(), k.float(), None), {}),
        ("q_longer_than_kv", (q, k[:, :, :2], k[:, :, :2], None), {}),
    ]
    for reason, args, kwargs in cases:
        attention.reset()
        torch.manual_seed(1)
        with torch.no_grad():
            attention.attention_forward(layer, *args, **kwargs)
        assert attention.stats()["unchanged"] == {reason: 1}, reason
    # an uncovered call gives exactly what transformers' sdpa gives
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    with torch.no_grad():
        ours, _ = attention.attention_forward(layer, q, k, k, None, is_causal=False)
        theirs, _ = sdpa_attention_forward(layer, q, k, k, None, is_causal=False)
    assert torch.equal(ours, theirs)


def test_skipped_models_say_why(tmp_path: Path) -> None:
    db = tmp_path / "db"
    routing = apply(tiny(dtype=torch.float32), db=db, ops=KINDS)
    assert routing.skipped["model.layers.0.self_attn"] == (
        "dtype float32 != bfloat16 of gqa_ragged_prefill_causal_h32_kv8_d128")
    routing = apply(tiny(kv_heads=2), db=db, ops=KINDS)
    assert routing.skipped["model.layers.0.self_attn"] == (
        "no gqa_ragged definition named gqa_ragged_prefill_causal_h32_kv2_d128")
    routing = apply(tiny(attn_implementation="eager"), db=db, ops=KINDS)
    assert routing.skipped["model.layers.0.self_attn"].startswith("attn_implementation 'eager'")
    routing = apply(make("mistral"), db=db, ops=KINDS)  # 4 heads of 20: no definition
    assert routing.skipped["model.layers.0.self_attn"] == (
        "no gqa_ragged definition named gqa_ragged_prefill_causal_h4_kv1_d20")
    for model in _made:
        assert model.config._attn_implementation != attention.IMPLEMENTATION


def test_static_cache_prefill_routed_decode_masked(tmp_path: Path) -> None:
    """A static cache's prefill (no mask, keys past q_len empty) is routed on the first q_len
    keys, as transformers' sdpa reads them; its decode steps carry a mask and stay sdpa's."""
    model = tiny()
    ids = torch.randint(1, VOCAB, (1, 5))
    kwargs = {**GENERATE, "cache_implementation": "static"}
    with torch.no_grad():
        expected = model.generate(ids, **kwargs)
    apply(model, db=tmp_path / "db", ops=KINDS)
    with torch.no_grad():
        assert torch.equal(model.generate(ids, **kwargs), expected)
    stats = attention.stats()
    assert stats["routed"] == 2 and stats["unchanged"] == {"mask": 6}, stats


@pytest.mark.parametrize("kv_heads", [8, 4])
@pytest.mark.parametrize("qo,kv", [([0, 6, 12], [0, 6, 12]),  # prefill, uniform
                                   ([0, 1, 2, 3], [0, 7, 14, 21]),  # decode steps
                                   ([0, 3, 4, 9], [0, 8, 8, 12]),  # ragged, an empty sequence
                                   ([0, 4], [0, 2])])  # more queries than keys
def test_original_matches_reference(kv_heads: int, qo: list[int], kv: list[int]) -> None:
    torch.manual_seed(0)
    q = torch.randn(qo[-1], 32, 128, dtype=torch.bfloat16)
    k, v = (torch.randn(kv[-1], kv_heads, 128, dtype=torch.bfloat16) for _ in range(2))
    args = (q, k, v, torch.tensor(qo, dtype=torch.int32), torch.tensor(kv, dtype=torch.int32),
            1 / math.sqrt(128))
    name = f"gqa_ragged_prefill_causal_h32_kv{kv_heads}_d128"
    got, expected = ragged_prefill(*args), reference(name)(*args)
    check = check_outputs(load_catalogue().definitions[name], got, expected)  # retune's test
    assert check.status is Status.PASSED, check
    torch.testing.assert_close(got[1], expected[1], atol=1e-3, rtol=1e-3)  # lse, -inf included


def test_original_is_transformers_sdpa_and_importable() -> None:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    assert original_problem(ragged_prefill) is None
    torch.manual_seed(0)
    batch, n, length = 2, 3, 7  # decode-like chunk over a longer cache, and a prefill
    for n, length in ((1, 7), (5, 5)):
        query = torch.randn(batch, 32, n, 128, dtype=torch.bfloat16)
        key, value = (torch.randn(batch, 8, length, 128, dtype=torch.bfloat16)
                      for _ in range(2))
        layer = type("Attention", (), {"num_key_value_groups": 4, "is_causal": True})()
        expected, _ = sdpa_attention_forward(layer, query, key, value, None, scaling=0.1)
        rows = torch.arange(batch + 1, dtype=torch.int32)
        output, _ = ragged_prefill(
            query.transpose(1, 2).reshape(-1, 32, 128), key.transpose(1, 2).reshape(-1, 8, 128),
            value.transpose(1, 2).reshape(-1, 8, 128), rows * n, rows * length, 0.1)
        assert torch.equal(output.view(batch, n, 32, 128), expected)


def test_torch_compile_fullgraph_takes_sdpa(tmp_path: Path) -> None:
    model = tiny()
    apply(model, db=tmp_path / "db", ops=["attention"])
    layer = model.model.layers[0].self_attn
    hidden = torch.randn(2, 6, 64, dtype=torch.bfloat16)
    position_embeddings = model.model.rotary_emb(hidden, torch.arange(6)[None].expand(2, 6))
    with torch.no_grad():
        expected = layer(hidden, position_embeddings, None)[0]
        attention.reset()
        compiled = torch.compile(lambda h: layer(h, position_embeddings, None)[0],
                                 fullgraph=True, backend="aot_eager")
        assert torch.equal(compiled(hidden), expected)
    assert attention.stats() == {"routed": 0, "unchanged": {}}  # traced: sdpa, uncounted
