"""FastLauncher: the same results as `kernel[grid](...)`, one compiled kernel per
specialisation, the ordinary path in the interpreter and under launch hooks."""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl
from triton import knobs

from fib_runtime.triton_launch import FastLauncher, key_function

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


@triton.jit
def _scale_rows(x_ptr, out_ptr, stride_x, n_cols, FACTOR: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask)
    tl.store(out_ptr + row * n_cols + cols, x * FACTOR, mask=mask)


def _scale(launcher: FastLauncher, x: torch.Tensor, factor: float) -> torch.Tensor:
    rows, cols = x.shape
    out = torch.empty((rows, cols), dtype=x.dtype, device=x.device)
    launcher((rows, 1, 1), x, out, x.stride(0), cols, factor,
             triton.next_power_of_2(cols), num_warps=1)
    return out


class _Pointer:
    """Stands in for a CUDA tensor where no GPU is present (the key code is duck-typed)."""

    def __init__(self, address: int, dtype: torch.dtype = torch.float16, cuda: bool = True):
        self.address, self.dtype, self.is_cuda = address, dtype, cuda

    def data_ptr(self) -> int:
        return self.address


def test_key_function_separates_what_triton_specialises_on():
    constexpr = (False, False, False, True)
    key = key_function(constexpr, (torch.zeros(4), 16, 0.5, 128))
    assert key is not None

    def key_of(*args):
        found = key(0, 4, *args)
        return None if found is None else found[0]

    base = key_of(_Pointer(4096), 32, 0.5, 128)
    assert key_of(_Pointer(8192), 48, 2.0, 128) == base  # same dtype, alignment, int class
    assert key_of(_Pointer(4096, torch.bfloat16), 32, 0.5, 128) != base
    assert key_of(_Pointer(4096), 32, 0.5, 256) != base  # constexpr value
    assert len({key_of(_Pointer(4096), v, 0.5, 128) for v in (1, 16, 32, 17, 33)}) == 3
    assert key_of(_Pointer(4096), 2**31, 0.5, 128) != key_of(_Pointer(4096), 2**31 - 16, 0.5, 128)
    assert key_of(_Pointer(4096), 2**32, 0.5, 128) != key_of(_Pointer(4096), 2**63, 0.5, 128)
    assert key(1, 4, _Pointer(4096), 32, 0.5, 128)[0] != base  # another device
    assert key(0, 8, _Pointer(4096), 32, 0.5, 128)[0] != base  # another num_warps
    assert key(0, 4, _Pointer(4096), 32, 0.5, 128)[1] == (4096, 32, 0.5, 128)  # pointers passed
    # Calls the fast path must not take: unaligned, off the GPU, another kind of argument.
    assert key_of(_Pointer(4098), 32, 0.5, 128) is None
    assert key_of(_Pointer(4096, cuda=False), 32, 0.5, 128) is None
    assert key_of(_Pointer(4096), True, 0.5, 128) is None
    assert key_of(_Pointer(4096), 32, 1, 128) is None
    with pytest.raises(AttributeError):
        key_of(32, 32, 0.5, 128)
    optional = key_function((False, True), (None, 3))  # a pointer left out: Triton's None
    assert optional(0, 4, None, 3) == ((0, 4, None, 3), (None, 3))
    assert optional(0, 4, _Pointer(4096), 3) is None
    assert key_function((False,), ("text",)) is None
    assert key_function((False, False), (1,)) is None


def test_results_match_the_ordinary_launch_for_mixed_shapes_and_strides():
    launcher = FastLauncher(_scale_rows)
    base = torch.randn(9, 40, device=DEVICE)
    cases = [base[:, :33], base[:1, :33], base[2:7, 1:34], base.contiguous()[:, :16], base]
    for _ in range(2):  # the second round repeats every specialisation
        for x in cases:
            torch.testing.assert_close(_scale(launcher, x, 3.0), x * 3.0)
    assert launcher.direct == CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_one_compiled_kernel_per_specialisation_on_gpu():
    launcher = FastLauncher(_scale_rows)
    base = torch.randn(64, 48, device="cuda")
    _scale(launcher, base[:, :32], 2.0)
    for rows in (1, 5, 64):  # another grid, the same specialisation
        x = torch.randn(rows, 48, device="cuda")[:, :32]
        torch.testing.assert_close(_scale(launcher, x, 2.0), x * 2.0)
    assert len(launcher._compiled) == 1
    misaligned = base.view(-1)[1:1 + 63 * 48].view(63, 48)[:, :32]
    for _ in range(2):  # unaligned calls take the ordinary path and are never kept
        torch.testing.assert_close(_scale(launcher, misaligned, 2.0), misaligned * 2.0)
    assert len(launcher._compiled) == 1
    torch.testing.assert_close(_scale(launcher, base[:, :17], 2.0), base[:, :17] * 2.0)
    torch.testing.assert_close(_scale(launcher, base.half()[:, :32], 2.0), base.half()[:, :32] * 2)
    torch.testing.assert_close(_scale(launcher, base[:, :32], 5.0), base[:, :32] * 5.0)
    assert len(launcher._compiled) == 4
    with pytest.raises(ValueError):  # a CPU tensor: Triton's own error, not a crash
        _scale(launcher, base.cpu()[:, :32], 2.0)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_switched_off_by_the_environment(monkeypatch: pytest.MonkeyPatch):
    assert FastLauncher(_scale_rows).direct
    monkeypatch.setenv("FIB_TRITON_FAST_LAUNCH", "0")
    launcher = FastLauncher(_scale_rows)
    x = torch.randn(4, 32, device="cuda")
    for _ in range(2):
        torch.testing.assert_close(_scale(launcher, x, 2.0), x * 2.0)
    assert not launcher.direct and not launcher._compiled


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_launch_options_are_part_of_the_key():
    launcher = FastLauncher(_scale_rows)
    x = torch.randn(6, 64, device="cuda")
    options = [{"num_warps": 1}, {"num_warps": 2}, {"num_warps": 1, "num_stages": 2}]
    for _ in range(2):
        for option in options:
            out = torch.empty_like(x)
            launcher((6, 1, 1), x, out, x.stride(0), 64, 2.0, 64, **option)
            torch.testing.assert_close(out, x * 2.0)
    assert len(launcher._compiled) == 3


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_replays_inside_a_cuda_graph():
    launcher = FastLauncher(_scale_rows)
    x = torch.randn(8, 64, device="cuda")
    _scale(launcher, x, 2.0)  # compiled outside the capture
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        _scale(launcher, x, 2.0)  # warm the side stream too
        with torch.cuda.graph(graph, stream=stream):
            out = _scale(launcher, x, 2.0)
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, x * 2.0)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_a_launch_hook_sees_every_launch():
    launcher = FastLauncher(_scale_rows)
    x = torch.randn(4, 32, device="cuda")
    _scale(launcher, x, 2.0)
    seen: list[object] = []

    def hook(metadata: object) -> None:
        seen.append(metadata)

    knobs.runtime.launch_enter_hook.add(hook)
    try:
        for _ in range(3):
            torch.testing.assert_close(_scale(launcher, x, 2.0), x * 2.0)
    finally:
        knobs.runtime.launch_enter_hook.remove(hook)
    assert len(seen) == 3
