"""NeoX-style rotary embedding from a cos/sin cache in plain PyTorch (float32 math)."""

import torch

# Arguments of any stride and storage offset are handled here (see dispatch.contract).
FIB_ANY_LAYOUT = True

FIB_SOLUTIONS = [
    {
        "variant": "torch",
        "families": ["rope"],
        "definitions": ["rope_with_cos_sin_cache_neox_style_*"],
        "entry_point": "run",
        "dtypes": ["bfloat16", "float16", "float32"],
        "language": "python",
        "destination_passing_style": False,
        "target_hardware": ["any"],
        "dependencies": ["torch"],
        "description": (
            "Plain PyTorch: gathers the cos/sin rows of the positions, rotates the first "
            "rotary_dim dimensions of q and k in float32 and copies the rest; about ten "
            "kernels per call on GPU. Runs anywhere."
        ),
    },
]


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotary: int) -> torch.Tensor:
    xf = x.float()
    half = rotary // 2
    x1, x2 = xf[..., :half], xf[..., half:rotary]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin, xf[..., rotary:]),
                     dim=-1).to(x.dtype)


@torch.no_grad()
def run(q: torch.Tensor, k: torch.Tensor, cos_sin_cache: torch.Tensor,
        positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rotary = cos_sin_cache.shape[-1]
    cos, sin = cos_sin_cache.index_select(0, positions).float().unsqueeze(-2).chunk(2, dim=-1)
    return _rotate(q, cos, sin, rotary), _rotate(k, cos, sin, rotary)
