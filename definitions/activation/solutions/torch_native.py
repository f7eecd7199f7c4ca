"""SiLU-and-multiply (SwiGLU) in plain PyTorch (runs on CPU and GPU)."""

import torch
import torch.nn.functional as F

# Arguments of any stride and storage offset are handled here (see dispatch.contract).
FIB_ANY_LAYOUT = True

FIB_SOLUTIONS = [
    {
        "variant": "torch",
        "families": ["silu_and_mul"],
        "definitions": ["silu_and_mul_i*"],
        "entry_point": "silu_and_mul",
        "dtypes": ["bfloat16", "float16", "float32"],
        "language": "python",
        "destination_passing_style": False,
        "target_hardware": ["any"],
        "dependencies": ["torch"],
        "description": (
            "Plain PyTorch: float32 copy of the gate half, in-place silu, in-place multiply by the "
            "up half, cast back (four kernels on GPU). Runs anywhere; on CPU the fastest choice for"
            " small token counts."
        ),
    },
]


@torch.no_grad()
def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    inter = gate_up.shape[-1] // 2
    gate = gate_up[:, :inter].to(torch.float32, copy=True)  # never the input, float32 too
    return F.silu(gate, inplace=True).mul_(gate_up[:, inter:]).to(gate_up.dtype)
