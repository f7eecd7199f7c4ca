"""Retune's GPU timing against triton.testing.do_bench on the same inputs (needs CUDA).

For a few fixed kernels, from launch-bound to bandwidth- and compute-bound (a bf16 copy, an
eager torch RMSNorm, a bf16 matmul), time the call the way `fib retune` does (CUDA events,
L2 flushed and inputs re-filled before each run, median after warm-up) and with
`triton.testing.do_bench` (median), and check that they agree within 10%.

    python benchmarks/bench_timing_agreement.py [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, print_table

TOLERANCE = 0.10


def rmsnorm(x: Any, weight: Any) -> Any:
    import torch

    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6) * weight.float()
            ).to(x.dtype)


def cases() -> list[tuple[str, str, Callable[..., Any], list[tuple[int, ...]]]]:
    """(kernel, size, function, input shapes); all inputs bf16."""
    import torch

    copy = torch.clone
    return [
        ("copy", "4K elems", copy, [(4096,)]),
        ("copy", "1M elems", copy, [(1 << 20,)]),
        ("copy", "128M elems", copy, [(1 << 27,)]),
        ("rmsnorm", "1x4096", rmsnorm, [(1, 4096), (4096,)]),
        ("rmsnorm", "256x4096", rmsnorm, [(256, 4096), (4096,)]),
        ("rmsnorm", "16384x4096", rmsnorm, [(16384, 4096), (4096,)]),
        ("matmul", "16x4096x4096", torch.matmul, [(16, 4096), (4096, 4096)]),
        ("matmul", "4096x4096x4096", torch.matmul, [(4096, 4096), (4096, 4096)]),
    ]


def ours(fn: Callable[..., Any], shapes: list[tuple[int, ...]]) -> float:
    """Latency as retune measures it: its Inputs re-fill and its timing function."""
    import torch

    from fib_runtime.measure.inputs import Inputs
    from fib_runtime.measure.timing import median_latency_ms

    def fresh() -> list[Any]:
        return [torch.randn(s, device="cuda", dtype=torch.bfloat16) for s in shapes]

    args = fresh()
    inputs = Inputs(args, {i: a.clone() for i, a in enumerate(args)},
                    [dict(enumerate(fresh())) for _ in range(2)])
    return median_latency_ms(fn, inputs.args, device="cuda", refill=inputs.refill,
                             warmup=10, iters=100)


def theirs(fn: Callable[..., Any], shapes: list[tuple[int, ...]]) -> float:
    import torch
    from triton.testing import do_bench

    args = [torch.randn(s, device="cuda", dtype=torch.bfloat16) for s in shapes]
    return do_bench(lambda: fn(*args), warmup=25, rep=100, return_mode="median")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "timing_agreement.json")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("bench_timing_agreement: needs a CUDA GPU; nothing measured")
        return 0
    from fib_runtime.hardware import current_hardware

    rows, records = [], []
    for kernel, size, fn, shapes in cases():
        ours_ms, theirs_ms = ours(fn, shapes), theirs(fn, shapes)
        diff = ours_ms / theirs_ms - 1.0
        agree = abs(diff) <= TOLERANCE
        rows.append([kernel, size, ours_ms * 1e3, theirs_ms * 1e3, f"{diff:+.1%}",
                     "yes" if agree else "NO"])
        records.append({"kernel": kernel, "size": size, "ours_us": ours_ms * 1e3,
                        "do_bench_us": theirs_ms * 1e3, "relative_difference": diff,
                        "within_10pct": agree})
    hardware = current_hardware(0)
    print(f"device: {hardware.name}; torch {torch.__version__}")
    print_table(["kernel", "size", "retune µs", "do_bench µs", "difference", "within 10%"],
                rows)
    payload = {"device": hardware.name, "hardware_key": hardware.key, "libs": hardware.libs,
               "method": {"ours": "fib_runtime.measure.timing.median_latency_ms, warmup 10, "
                          "iters 100, inputs re-filled and L2 flushed before each run",
                          "do_bench": "triton.testing.do_bench warmup=25 rep=100 median"},
               "tolerance": TOLERANCE, "results": records,
               "all_within_tolerance": all(r["within_10pct"] for r in records)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if payload["all_within_tolerance"] else 1


if __name__ == "__main__":
    sys.exit(main())
