"""Decode GEMM C = A @ B^T in Triton with split-K: the weight read once, by many programs.

At decode sizes (M up to 64) a GEMM is bound by reading B once; what matters is that every SM
streams its own part of B with enough bytes in flight. Each program computes a [BLOCK_M,
BLOCK_N] tile of C over 1/SPLIT_K of the reduction, so N / BLOCK_N * SPLIT_K programs share
the weight; BLOCK_M covers M (16, 32 or 64 rows, so B is read once up to M = 64). With
SPLIT_K > 1 the partial tiles go to a float32 workspace [SPLIT_K, M, N] and a second kernel
sums them in a fixed order and rounds once (deterministic, no atomics, no zero fill). Each
split is its own solution, so retune picks per definition and M; above M = 256 every variant
runs unsplit (the row tiles fill the GPU, and the workspace would grow with M).
"""

import torch
import triton
import triton.language as tl

from fib_runtime.triton_launch import FastLauncher

# Arguments of any stride and storage offset are handled here (see dispatch.contract).
FIB_ANY_LAYOUT = True

FIB_SOLUTIONS = [
    {
        "variant": "triton_splitk1",
        "families": ["gemm"],
        "definitions": ["gemm_n*_k*"],
        "entry_point": "gemm_split1",
        "dtypes": ["bfloat16", "float16"],
        "language": "triton",
        "destination_passing_style": False,
        "target_hardware": ["nvidia"],
        "dependencies": ["triton", "torch", "fib-runtime"],
        "description": (
            "Triton decode GEMM, no split: [16-64, 64] tiles of C over the whole K in 128-deep "
            "steps (4 warps, 4 stages), one launch. For wide N (28672: 448 programs), where "
            "the N tiles alone fill the GPU."
        ),
    },
    {
        "variant": "triton_splitk4",
        "families": ["gemm"],
        "definitions": ["gemm_n*_k*"],
        "entry_point": "gemm_split4",
        "dtypes": ["bfloat16", "float16"],
        "language": "triton",
        "destination_passing_style": False,
        "target_hardware": ["nvidia"],
        "dependencies": ["triton", "torch", "fib-runtime"],
        "description": (
            "Triton decode GEMM, K split in 4: [16-64, 64] tiles, float32 partials summed by "
            "a second kernel (two launches). N = 4096-6144: 256-384 programs stream B."
        ),
    },
    {
        "variant": "triton_splitk8",
        "families": ["gemm"],
        "definitions": ["gemm_n*_k*"],
        "entry_point": "gemm_split8",
        "dtypes": ["bfloat16", "float16"],
        "language": "triton",
        "destination_passing_style": False,
        "target_hardware": ["nvidia"],
        "dependencies": ["triton", "torch", "fib-runtime"],
        "description": (
            "Triton decode GEMM, K split in 8: [16-64, 32] tiles, float32 partials summed by "
            "a second kernel (two launches). Most programs per weight: narrow N, long K "
            "(4096 x 14336: 1024 programs)."
        ),
    },
]

# split -> (BLOCK_N, BLOCK_K, SPLIT_K, num_warps, num_stages)
CONFIGS = {1: (64, 128, 1, 4, 4), 4: (64, 128, 4, 4, 4), 8: (32, 128, 8, 4, 4)}
SUM_BLOCK = 1024
MAX_SPLIT_M = 256  # larger M runs unsplit (split 1's tiles)


@triton.jit
def _splitk_kernel(
    a_ptr,
    b_ptr,
    c_ptr,
    M,
    N,
    K,
    stride_am,
    stride_ak,
    stride_bn,
    stride_bk,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr,
    EVEN_K: tl.constexpr,
):
    pid_m = tl.program_id(0)  # fastest: the row tiles of one B slice run together (L2)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    steps = tl.cdiv(tl.cdiv(K, BLOCK_K), SPLIT_K)  # K steps per split
    k0 = pid_k * steps * BLOCK_K
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    # Out-of-range rows/columns wrap around instead of being masked: loads stay unconditional.
    a_ptrs = (a_ptr + (rows % M).to(tl.int64)[:, None] * stride_am
              + (k0 + ks).to(tl.int64)[None, :] * stride_ak)
    b_ptrs = (b_ptr + (cols % N).to(tl.int64)[None, :] * stride_bn
              + (k0 + ks).to(tl.int64)[:, None] * stride_bk)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for step in range(0, steps):
        if EVEN_K:
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
        else:
            k_left = K - k0 - step * BLOCK_K
            a = tl.load(a_ptrs, mask=ks[None, :] < k_left, other=0.0)
            b = tl.load(b_ptrs, mask=ks[:, None] < k_left, other=0.0)
        acc = tl.dot(a, b, acc)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    mask = (rows < M)[:, None] & (cols < N)[None, :]
    # C (SPLIT_K == 1) or the workspace slice of this split, both [M, N] row-major.
    c_ptrs = c_ptr + pid_k.to(tl.int64) * M * N + rows.to(tl.int64)[:, None] * N + cols[None, :]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _sum_splits_kernel(ws_ptr, c_ptr, MN, SPLIT_K: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < MN
    acc = tl.load(ws_ptr + offs, mask=mask, other=0.0)
    for s in tl.static_range(1, SPLIT_K):
        acc += tl.load(ws_ptr + s * MN + offs, mask=mask, other=0.0)
    tl.store(c_ptr + offs, acc.to(c_ptr.dtype.element_ty), mask=mask)


_tiles = {split: FastLauncher(_splitk_kernel) for split in CONFIGS}
_sums = FastLauncher(_sum_splits_kernel)


def _launch(A: torch.Tensor, B: torch.Tensor, split: int) -> torch.Tensor:
    (m, k), n = A.shape, B.shape[0]
    # Past decode sizes the row tiles alone fill the GPU: no split, no workspace.
    block_n, block_k, split_k, warps, stages = CONFIGS[split if m <= MAX_SPLIT_M else 1]
    C = torch.empty((m, n), dtype=A.dtype, device=A.device)
    if m == 0:
        return C
    block_m = min(64, max(16, triton.next_power_of_2(m)))
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n), split_k)
    even = k % (block_k * split_k) == 0
    target = C if split_k == 1 else torch.empty((split_k, m, n), dtype=torch.float32,
                                                device=A.device)
    _tiles[split_k](grid, A, B, target, m, n, k, *A.stride(), *B.stride(), block_m, block_n,
                  block_k, split_k, even, num_warps=warps, num_stages=stages)
    if split_k > 1:
        _sums((triton.cdiv(m * n, SUM_BLOCK), 1, 1), target, C, m * n, split_k, SUM_BLOCK,
              num_warps=4)
    return C


def gemm_split1(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    return _launch(A, B, 1)


def gemm_split4(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    return _launch(A, B, 4)


def gemm_split8(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    return _launch(A, B, 8)
