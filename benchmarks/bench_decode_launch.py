"""Per-call cost of the Triton decode attention in an eager loop: FastLauncher vs Triton's launch.

Both entry points of definitions/gqa_paged/solutions/triton_decode.py (split-KV: two kernels;
single pass: one) on gqa_paged_decode_h32_kv8_d128_ps1 shapes, called back to back on the
same inputs with no synchronisation; per-call time = CUDA events around `--calls` calls /
calls, median of `--rounds` rounds alternating the two launch paths. Also checks that both
paths give bit-identical outputs. Writes benchmarks/results/decode_launch_<gpu>.json.

    python3 benchmarks/bench_decode_launch.py [--rounds 15] [--calls 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import per_call_us, print_table, write_json

from fib_runtime.build.loader import build_solution
from fib_runtime.catalogue import load_catalogue
from fib_runtime.hardware import current_hardware

DEFINITION = "gqa_paged_decode_h32_kv8_d128_ps1"
SHAPES = ((1, 64), (1, 512), (16, 512), (64, 4096))  # (batch, KV tokens per sequence)


def inputs(batch: int, kv_len: int) -> list:
    pages = batch * kv_len + 64
    q = torch.randn(batch, 32, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(pages, 1, 8, 128, device="cuda", dtype=torch.bfloat16)
    indptr = torch.arange(batch + 1, device="cuda", dtype=torch.int32) * kv_len
    indices = torch.randperm(pages, device="cuda")[: batch * kv_len].int()
    return [q, k, torch.randn_like(k), indptr, indices, 128**-0.5]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=300)
    opts = parser.parse_args()
    solutions = {s.name: s for s in load_catalogue().solutions if s.definition == DEFINITION}
    rows, results = [], {}
    for variant in ("triton_split_kv", "triton_single_pass"):
        built = build_solution(solutions[f"{DEFINITION}__{variant}"])
        module = sys.modules[built.fn.__module__]
        launchers = [module._launch_attend, module._launch_merge]
        for batch, kv_len in SHAPES:
            args = inputs(batch, kv_len)
            times: dict[bool, list[float]] = {True: [], False: []}
            outputs = {}
            for round_ in range(opts.rounds + 1):  # round 0 warms up and is dropped
                for fast in (True, False):
                    for launcher in launchers:
                        launcher.direct = fast
                    outputs[fast] = built.fn(*args)
                    us = per_call_us(built.fn, args, opts.calls)
                    if round_:
                        times[fast].append(us)
            same = all(torch.equal(a, b) for a, b in zip(outputs[True], outputs[False],
                                                         strict=True))
            fast_us, ordinary_us = (statistics.median(times[f]) for f in (True, False))
            results[f"{variant}/b{batch}/kv{kv_len}"] = {
                "fast_us": fast_us, "ordinary_us": ordinary_us, "identical_outputs": same}
            rows.append([variant, batch, kv_len, fast_us, ordinary_us, same])
    hardware = current_hardware()
    print(f"{hardware.name}: {DEFINITION}, us per call back to back")
    print_table(["solution", "batch", "kv len", "FastLauncher", "Triton launch", "identical"],
                rows)
    path = write_json(f"decode_launch_{hardware.key.lower()}", {
        "gpu": hardware.name, "torch": torch.__version__, "rounds": opts.rounds,
        "calls": opts.calls, "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
