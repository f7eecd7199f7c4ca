"""Repeat launches of a Triton kernel at the cost of Triton's own C launcher.

`kernel[grid](...)` binds and specialises every argument again on every call: on the H200
machine's host that is ~9.5 us for an empty kernel and ~12.5 us for a ten-argument one,
several times what the GPU needs for a decode-sized norm. `FastLauncher` lets Triton
compile and launch the first call of each specialisation, keeps the compiled kernel, and
from then on hands the arguments straight to the compiled kernel's launcher.

A specialisation is what Triton keys its compiled kernels on: each tensor's dtype and 16-byte
alignment, each integer's width, being 1 and being a multiple of 16, every constexpr's value,
num_warps and the current device. The fast path reads these with a small function generated
for the kernel's argument kinds (seen at the first call) and passes tensors to the launcher as
device pointers. It takes only calls whose tensors are all on a GPU and 16-byte aligned, and
whose other arguments keep their first call's kinds; every other call, every call while a
launch hook is installed (a profiler), and every call in the interpreter or with
`FIB_TRITON_FAST_LAUNCH=0` takes the ordinary path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
import triton
from triton import knobs
from triton.runtime.jit import JITFunction

KeyFunction = Callable[..., "tuple[tuple[Any, ...], tuple[Any, ...]] | None"]
_I32_MIN, _I32_MAX, _U64_MIN = -(1 << 31), (1 << 31) - 1, 1 << 63


def key_function(constexpr: Sequence[bool], args: Sequence[Any]) -> KeyFunction | None:
    """`f(device, options, *args) -> (key, launch arguments) | None` for calls whose arguments
    have the kinds of `args` (None if an argument is of a kind it cannot key); `options` are
    the launch options (num_warps, num_stages), which the key includes."""
    if len(args) != len(constexpr):
        return None  # the ordinary launch reports the mistake
    guards, pointers, key, launch = [], [], ["device", "options"], []
    for i, (is_constexpr, value) in enumerate(zip(constexpr, args, strict=True)):
        a = f"a{i}"
        if is_constexpr:
            key.append(a)
            launch.append(a)
        elif isinstance(value, torch.Tensor):
            guards.append(f"{a}.is_cuda")
            pointers.append(i)
            key.append(f"{a}.dtype")
            launch.append(f"p{i}")
        elif value is None:
            guards.append(f"{a} is None")
            key.append("None")
            launch.append(a)
        elif type(value) in (bool, float):
            guards.append(f"{a}.__class__ is {type(value).__name__}")
            key.append(a if type(value) is bool else "0")
            launch.append(a)
        elif type(value) is int:
            guards.append(f"{a}.__class__ is int")
            key.append(f"{a} == 1, not {a} & 15, {_I32_MIN} <= {a} <= {_I32_MAX}, {a} < {_U64_MIN}")
            launch.append(a)
        else:
            return None
    names = ", ".join(f"a{i}" for i in range(len(args)))
    lines = [f"def key(device, options, {names}):"]
    if guards:
        lines.append(f"    if not ({' and '.join(guards)}):\n        return None")
    for i in pointers:
        lines.append(f"    p{i} = a{i}.data_ptr()")
    if pointers:
        lines.append(f"    if ({' | '.join(f'p{i}' for i in pointers)}) & 15:\n        return None")
    lines.append(f"    return ({', '.join(key)},), ({', '.join(launch)},)")
    namespace: dict[str, Any] = {}
    exec("\n".join(lines), namespace)  # the code is built above from argument kinds
    return namespace["key"]


def _no_key(*_args: Any) -> None:
    return None


class FastLauncher:
    """`launcher(grid, *args, num_warps=w, num_stages=s)` == `kernel[grid](*args, num_warps=w,
    num_stages=s)`, faster (num_stages may be left out for Triton's default).

    `args` are all of the kernel's parameters, constexprs included, in signature order;
    `grid` is a 3-tuple. `direct` tells (and may be set to choose) whether repeat calls may
    skip Triton's binding; it is False in the interpreter.
    """

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.direct = (isinstance(kernel, JITFunction)
                       and os.environ.get("FIB_TRITON_FAST_LAUNCH", "1") != "0")
        self._constexpr = tuple(p.is_constexpr for p in getattr(kernel, "params", ()))
        self._key: KeyFunction | None = None
        self._compiled: dict[tuple[Any, ...], tuple[Any, Any, Any]] = {}
        self._stream: Any = None

    def __call__(self, grid: tuple[int, int, int], *args: Any, num_warps: int,
                 num_stages: int | None = None) -> None:
        options = num_warps if num_stages is None else (num_warps, num_stages)
        prepared = None
        hook = knobs.runtime.launch_enter_hook
        if self.direct and not getattr(hook, "calls", hook):  # no profiler hook to call
            try:
                key_of = self._key or self._make_key(args)
                prepared = key_of(torch.cuda.current_device(), options, *args)
            except (AttributeError, TypeError):  # an argument of another kind than at first
                prepared = None
        if prepared is None:
            self._ordinary(grid, args, num_warps, num_stages)
            return
        key, launch_args = prepared
        entry = self._compiled.get(key)
        if entry is None:
            self._first_call(key, self._ordinary(grid, args, num_warps, num_stages))
            return
        run, function, metadata = entry
        run(grid[0], grid[1], grid[2], self._stream(key[0]), function, metadata, None, None,
            None, *launch_args)

    def _make_key(self, args: tuple[Any, ...]) -> KeyFunction:
        self._key = key_function(self._constexpr, args) or _no_key
        self.direct = self._key is not _no_key
        return self._key

    def _ordinary(self, grid: tuple[int, int, int], args: tuple[Any, ...], num_warps: int,
                  num_stages: int | None) -> Any:
        """Triton's own launch; returns the compiled kernel."""
        if num_stages is None:
            return self.kernel[grid](*args, num_warps=num_warps)
        return self.kernel[grid](*args, num_warps=num_warps, num_stages=num_stages)

    def _first_call(self, key: tuple[Any, ...], compiled: Any) -> None:
        try:
            self._stream = self._stream or triton.runtime.driver.active.get_current_stream
            self._compiled[key] = (compiled.run, compiled.function, compiled.packed_metadata)
        except AttributeError:  # a Triton whose compiled kernels look different
            self.direct = False
