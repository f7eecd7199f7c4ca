"""RMSNorm on CPU in row chunks that keep every float32 temporary in the core's cache."""

import torch
import torch.nn.functional as F

# Arguments of any stride and storage offset are handled here (see dispatch.contract).
FIB_ANY_LAYOUT = True

FIB_SOLUTIONS = [
    {
        "variant": "cpu_chunked",
        "families": ["rmsnorm"],
        "entry_points": {
            "rmsnorm_h*_eps1e-5": "rmsnorm_eps1e5",
            "rmsnorm_h*_eps1e-6": "rmsnorm_eps1e6",
            "rmsnorm_h*_eps*": None,  # no function for other eps values
            "rmsnorm_h4096": "rmsnorm_eps1e5",
            "rmsnorm_h*": "rmsnorm_eps1e6",
        },
        "dtypes": ["bfloat16", "float16", "float32"],
        "language": "python",
        "destination_passing_style": False,
        "target_hardware": ["cpu"],
        "dependencies": ["torch"],
        "description": (
            "CPU only: normalises CHUNK_ELEMENTS (256k) elements' worth of rows at a time, so "
            "the temporaries stay in L2 and no large buffer is allocated (and page-faulted) per "
            "call. It pays a Python loop, so the plain torch solution wins small batches. "
            "Measured crossover (2-core AMD EPYC VM, torch 2.13, "
            "benchmarks/results/catalogue_i_cpu.json): this wins from ~512 rows at h4096, ~256 "
            "rows at h7168 and ~4096 rows at h128, i.e. once a call touches about 1-2M "
            "elements; there it is 4-10x faster."
        ),
    },
    {
        "variant": "cpu_chunked",
        "families": ["fused_add_rmsnorm"],
        "entry_points": {
            "fused_add_rmsnorm_h*_eps1e-5": "fused_add_rmsnorm_eps1e5",
            "fused_add_rmsnorm_h*_eps1e-6": "fused_add_rmsnorm_eps1e6",
            "fused_add_rmsnorm_h*_eps*": None,  # no function for other eps values
            "fused_add_rmsnorm_h4096": "fused_add_rmsnorm_eps1e5",
            "fused_add_rmsnorm_h*": "fused_add_rmsnorm_eps1e6",
        },
        "dtypes": ["bfloat16", "float16", "float32"],
        "language": "python",
        "destination_passing_style": False,
        "target_hardware": ["cpu"],
        "dependencies": ["torch"],
        "description": (
            "CPU only: residual add and RMSNorm on CHUNK_ELEMENTS (256k) elements' worth of "
            "rows at a time, so the float32 sum and temporaries stay in L2 and no large buffer "
            "is allocated per call. It pays a Python loop, so the plain torch solution wins "
            "small batches. Measured crossover (2-core AMD EPYC VM, torch 2.13, "
            "benchmarks/results/catalogue_i_cpu.json): this wins from ~1024 rows at h4096 "
            "(about 4M elements), 5x faster at 4096 rows."
        ),
    },
]

CHUNK_ELEMENTS = 1 << 18


def _rows_per_chunk(hidden_states: torch.Tensor) -> int:
    return max(1, CHUNK_ELEMENTS // hidden_states.shape[-1])


def _rmsnorm(hidden_states: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    hidden = hidden_states.shape[-1]
    step = _rows_per_chunk(hidden_states)
    out = torch.empty_like(hidden_states)
    for start in range(0, hidden_states.shape[0], step):
        rows = slice(start, start + step)
        out[rows] = F.rms_norm(hidden_states[rows], (hidden,), weight, eps)
    return out


def _fused_add_rmsnorm(
    hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> torch.Tensor:
    hidden = hidden_states.shape[-1]
    step = _rows_per_chunk(hidden_states)
    weight32 = weight.float()
    out = torch.empty_like(hidden_states)
    for start in range(0, hidden_states.shape[0], step):
        rows = slice(start, start + step)
        x = hidden_states[rows].to(torch.float32, copy=True).add_(residual[rows])
        out[rows] = F.rms_norm(x, (hidden,), weight32, eps)
    return out


@torch.no_grad()
def rmsnorm_eps1e5(hidden_states: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return _rmsnorm(hidden_states, weight, 1e-5)


@torch.no_grad()
def rmsnorm_eps1e6(hidden_states: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return _rmsnorm(hidden_states, weight, 1e-6)


@torch.no_grad()
def fused_add_rmsnorm_eps1e5(
    hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    return _fused_add_rmsnorm(hidden_states, residual, weight, 1e-5)


@torch.no_grad()
def fused_add_rmsnorm_eps1e6(
    hidden_states: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    return _fused_add_rmsnorm(hidden_states, residual, weight, 1e-6)
