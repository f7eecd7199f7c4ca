"""Tiny random HF models for the transformers adapter tests (hidden sizes the catalogue
does not ship, so every definition comes from a family template), and what they route to."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import torch

from fib_runtime.hardware import current_hardware
from fib_runtime.schema import Correctness, Environment, Evaluation, Performance, Status, Trace
from fib_runtime.store import TraceDB

transformers = pytest.importorskip("transformers")
from fib_runtime.adapters.transformers import remove  # noqa: E402

VOCAB, LAYERS = 96, 2


def _llama(eps: float = 1e-5) -> Any:
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=64, intermediate_size=160, num_hidden_layers=LAYERS, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=VOCAB, rms_norm_eps=eps))


def _qwen3(eps: float = 1e-6) -> Any:
    return transformers.Qwen3ForCausalLM(transformers.Qwen3Config(
        hidden_size=96, intermediate_size=192, num_hidden_layers=LAYERS, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, vocab_size=VOCAB, rms_norm_eps=eps))


def _mistral(eps: float = 1e-5) -> Any:
    return transformers.MistralForCausalLM(transformers.MistralConfig(
        hidden_size=80, intermediate_size=224, num_hidden_layers=LAYERS, num_attention_heads=4,
        num_key_value_heads=1, vocab_size=VOCAB, rms_norm_eps=eps, sliding_window=None))


# model factory, then the definitions its routed modules must get
MODELS: dict[str, tuple[Callable[..., Any], dict[str, str]]] = {
    "llama": (_llama, {"norm": "rmsnorm_h64_eps1e-5", "mlp": "silu_and_mul_i160",
                       "rope": "rope_with_cos_sin_cache_neox_style_d16_rd16"}),
    "qwen3": (_qwen3, {"norm": "rmsnorm_h96", "head_norm": "rmsnorm_h32",
                       "mlp": "silu_and_mul_i192",
                       "rope": "rope_with_cos_sin_cache_neox_style_d32_rd32"}),
    "mistral": (_mistral, {"norm": "rmsnorm_h80_eps1e-5", "mlp": "silu_and_mul_i224",
                           "rope": "rope_with_cos_sin_cache_neox_style_d20_rd20"}),
}


_made: list[Any] = []


@pytest.fixture(autouse=True)
def remove_routes() -> Any:
    """Each test's models are unrouted afterwards (rope routing patches a module global);
    test modules import it to use it."""
    yield
    while _made:
        remove(_made.pop())


def make(kind: str, dtype: torch.dtype = torch.bfloat16, seed: int = 0, **kwargs: Any) -> Any:
    torch.manual_seed(seed)
    model = MODELS[kind][0](**kwargs).to(dtype).eval()
    _made.append(model)
    with torch.no_grad():  # non-trivial norm weights, so weight handling is exercised
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.add_(torch.randn_like(param) * 0.1)
    return model


def expected_routes(kind: str) -> dict[str, str]:
    names = MODELS[kind][1]
    routes = {"model.norm": names["norm"], "model.rotary_emb": names["rope"]}
    for i in range(LAYERS):
        layer = f"model.layers.{i}"
        routes[f"{layer}.input_layernorm"] = names["norm"]
        routes[f"{layer}.post_attention_layernorm"] = names["norm"]
        routes[f"{layer}.mlp"] = names["mlp"]
        if "head_norm" in names:
            routes[f"{layer}.self_attn.q_norm"] = names["head_norm"]
            routes[f"{layer}.self_attn.k_norm"] = names["head_norm"]
    return routes


def logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def measured(workload: Trace, solution: str, hardware: str) -> Trace:
    """A PASSED trace of `solution` on a captured workload (stands in for a CPU retune)."""
    evaluation = Evaluation(
        Status.PASSED, Environment(hardware), "2026-12-01T12:00:00+00:00",
        correctness=Correctness(0.0, 0.0), performance=Performance(0.01, 0.02, 2.0))
    return Trace(workload.definition, workload.workload, solution, evaluation)


def measure_captured(root: Path, names: Iterable[str], variant: str = "torch") -> None:
    """Every captured workload of `names` measured for their `variant` solution, so that
    dispatch serves it on this machine."""
    db = TraceDB.open(root)
    hardware = current_hardware().name
    db.append_traces([measured(w, f"{name}__{variant}", hardware)
                      for name in names for w in db.workloads_for(name)])
