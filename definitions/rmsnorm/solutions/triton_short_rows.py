"""RMSNorm for short rows (per-head q/k norms, small models) in Triton, three tile sizes.

One kernel; each tile size is its own solution, so retune picks per batch size. A program
normalises a [ROWS, BLOCK] tile, ROWS = TILE // BLOCK, so short rows still give each program
a full tile, and the warps follow the tile (a fixed number of elements per thread). Rows are
addressed through a (token, head) pair of strides: the per-head case, a [tokens, heads,
head_dim] view into a fused qkv buffer that a 2-D reshape would copy, is read in place.
Loads are 16-byte vectors where strides allow (Triton specialises strides divisible by 16);
rows without padding are masked per row only, which keeps the vectors.
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
        "variant": "triton_short_t1k",
        "families": ["rmsnorm"],
        "entry_points": {
            "rmsnorm_h[1-9][0-9][0-9]_eps1e-5": "rmsnorm_t1k_eps1e5",
            "rmsnorm_h1024_eps1e-5": "rmsnorm_t1k_eps1e5",
            "rmsnorm_h[1-9][0-9][0-9]_eps1e-6": "rmsnorm_t1k_eps1e6",
            "rmsnorm_h1024_eps1e-6": "rmsnorm_t1k_eps1e6",
            "rmsnorm_h[1-9][0-9][0-9]": "rmsnorm_t1k_eps1e6",
            "rmsnorm_h1024": "rmsnorm_t1k_eps1e6",
        },
        "dtypes": ["bfloat16", "float16", "float32"],
        "language": "triton",
        "destination_passing_style": False,
        "target_hardware": ["nvidia"],
        "dependencies": ["triton", "torch", "fib-runtime"],
        "description": (
            "Triton, hidden 100-1024: 1024-element tiles, 8 elements (one 16-byte bf16 vector) "
            "per thread: the most programs, for small and mid batches where the whole call is "
            "one memory round trip. 3-D [tokens, heads, head_dim] views are read in place."
        ),
    },
    {
        "variant": "triton_short_t4k",
        "families": ["rmsnorm"],
        "entry_points": {
            "rmsnorm_h[1-9][0-9][0-9]_eps1e-5": "rmsnorm_t4k_eps1e5",
            "rmsnorm_h1024_eps1e-5": "rmsnorm_t4k_eps1e5",
            "rmsnorm_h[1-9][0-9][0-9]_eps1e-6": "rmsnorm_t4k_eps1e6",
            "rmsnorm_h1024_eps1e-6": "rmsnorm_t4k_eps1e6",
            "rmsnorm_h[1-9][0-9][0-9]": "rmsnorm_t4k_eps1e6",
            "rmsnorm_h1024": "rmsnorm_t4k_eps1e6",
        },
        "dtypes": ["bfloat16", "float16", "float32"],
        "language": "triton",
        "destination_passing_style": False,
        "target_hardware": ["nvidia"],
        "dependencies": ["triton", "torch", "fib-runtime"],
        "description": (
            "Triton, hidden 100-1024: 4096-element tiles, 32 elements per thread (4 warps): "
            "mid to large batches. 3-D [tokens, heads, head_dim] views are read in place."
        ),
    },
    {
        "variant": "triton_short_t16k",
        "families": ["rmsnorm"],
        "entry_points": {
            "rmsnorm_h[1-9][0-9][0-9]_eps1e-5": "rmsnorm_t16k_eps1e5",
            "rmsnorm_h1024_eps1e-5": "rmsnorm_t16k_eps1e5",
            "rmsnorm_h[1-9][0-9][0-9]_eps1e-6": "rmsnorm_t16k_eps1e6",
            "rmsnorm_h1024_eps1e-6": "rmsnorm_t16k_eps1e6",
            "rmsnorm_h[1-9][0-9][0-9]": "rmsnorm_t16k_eps1e6",
            "rmsnorm_h1024": "rmsnorm_t16k_eps1e6",
        },
        "dtypes": ["bfloat16", "float16", "float32"],
        "language": "triton",
        "destination_passing_style": False,
        "target_hardware": ["nvidia"],
        "dependencies": ["triton", "torch", "fib-runtime"],
        "description": (
            "Triton, hidden 100-1024: 16384-element tiles, 64 elements per thread (8 warps): "
            "large batches, streaming. 3-D [tokens, heads, head_dim] views are read in place."
        ),
    },
    {
        "variant": "triton_short_t1k",
        "families": ["fused_add_rmsnorm"],
        "entry_points": {
            "fused_add_rmsnorm_h[1-9][0-9][0-9]_eps1e-5": "fused_add_rmsnorm_t1k_eps1e5",
            "fused_add_rmsnorm_h1024_eps1e-5": "fused_add_rmsnorm_t1k_eps1e5",
            "fused_add_rmsnorm_h[1-9][0-9][0-9]_eps1e-6": "fused_add_rmsnorm_t1k_eps1e6",
            "fused_add_rmsnorm_h1024_eps1e-6": "fused_add_rmsnorm_t1k_eps1e6",
            "fused_add_rmsnorm_h[1-9][0-9][0-9]": "fused_add_rmsnorm_t1k_eps1e6",
            "fused_add_rmsnorm_h1024": "fused_add_rmsnorm_t1k_eps1e6",
        },
        "dtypes": ["bfloat16", "float16", "float32"],
        "language": "triton",
        "destination_passing_style": False,
        "target_hardware": ["nvidia"],
        "dependencies": ["triton", "torch", "fib-runtime"],
        "description": (
            "Triton, hidden 100-1024: residual add in float32 and RMSNorm on 1024-element "
            "tiles, 8 elements per thread; inputs never written. Small and mid batches."
        ),
    },
    {
        "variant": "triton_short_t4k",
        "families": ["fused_add_rmsnorm"],
        "entry_points": {
            "fused_add_rmsnorm_h[1-9][0-9][0-9]_eps1e-5": "fused_add_rmsnorm_t4k_eps1e5",
            "fused_add_rmsnorm_h1024_eps1e-5": "fused_add_rmsnorm_t4k_eps1e5",
            "fused_add_rmsnorm_h[1-9][0-9][0-9]_eps1e-6": "fused_add_rmsnorm_t4k_eps1e6",
            "fused_add_rmsnorm_h1024_eps1e-6": "fused_add_rmsnorm_t4k_eps1e6",
            "fused_add_rmsnorm_h[1-9][0-9][0-9]": "fused_add_rmsnorm_t4k_eps1e6",
            "fused_add_rmsnorm_h1024": "fused_add_rmsnorm_t4k_eps1e6",
        },
        "dtypes": ["bfloat16", "float16", "float32"],
        "language": "triton",
        "destination_passing_style": False,
        "target_hardware": ["nvidia"],
        "dependencies": ["triton", "torch", "fib-runtime"],
        "description": (
            "Triton, hidden 100-1024: residual add in float32 and RMSNorm on 4096-element "
            "tiles, 32 elements per thread; inputs never written. Mid to large batches."
        ),
    },
    {
        "variant": "triton_short_t16k",
        "families": ["fused_add_rmsnorm"],
        "entry_points": {
            "fused_add_rmsnorm_h[1-9][0-9][0-9]_eps1e-5": "fused_add_rmsnorm_t16k_eps1e5",
            "fused_add_rmsnorm_h1024_eps1e-5": "fused_add_rmsnorm_t16k_eps1e5",
            "fused_add_rmsnorm_h[1-9][0-9][0-9]_eps1e-6": "fused_add_rmsnorm_t16k_eps1e6",
            "fused_add_rmsnorm_h1024_eps1e-6": "fused_add_rmsnorm_t16k_eps1e6",
            "fused_add_rmsnorm_h[1-9][0-9][0-9]": "fused_add_rmsnorm_t16k_eps1e6",
            "fused_add_rmsnorm_h1024": "fused_add_rmsnorm_t16k_eps1e6",
        },
        "dtypes": ["bfloat16", "float16", "float32"],
        "language": "triton",
        "destination_passing_style": False,
        "target_hardware": ["nvidia"],
        "dependencies": ["triton", "torch", "fib-runtime"],
        "description": (
            "Triton, hidden 100-1024: residual add in float32 and RMSNorm on 16384-element "
            "tiles, 64 elements per thread; inputs never written. Large batches, streaming."
        ),
    },
]

# tile name -> (elements per program, elements per thread)
TILES = {"t1k": (1024, 8), "t4k": (4096, 32), "t16k": (16384, 64)}


@triton.jit
def _short_rows_kernel(
    x_ptr,
    res_ptr,
    w_ptr,
    out_ptr,
    n_rows,
    heads,
    stride_xt,
    stride_xh,
    stride_r,
    HIDDEN: tl.constexpr,
    EPS: tl.constexpr,
    BLOCK: tl.constexpr,
    ROWS: tl.constexpr,
    PER_HEAD: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK)
    if BLOCK == HIDDEN:  # no padding: a per-row mask, constant along each row's vectors
        mask = (rows < n_rows)[:, None]
        w = tl.load(w_ptr + cols).to(tl.float32)
    else:
        mask = (rows < n_rows)[:, None] & (cols < HIDDEN)[None, :]
        w = tl.load(w_ptr + cols, mask=cols < HIDDEN, other=0.0).to(tl.float32)
    if PER_HEAD:  # noqa: SIM108 (a constexpr branch: only one side is compiled)
        x_rows = (rows // heads) * stride_xt + (rows % heads) * stride_xh
    else:
        x_rows = rows * stride_xt
    x = tl.load(x_ptr + x_rows[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        r = tl.load(res_ptr + rows[:, None] * stride_r + cols[None, :], mask=mask, other=0.0)
        x += r.to(tl.float32)
    inv_rms = tl.rsqrt(tl.sum(x * x, axis=1) / HIDDEN + EPS)
    y = x * inv_rms[:, None] * w[None, :]
    tl.store(out_ptr + rows[:, None] * HIDDEN + cols[None, :],
             y.to(out_ptr.dtype.element_ty), mask=mask)


@functools.cache
def _config(hidden: int, tile: str) -> tuple[int, int, int]:
    """(BLOCK, ROWS, num_warps): the row padded to a power of two, TILE // BLOCK rows (at
    least one), warps for the tile's elements per thread (1 to 16)."""
    elements, per_thread = TILES[tile]
    block = triton.next_power_of_2(hidden)
    rows = max(1, elements // block)
    return block, rows, max(1, min(16, rows * block // (32 * per_thread)))


# one launcher per argument pattern
_launchers = {(tile, kind): FastLauncher(_short_rows_kernel)
              for tile in TILES for kind in ("plain", "per_head", "fused")}


def _launch(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float,
            tile: str) -> torch.Tensor:
    """2-D [rows, hidden]; without a residual also 3-D [tokens, heads, hidden] of any token
    and head strides. The output is contiguous, of the input's shape."""
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if x.stride(-1) != 1:
        x = x.contiguous()
    per_head = residual is None and x.dim() == 3
    if not per_head and x.dim() != 2:
        x = x.reshape(-1, x.shape[-1])
    if weight.stride(0) != 1:  # the kernel reads the weight as contiguous
        weight = weight.contiguous()
    hidden = x.shape[-1]
    n_rows = out.numel() // hidden if hidden else 0
    if n_rows == 0:
        return out
    block, rows, warps = _config(hidden, tile)
    grid = ((n_rows + rows - 1) // rows, 1, 1)
    if per_head:
        _launchers[tile, "per_head"](
            grid, x, None, weight, out, n_rows, x.shape[1], x.stride(0), x.stride(1), 0,
            hidden, eps, block, rows, True, False, num_warps=warps)
    elif residual is None:
        _launchers[tile, "plain"](grid, x, None, weight, out, n_rows, 1, x.stride(0), 0, 0,
                                  hidden, eps, block, rows, False, False, num_warps=warps)
    else:
        if residual.stride(-1) != 1:
            residual = residual.contiguous()
        residual = residual.reshape(-1, hidden)
        _launchers[tile, "fused"](grid, x, residual, weight, out, n_rows, 1, x.stride(0), 0,
                                  residual.stride(0), hidden, eps, block, rows, False, True,
                                  num_warps=warps)
    return out


def rmsnorm_t1k_eps1e5(hidden_states: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return _launch(hidden_states, None, weight, 1e-5, "t1k")


def rmsnorm_t1k_eps1e6(hidden_states: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return _launch(hidden_states, None, weight, 1e-6, "t1k")


def rmsnorm_t4k_eps1e5(hidden_states: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return _launch(hidden_states, None, weight, 1e-5, "t4k")


def rmsnorm_t4k_eps1e6(hidden_states: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return _launch(hidden_states, None, weight, 1e-6, "t4k")


def rmsnorm_t16k_eps1e5(hidden_states: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return _launch(hidden_states, None, weight, 1e-5, "t16k")


def rmsnorm_t16k_eps1e6(hidden_states: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return _launch(hidden_states, None, weight, 1e-6, "t16k")


def fused_add_rmsnorm_t1k_eps1e5(
    hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    return _launch(hidden_states, residual, weight, 1e-5, "t1k")


def fused_add_rmsnorm_t1k_eps1e6(
    hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    return _launch(hidden_states, residual, weight, 1e-6, "t1k")


def fused_add_rmsnorm_t4k_eps1e5(
    hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    return _launch(hidden_states, residual, weight, 1e-5, "t4k")


def fused_add_rmsnorm_t4k_eps1e6(
    hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    return _launch(hidden_states, residual, weight, 1e-6, "t4k")


def fused_add_rmsnorm_t16k_eps1e5(
    hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    return _launch(hidden_states, residual, weight, 1e-5, "t16k")


def fused_add_rmsnorm_t16k_eps1e6(
    hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    return _launch(hidden_states, residual, weight, 1e-6, "t16k")
