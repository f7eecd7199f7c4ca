"""The engines' fused add + RMSNorm in Triton, several rows per program, three tile sizes.

A program handles a [ROWS, BLOCK] tile, ROWS = TILE // BLOCK (at least one row), so short
rows (hidden <= 1024: small models) still give every program a full tile, and the warps follow
the tile (a fixed number of elements per thread, up to 16 warps for one long row). Each tile
size is its own solution, so retune picks per batch size. Both results, the rounded sum as the
new residual and the normalised rows, are stored after every load, so the outputs may alias
the inputs (the engines' in-place call costs this one kernel).
"""

import functools

import torch
import triton
import triton.language as tl

from fib_runtime.triton_launch import FastLauncher

# Arguments of any stride and storage offset are handled here (see dispatch.contract).
FIB_ANY_LAYOUT = True

FIB_SOLUTIONS = [
    {
        "variant": "triton_multirow_t1k",
        "entry_points": {
            "fused_add_rmsnorm_residual_h4096": "fused_add_rmsnorm_residual_t1k_eps1e5",
            "fused_add_rmsnorm_residual_h*": "fused_add_rmsnorm_residual_t1k_eps1e6",
        },
        "dtypes": ["bfloat16", "float16", "float32"],
        "language": "triton",
        "destination_passing_style": True,
        "target_hardware": ["nvidia"],
        "dependencies": ["triton", "torch", "fib-runtime"],
        "description": (
            "Triton, tiles of max(1024 elements, one row), 8 elements (a 16-byte bf16 vector) "
            "per thread: the most programs, for small and mid batches. Outputs may alias inputs."
        ),
    },
    {
        "variant": "triton_multirow_t4k",
        "entry_points": {
            "fused_add_rmsnorm_residual_h4096": "fused_add_rmsnorm_residual_t4k_eps1e5",
            "fused_add_rmsnorm_residual_h*": "fused_add_rmsnorm_residual_t4k_eps1e6",
        },
        "dtypes": ["bfloat16", "float16", "float32"],
        "language": "triton",
        "destination_passing_style": True,
        "target_hardware": ["nvidia"],
        "dependencies": ["triton", "torch", "fib-runtime"],
        "description": (
            "Triton, tiles of max(4096 elements, one row), 32 elements per thread: mid to "
            "large batches. Outputs may alias inputs."
        ),
    },
    {
        "variant": "triton_multirow_t16k",
        "entry_points": {
            "fused_add_rmsnorm_residual_h4096": "fused_add_rmsnorm_residual_t16k_eps1e5",
            "fused_add_rmsnorm_residual_h*": "fused_add_rmsnorm_residual_t16k_eps1e6",
        },
        "dtypes": ["bfloat16", "float16", "float32"],
        "language": "triton",
        "destination_passing_style": True,
        "target_hardware": ["nvidia"],
        "dependencies": ["triton", "torch", "fib-runtime"],
        "description": (
            "Triton, tiles of max(16384 elements, one row), 64 elements per thread: large "
            "batches, streaming. Outputs may alias inputs."
        ),
    },
]

# tile name -> (elements per program, elements per thread)
TILES = {"t1k": (1024, 8), "t4k": (4096, 32), "t16k": (16384, 64)}


@triton.jit
def _add_rmsnorm_tile_kernel(
    x_ptr,
    res_ptr,
    w_ptr,
    out_ptr,
    res_out_ptr,
    n_rows,
    stride_x,
    stride_res,
    stride_out,
    stride_res_out,
    HIDDEN: tl.constexpr,
    EPS: tl.constexpr,
    BLOCK: tl.constexpr,
    ROWS: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK)
    if BLOCK == HIDDEN:  # no padding: a per-row mask, constant along each row's vectors
        mask = (rows < n_rows)[:, None]
        w = tl.load(w_ptr + cols).to(tl.float32)
    else:
        mask = (rows < n_rows)[:, None] & (cols < HIDDEN)[None, :]
        w = tl.load(w_ptr + cols, mask=cols < HIDDEN, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0)
    r = tl.load(res_ptr + rows[:, None] * stride_res + cols[None, :], mask=mask, other=0.0)
    x = x.to(tl.float32) + r.to(tl.float32)
    inv_rms = tl.rsqrt(tl.sum(x * x, axis=1) / HIDDEN + EPS)
    tl.store(res_out_ptr + rows[:, None] * stride_res_out + cols[None, :],
             x.to(res_out_ptr.dtype.element_ty), mask=mask)
    y = x * inv_rms[:, None] * w[None, :]
    tl.store(out_ptr + rows[:, None] * stride_out + cols[None, :],
             y.to(out_ptr.dtype.element_ty), mask=mask)


