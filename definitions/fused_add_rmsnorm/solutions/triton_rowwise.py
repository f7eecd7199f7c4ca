"""The engines' fused add + RMSNorm in Triton: one program per row, both results, in place."""

import functools

import torch
import triton
import triton.language as tl

from fib_runtime.triton_launch import FastLauncher

# Arguments of any stride and storage offset are handled here (see dispatch.contract).
FIB_ANY_LAYOUT = True

FIB_SOLUTIONS = [
    {
        "variant": "triton_rowwise",
        "entry_points": {
            "fused_add_rmsnorm_residual_h4096": "fused_add_rmsnorm_residual_eps1e5",
            "fused_add_rmsnorm_residual_h*": "fused_add_rmsnorm_residual_eps1e6",
        },
        "dtypes": ["bfloat16", "float16", "float32"],
        "language": "triton",
        "destination_passing_style": True,
        "target_hardware": ["nvidia"],
        "dependencies": ["triton", "torch", "fib-runtime"],
        "description": (
            "Triton, one program per row with the whole row in registers: loads the row of "
            "hidden_states and residual, adds in float32, stores the rounded sum as the new "
            "residual and the normalised row as the output, one launch through FastLauncher. "
            "Every load precedes every store, so the outputs may alias the inputs (the engines' "
            "in-place call costs exactly this one kernel)."
        ),
    },
]


@triton.jit
def _add_rmsnorm_kernel(
    x_ptr,
    res_ptr,
    w_ptr,
    out_ptr,
    res_out_ptr,
    stride_x,
    stride_res,
    stride_out,
    stride_res_out,
    HIDDEN: tl.constexpr,
    EPS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < HIDDEN
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    x += tl.load(res_ptr + row * stride_res + cols, mask=mask, other=0.0).to(tl.float32)
    inv_rms = tl.rsqrt(tl.sum(x * x, axis=0) / HIDDEN + EPS)
    tl.store(res_out_ptr + row * stride_res_out + cols,
             x.to(res_out_ptr.dtype.element_ty), mask=mask)
    tl.store(out_ptr + row * stride_out + cols,
             (x * inv_rms * w).to(out_ptr.dtype.element_ty), mask=mask)


@functools.cache
def _config(hidden: int) -> tuple[int, int]:
    """(BLOCK, num_warps): the row padded to a power of two, ~16 elements per thread."""
    block = triton.next_power_of_2(hidden)
    return block, max(1, min(16, block // 512))


_rows = FastLauncher(_add_rmsnorm_kernel)


def _unit_columns(t: torch.Tensor) -> torch.Tensor:
    """`t`, or a contiguous copy where its columns have a stride (the kernel's rows are
    unit-stride); a 1-D weight likewise."""
    if t.dim() > 2:
        raise ValueError("fused_add_rmsnorm_residual: 2-D activations and a 1-D weight")
    return t if t.stride(-1) == 1 else t.contiguous()


def _launch(hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
            output: torch.Tensor, residual_out: torch.Tensor, eps: float) -> None:
    rows, hidden = hidden_states.shape
    if rows == 0:
        return
    x, res, w = _unit_columns(hidden_states), _unit_columns(residual), _unit_columns(weight)
    out, res_out = _unit_columns(output), _unit_columns(residual_out)  # copies: written back
    block, warps = _config(hidden)
    _rows((rows, 1, 1), x, res, w, out, res_out, x.stride(0), res.stride(0), out.stride(0),
          res_out.stride(0), hidden, eps, block, num_warps=warps)
    for given, written in ((output, out), (residual_out, res_out)):
        if written is not given:
            given.copy_(written)


def fused_add_rmsnorm_residual_eps1e5(
    hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
    output: torch.Tensor, residual_out: torch.Tensor,
) -> None:
    _launch(hidden_states, residual, weight, output, residual_out, 1e-5)


def fused_add_rmsnorm_residual_eps1e6(
    hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
    output: torch.Tensor, residual_out: torch.Tensor,
) -> None:
    _launch(hidden_states, residual, weight, output, residual_out, 1e-6)
