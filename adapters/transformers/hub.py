"""Routing through the `kernels` package, the hook transformers provides for its layers.

transformers marks e.g. `LlamaRMSNorm` with `use_kernel_forward_from_hub("RMSNorm")`;
`kernels.kernelize` then replaces a marked module's forward with the forward of the layer
that the active kernel mapping names for its device. Here the mapping points at an
in-process layer repository whose `FibRMSNorm` layer calls the module's fib-runtime route.
Without `kernels` (or for an unmarked module) `apply` binds the same forward per instance.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from fib_runtime.adapters.transformers.forwards import norm_forward
from torch import nn


class FibRMSNorm(nn.Module):
    """A stateless kernels layer: the forward of a routed RMSNorm module."""

    can_torch_compile = True
    has_backward = False

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return norm_forward(self, hidden_states)


class LayerRepository:
    """A kernels repository (its protocol is `load() -> layer class`) held in this process,
    so nothing is downloaded."""

    def __init__(self, layer: type[nn.Module]) -> None:
        self.layer = layer

    def load(self) -> type[nn.Module]:
        return self.layer

    def __str__(self) -> str:
        return f"fib-runtime in-process layer `{self.layer.__name__}`"


LAYERS = {"RMSNorm": LayerRepository(FibRMSNorm)}


def kernels_available() -> bool:
    try:
        import kernels  # noqa: F401
    except ImportError:
        return False
    return True


def kernelize(module: nn.Module, device_type: str) -> bool:
    """Route a marked module through kernels' mapping; True when its forward is now ours."""
    layer_name = getattr(type(module), "kernel_layer_name", None)
    repo = LAYERS.get(str(layer_name))
    if repo is None or not kernels_available():
        return False
    from kernels import Mode, use_kernel_mapping
    from kernels import kernelize as kernels_kernelize

    with use_kernel_mapping({str(layer_name): {device_type: repo}}, inherit_mapping=False):
        kernels_kernelize(module, mode=Mode.INFERENCE, device=device_type)
    forward: Any = module.__dict__.get("forward")
    return isinstance(forward, types.MethodType) and forward.__func__ is FibRMSNorm.forward
