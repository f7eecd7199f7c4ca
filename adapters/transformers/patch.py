"""`apply(model)` / `remove(model)`: route an HF transformers model's ops through fib-runtime.

A module is routed only when every constant of its definition matches (hidden size, eps,
dtype) and the database holds a solution for that definition; everything else keeps its own
forward and is listed in `Routing.skipped` with the reason.
"""

from __future__ import annotations

import inspect
import logging
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from fib_runtime.adapters.transformers import attention, hub, ops, rope, sdpa
from fib_runtime.adapters.transformers.forwards import (
    GATE_UP,
    ROUTE,
    Route,
    fused_gate_up,
    mlp_forward,
    norm_forward,
)
from fib_runtime.adapters.transformers.routing import Routing
from torch import nn

import fib_runtime as fib
from fib_runtime import families
from fib_runtime.catalogue import install, load_catalogue
from fib_runtime.errors import FibError
from fib_runtime.paths import default_db_path
from fib_runtime.schema import AxisConst, Definition
from fib_runtime.store import TraceDB
from fib_runtime.tensors import torch_dtype

log = logging.getLogger("fib_runtime.adapters.transformers")
KINDS = ("rmsnorm", "silu_and_mul", "rope", "attention")
# Attention is routed only when asked for (ops=KINDS or ["attention", ...]): its original,
# transformers' sdpa, must compute the definition's lse in an extra pass that the model's
# own call never pays, so retune times the engine's path slower than it runs; until that
# comparison is fair and measured on a GPU, routing it could serve a candidate slower than
# the unrouted model.
DEFAULT_KINDS = ("rmsnorm", "silu_and_mul", "rope")
# Classes whose forward is exactly `weight * (x.float() * rsqrt(mean(x^2) + eps)).to(dtype)`
# (read in transformers 5.17) and the gated MLPs `down(act(gate(x)) * up(x))`.
NORMS = frozenset({"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"})
MLPS = frozenset({"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP"})
ROTARIES = frozenset({"LlamaRotaryEmbedding", "MistralRotaryEmbedding", "Qwen2RotaryEmbedding",
                      "Qwen3RotaryEmbedding"})
# Attentions that call `ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation)`
ATTENTIONS = frozenset({"LlamaAttention", "MistralAttention", "Qwen2Attention",
                        "Qwen3Attention"})
SAVED = "_fib_saved_forward"
_NO_FORWARD = object()  # the module had no instance-level forward before apply


def apply(model: nn.Module, *, ops: Iterable[str] | Mapping[str, str | None] | None = None,
          db: TraceDB | str | Path | None = None) -> Routing:
    """Route `model`'s RMSNorms, SiLU-and-mul MLPs and rotary embedding through fib-runtime
    definitions (generated from the definition families where the catalogue has none), and,
    when asked for, its sdpa attention through transformers' AttentionInterface (see
    attention.py).

    `ops`: the kinds to route (default DEFAULT_KINDS: all of KINDS but attention), or a
    mapping kind -> definition name that pins the definition (a pinned one whose constants
    differ is skipped, never routed). `db`: the database that receives the catalogue and the
    family definitions this model needs (default `$FIB_DATASET_PATH`, else
    ~/.cache/fib_runtime/db). Nothing runs differently until dispatch or capture is on
    (`fib.enable_apply`, `fib.enable_capture`).
    """
    wanted = dict(ops) if isinstance(ops, Mapping) else dict.fromkeys(ops or DEFAULT_KINDS)
    unknown = set(wanted) - set(KINDS)
    if unknown:
        raise FibError(f"apply(ops=...): unknown kinds {sorted(unknown)} (known: {KINDS})")
    database = db if isinstance(db, TraceDB) else TraceDB.open(db or default_db_path(),
                                                               create=True)
    catalogue = load_catalogue()
    known = {**catalogue.definitions, **database.definitions}
    routing, plans, generated = Routing(), [], {}
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    for path, module in model.named_modules():
        kind = _kind(module)
        if kind is None:
            continue
        if SAVED in module.__dict__:
            routing.skipped[path] = "already routed (call remove first)"
            continue
        if kind not in wanted:
            routing.skipped[path] = f"{kind} not in ops"
            continue
        planned = _PLANNERS[kind](module, known, wanted[kind], dtype)
        if isinstance(planned, str):
            routing.skipped[path] = planned
            continue
        plans.append((path, module, kind, planned))
        if planned.name not in known:
            generated[planned.name] = known[planned.name] = planned
    install(database, load_catalogue(generated=generated.values()) if generated else catalogue)
    routing.generated = sorted(generated)
    served = {s.definition for s in database.solutions.values()}
    for path, module, kind, definition in plans:
        if definition.name not in served:
            routing.skipped[path] = f"no solution serves {definition.name}"
            continue
        routing.routed[path] = definition.name
        routing.hooks[path] = _bind(module, kind, definition)
    fib.reload()  # an active dispatch runtime sees the new definitions now
    return routing


