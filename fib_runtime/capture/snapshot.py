"""Host copies of a call's tensors, taken without a device sync (torch imported lazily)."""

from __future__ import annotations

import numbers
import sys
from typing import Any


def is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def copy_to_host(tensors: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """Copies of `tensors` in host memory, and the CUDA events that mark their completion.

    A CUDA tensor is copied into pinned memory with non_blocking=True on the current stream
    of its device and an event is recorded after it: the caller never waits; whoever reads
    the copy first synchronises the event (`wait`). Other tensors are copied synchronously.
    """
    import torch

    host: dict[str, Any] = {}
    devices = set()
    for name, tensor in tensors.items():
        tensor = tensor.detach()
        if tensor.is_cuda:
            copy = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            copy.copy_(tensor, non_blocking=True)
            devices.add(tensor.device)
        else:
            copy = tensor.to("cpu", copy=True)
        host[name] = copy
    events = []
    for device in devices:
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(device))
        events.append(event)
    return host, events


def wait(events: list[Any]) -> None:
    for event in events:
        event.synchronize()


def scalar_value(value: Any) -> int | float | bool | None:
    """A Python scalar for a shape-null input, or None when reading it would need a sync."""
    if isinstance(value, (bool, int, float)):
        return value
    if is_tensor(value):
        return value.item() if value.numel() == 1 and value.device.type == "cpu" else None
    if isinstance(value, numbers.Number) and hasattr(value, "item"):  # numpy scalars
        return value.item()
    return None


def nbytes(tensor: Any) -> int:
    return tensor.numel() * tensor.element_size()