@functools.cache
def _config(hidden: int, tile: str) -> tuple[int, int, int]:
    """(BLOCK, ROWS, num_warps): the row padded to a power of two, TILE // BLOCK rows (at
    least one), warps for the tile's elements per thread (1 to 16)."""
    elements, per_thread = TILES[tile]
    block = triton.next_power_of_2(hidden)
    rows = max(1, elements // block)
    return block, rows, max(1, min(16, rows * block // (32 * per_thread)))


_launchers = {tile: FastLauncher(_add_rmsnorm_tile_kernel) for tile in TILES}


def _unit_columns(t: torch.Tensor) -> torch.Tensor:
    """`t`, or a contiguous copy where its columns have a stride (the kernel's rows are
    unit-stride); a 1-D weight likewise."""
    if t.dim() > 2:
        raise ValueError("fused_add_rmsnorm_residual: 2-D activations and a 1-D weight")
    return t if t.stride(-1) == 1 else t.contiguous()


def _launch(hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
            output: torch.Tensor, residual_out: torch.Tensor, eps: float, tile: str) -> None:
    n_rows, hidden = hidden_states.shape
    if n_rows == 0:
        return
    x, res, w = _unit_columns(hidden_states), _unit_columns(residual), _unit_columns(weight)
    out, res_out = _unit_columns(output), _unit_columns(residual_out)  # copies: written back
    block, rows, warps = _config(hidden, tile)
    _launchers[tile](((n_rows + rows - 1) // rows, 1, 1), x, res, w, out, res_out, n_rows,
                     x.stride(0), res.stride(0), out.stride(0), res_out.stride(0), hidden, eps,
                     block, rows, num_warps=warps)
    for given, written in ((output, out), (residual_out, res_out)):
        if written is not given:
            given.copy_(written)


def fused_add_rmsnorm_residual_t1k_eps1e5(
    hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
    output: torch.Tensor, residual_out: torch.Tensor,
) -> None:
    _launch(hidden_states, residual, weight, output, residual_out, 1e-5, "t1k")


def fused_add_rmsnorm_residual_t1k_eps1e6(
    hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
    output: torch.Tensor, residual_out: torch.Tensor,
) -> None:
    _launch(hidden_states, residual, weight, output, residual_out, 1e-6, "t1k")


def fused_add_rmsnorm_residual_t4k_eps1e5(
    hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
    output: torch.Tensor, residual_out: torch.Tensor,
) -> None:
    _launch(hidden_states, residual, weight, output, residual_out, 1e-5, "t4k")


def fused_add_rmsnorm_residual_t4k_eps1e6(
    hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
    output: torch.Tensor, residual_out: torch.Tensor,
) -> None:
    _launch(hidden_states, residual, weight, output, residual_out, 1e-6, "t4k")


def fused_add_rmsnorm_residual_t16k_eps1e5(
    hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
    output: torch.Tensor, residual_out: torch.Tensor,
) -> None:
    _launch(hidden_states, residual, weight, output, residual_out, 1e-5, "t16k")


def fused_add_rmsnorm_residual_t16k_eps1e6(
    hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
    output: torch.Tensor, residual_out: torch.Tensor,
) -> None:
    _launch(hidden_states, residual, weight, output, residual_out, 1e-6, "t16k")