def remove(model: nn.Module) -> int:
    """Restore every routed module's original forward; returns how many were restored.
    Fused gate/up weights keep their values (the projections hold views of the fused one)."""
    restored = 0
    for module in model.modules():
        if SAVED not in module.__dict__:
            continue
        saved = module.__dict__.pop(SAVED)
        module.__dict__.pop(ROUTE, None)
        module.__dict__.pop("forward", None)
        if saved is not _NO_FORWARD:
            module.__dict__["forward"] = saved
        module.__dict__.pop(GATE_UP, None)
        if _kind(module) == "rope":
            rope.unbind(module)
        elif _kind(module) == "attention":
            attention.unbind(module)
        restored += 1
    return restored


# -- what a module is, and whether a definition fits it ---------------------------------------

def _kind(module: nn.Module) -> str | None:
    name = type(module).__name__
    if name.endswith("RMSNorm"):
        return "rmsnorm"
    if name.endswith("MLP") and all(hasattr(module, p) for p in ("gate_proj", "up_proj",
                                                                  "down_proj")):
        return "silu_and_mul"
    if name.endswith("RotaryEmbedding"):
        return "rope"
    if name.endswith("Attention"):
        return "attention"
    return None


def _const(definition: Definition, axis: str) -> int | None:
    value = definition.axes.get(axis)
    return value.value if isinstance(value, AxisConst) else None


def _dtype_name(dtype: torch.dtype | None) -> str:
    return str(dtype).removeprefix("torch.")


def _unsupported(dtype: torch.dtype | None) -> str | None:
    """Why no family definition fits a dtype (None: one does)."""
    name = _dtype_name(dtype)
    if name in families.DTYPE_SUFFIXES:
        return None
    return f"dtype {name}: definitions come in {', '.join(families.DTYPE_SUFFIXES)}"


def _dtype_reason(definition: Definition, tensor: torch.Tensor, input_name: str) -> str | None:
    dtype = definition.inputs[input_name].dtype
    if tensor.dtype != torch_dtype(dtype):
        return f"dtype {_dtype_name(tensor.dtype)} != {dtype} of {definition.name}"
    return None


def _pinned(known: Mapping[str, Definition], name: str, op_type: str) -> Definition | str:
    definition = known.get(name)
    if definition is None or definition.op_type != op_type:
        return f"no {op_type} definition named {name}"
    return definition


def _plan_norm(module: nn.Module, known: Mapping[str, Definition], pinned: str | None,
               dtype: torch.dtype | None) -> Definition | str:
    cls = type(module)
    if cls.__name__ not in NORMS:
        return f"unsupported variant {cls.__name__}" + (
            ": output * (1 + weight) (Gemma-style)" if _one_plus_weight(cls) else "")
    weight = getattr(module, "weight", None)
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
    if not isinstance(weight, torch.Tensor) or weight.dim() != 1 or eps is None:
        return "no 1-D weight or eps"
    hidden = weight.numel()
    unsupported = _unsupported(weight.dtype)
    if unsupported:
        return unsupported
    definition = (_pinned(known, pinned, "rmsnorm") if pinned else
                  families.resolve("rmsnorm", known, _dtype_name(weight.dtype),
                                   hidden_size=hidden, eps=float(eps)))
    if isinstance(definition, str):
        return definition
    if "residual" in definition.inputs:
        return f"{definition.name} is a fused residual-add norm"
    if _const(definition, "hidden_size") != hidden:
        return f"hidden size {hidden} != {_const(definition, 'hidden_size')} of {definition.name}"
    official = families.eps_of(definition)
    if official != float(eps):
        return f"eps mismatch: module eps {eps!r} != {official!r} of {definition.name}"
    return _dtype_reason(definition, weight, "weight") or definition


def _plan_mlp(module: nn.Module, known: Mapping[str, Definition], pinned: str | None,
              dtype: torch.dtype | None) -> Definition | str:
    cls = type(module)
    if cls.__name__ not in MLPS:
        return f"unsupported variant {cls.__name__}"
    gate, up = module.gate_proj, module.up_proj
    if not (type(gate) is nn.Linear and type(up) is nn.Linear and
            type(module.down_proj) is nn.Linear):
        return "gate/up/down projections are not plain nn.Linear (quantized or sharded?)"
    if gate.bias is not None or up.bias is not None:
        return "gate/up projections have a bias"
    act = getattr(module, "act_fn", None)
    if not (isinstance(act, nn.SiLU) or type(act).__name__ == "SiLUActivation"):
        return f"activation {type(act).__name__} is not SiLU"
    inter = gate.weight.shape[0]
    if up.weight.shape != gate.weight.shape:
        return "gate and up projections differ in shape"
    unsupported = _unsupported(gate.weight.dtype)
    if unsupported:
        return unsupported
    definition = (_pinned(known, pinned, "activation") if pinned else
                  families.resolve("silu_and_mul", known, _dtype_name(gate.weight.dtype),
                                   intermediate_size=inter))
    if isinstance(definition, str):
        return definition
    if _const(definition, "intermediate_size") != inter:
        return (f"intermediate size {inter} != {_const(definition, 'intermediate_size')} "
                f"of {definition.name}")
    return (_dtype_reason(definition, gate.weight, "gate_up") or
            _dtype_reason(definition, up.weight, "gate_up") or definition)


