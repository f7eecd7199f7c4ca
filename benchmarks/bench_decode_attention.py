"""Paged GQA decode attention (page size 1): every GPU solution over batch x mean KV length.

Prints each cell's median latency per solution (triton.testing.do_bench, L2 flushed between
runs), the winner, and for cells reading >= 256 MiB of K/V the winner's bandwidth (bytes of K
and V actually read) against this device's copy bandwidth measured in the same run. Writes
benchmarks/results/decode_attention_<gpu>.json (or into --out).

    python3 benchmarks/bench_decode_attention.py [--out DIR]
"""

import argparse
import json
import sys
from pathlib import Path

import torch
import triton
import triton.testing

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "definitions"))
from attention_helpers import DEFINITIONS, HEAD_DIM, decode_inputs, solutions, uneven_lengths

BATCHES = [1, 4, 16, 64, 256]
MEAN_LENS = [64, 512, 4096]
LARGE_CELL_BYTES = 256 * 2**20
BASELINE = "torch_padded"


def copy_bandwidth(nbytes: int = 2**30) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting the bytes read and written."""
    src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), return_mode="median")
    return 2 * nbytes / (ms * 1e-3)


def gpu_key(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100'."""
    return name.replace("NVIDIA", "").split()[0].lower()


def bench_cell(variants: list, kv_heads: int, batch: int, mean_len: int) -> dict:
    """Latency (µs) of every solution on one cell's fresh random inputs."""
    seed = 1000 * batch + mean_len + kv_heads
    inputs = decode_inputs(uneven_lengths(batch, mean_len, seed), kv_heads, "cuda", seed)
    args = list(inputs.values())
    latency = {}
    for variant, run in variants:
        ms = triton.testing.do_bench(lambda run=run: run(*args), return_mode="median")
        latency[variant] = round(ms * 1e3, 2)
    num_kv_indices = args[4].shape[0]
    return {
        "definition": DEFINITIONS[kv_heads],
        "batch": batch,
        "mean_kv_len": mean_len,
        "num_kv_indices": num_kv_indices,
        "kv_bytes": 2 * num_kv_indices * kv_heads * HEAD_DIM * args[1].element_size(),
        "latency_us": latency,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    out_dir = parser.parse_args().out
    device = torch.cuda.get_device_name()
    copy_bw = copy_bandwidth()
    variants = solutions({"any", "nvidia"})
    names = [variant for variant, _ in variants]
    print(f"{device}: copy bandwidth {copy_bw / 1e9:.0f} GB/s (read + write)")
    header = f"{'definition':<34} {'batch':>5} {'len':>5} " + " ".join(f"{n:>18}" for n in names)
    print(header + f" {'winner':>18} {'BW %copy':>8}")

    cells = []
    for kv_heads in sorted(DEFINITIONS, reverse=True):
        for batch in BATCHES:
            for mean_len in MEAN_LENS:
                cell = bench_cell(variants, kv_heads, batch, mean_len)
                winner = min(cell["latency_us"], key=cell["latency_us"].get)
                bandwidth = cell["kv_bytes"] / (cell["latency_us"][winner] * 1e-6)
                cell |= {
                    "winner": winner,
                    "winner_kv_bandwidth_GBps": round(bandwidth / 1e9, 1),
                    "winner_fraction_of_copy": round(bandwidth / copy_bw, 3),
                    "large": cell["kv_bytes"] >= LARGE_CELL_BYTES,
                }
                cells.append(cell)
                frac = f"{100 * cell['winner_fraction_of_copy']:7.0f}%" if cell["large"] else ""
                times = " ".join(f"{cell['latency_us'][n]:>18.1f}" for n in names)
                print(f"{cell['definition']:<34} {batch:>5} {mean_len:>5} {times} "
                      f"{winner:>18} {frac:>8}")
                torch.cuda.empty_cache()

    large = [c for c in cells if c["large"]]
    result = {
        "device": device,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "copy_bandwidth_GBps": round(copy_bw / 1e9, 1),
        "timing": "triton.testing.do_bench median, L2 flushed; latency in microseconds",
        "large_cell_min_fraction_of_copy": min(c["winner_fraction_of_copy"] for c in large),
        "cells_won_by_baseline": sum(c["winner"] == BASELINE for c in cells),
        "cells": cells,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"decode_attention_{gpu_key(device)}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"large cells: winner >= {100 * result['large_cell_min_fraction_of_copy']:.0f}% of copy "
          f"bandwidth; baseline wins {result['cells_won_by_baseline']} cells; wrote {path}")


if __name__ == "__main__":
    main()