def _plan_rope(module: nn.Module, known: Mapping[str, Definition], pinned: str | None,
               dtype: torch.dtype | None) -> Definition | str:
    cls = type(module).__name__
    config = getattr(module, "config", None)
    if cls not in ROTARIES or config is None or rope.modeling_module(module) is None:
        return f"unsupported variant {cls}"
    if getattr(config, "partial_rotary_factor", 1.0) != 1.0:
        return "partial rotary embedding (the routed path rotates the whole head)"
    head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    unsupported = _unsupported(dtype)
    if unsupported:
        return unsupported
    definition = (_pinned(known, pinned, "rope") if pinned else
                  families.resolve("rope", known, _dtype_name(dtype), head_size=head,
                                   rotary_dim=head))
    if isinstance(definition, str):
        return definition
    if (_const(definition, "head_size"), _const(definition, "rotary_dim")) != (head, head):
        return f"head size {head} (all rotated) does not fit {definition.name}"
    wanted = definition.inputs["q"].dtype
    if dtype != torch_dtype(wanted):
        return f"dtype {str(dtype).removeprefix('torch.')} != {wanted} of {definition.name}"
    return definition


def _plan_attention(module: nn.Module, known: Mapping[str, Definition], pinned: str | None,
                    dtype: torch.dtype | None) -> Definition | str:
    cls = type(module).__name__
    config = getattr(module, "config", None)
    if cls not in ATTENTIONS or config is None:
        return f"unsupported variant {cls}"
    implementation = config._attn_implementation
    if implementation != "sdpa":
        return (f"attn_implementation {implementation!r}: only 'sdpa' is routed (its calls "
                "that no definition covers stay sdpa's)")
    window = getattr(module, "sliding_window", None) or getattr(config, "sliding_window", None)
    if window is not None:
        return f"sliding window {window} (the definitions are full causal)"
    if getattr(config, "attn_logit_softcapping", None):
        return "attention logit soft-cap (the definitions model none)"
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = module.head_dim
    name = pinned or attention.definition_name(heads, kv_heads, head_dim)
    definition = known.get(name)
    if definition is None or definition.op_type != "gqa_ragged":
        return f"no gqa_ragged definition named {name}"
    shape = (_const(definition, "num_qo_heads"), _const(definition, "num_kv_heads"),
             _const(definition, "head_dim"))
    if shape != (heads, kv_heads, head_dim):
        return (f"heads {heads}, kv heads {kv_heads}, head_dim {head_dim} do not fit "
                f"{definition.name}")
    wanted = definition.inputs["q"].dtype
    if dtype != torch_dtype(wanted):
        return f"dtype {_dtype_name(dtype)} != {wanted} of {definition.name}"
    return definition


_PLANNERS: dict[str, Any] = {"rmsnorm": _plan_norm, "silu_and_mul": _plan_mlp,
                             "rope": _plan_rope, "attention": _plan_attention}


def _one_plus_weight(cls: type) -> bool:
    try:
        source = inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return False
    return "1.0 + self.weight" in source or "1 + self.weight" in source


# -- binding ----------------------------------------------------------------------------------

def _bind(module: nn.Module, kind: str, definition: Definition) -> str:
    """Set the module's route and forward; returns the hook used ('kernels' or 'instance')."""
    module.__dict__[SAVED] = module.__dict__.get("forward", _NO_FORWARD)
    if kind == "rmsnorm":
        eps = families.eps_of(definition)
        dtype = torch_dtype(definition.inputs["hidden_states"].dtype)
        site = ops.site(definition.name, ops.rmsnorm_original(float(eps)))
        module.__dict__[ROUTE] = Route(definition.name, site, dtype)
        try:
            if hub.kernelize(module, module.weight.device.type):
                return "kernels"
        except Exception as exc:  # kernels refused (device type, version): bind ourselves
            log.info("kernelize of %s failed, binding per instance: %s",
                     type(module).__name__, exc)
        module.forward = types.MethodType(norm_forward, module)
        return "instance"
    if kind == "attention":
        config = module.config
        route = Route(definition.name, ops.site(definition.name, sdpa.ragged_prefill),
                      torch_dtype(definition.inputs["q"].dtype),
                      (config.num_attention_heads, config.num_key_value_heads, module.head_dim))
        attention.bind(module, route)
        return "AttentionInterface"
    if kind == "rope":
        dtype = torch_dtype(definition.inputs["q"].dtype)
        modeling = rope.modeling_module(module)
        assert modeling is not None  # _plan_rope checked it
        site = ops.site(definition.name, rope.rope_original(modeling))
        rope.bind(module, Route(definition.name, site, dtype))
        return "instance + apply_rotary_pos_emb"
    # fused now, not on the first call (and again on any call after the weights changed)
    fused_gate_up(module, module.gate_proj.weight, module.up_proj.weight)
    dtype = torch_dtype(definition.inputs["gate_up"].dtype)
    module.__dict__[ROUTE] = Route(definition.name, ops.site(definition.name, ops.silu_and_mul),
                                   dtype)
    module.forward = types.MethodType(mlp_forward, module)
    return "instance"
