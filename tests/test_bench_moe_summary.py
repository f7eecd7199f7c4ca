"""benchmarks/bench_moe_sampling.py judges a held-out token count by the configuration
dispatch would serve there (latencies interpolated between the measured counts), not by the
nearest count's winner: re-summarised from a saved run, no GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAME = "moe_bf16_topk8_e64_h2048_i1024"


def row(tokens: int, held_out: bool, a: float, b: float) -> dict:
    return {"definition": NAME, "tokens": tokens, "skewed": False, "held_out": held_out,
            "ms": {"triton_default": a, "triton_m16_n64_k128": b}}


def test_the_held_out_choice_is_dispatch_s_interpolated_one(tmp_path: Path):
    # At 16 the nearest measured count (8) favours the default; interpolated in log-log
    # between 8 and 64 the other configuration is faster (1.533 < 1.587 ms), and it is.
    saved = {"device": "test", "moe": [row(8, False, 1.0, 1.5), row(64, False, 4.0, 1.6),
                                       row(16, True, 1.7, 1.4)]}
    path = tmp_path / "moe_sampling.json"
    path.write_text(json.dumps(saved))
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_moe_sampling.py"),
                          "--summarise", str(path)], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    (held,) = [line for line in out.splitlines() if "held-out" in line]
    assert held.split()[-3:-1] == ["triton_m16_n64_k128", "1.000"], held


def test_the_fp8_table_gives_each_token_count_s_winner_against_default_and_torch(
        tmp_path: Path):
    rows = [{"definition": "fp8", "tokens": 1, "offset": 32, "local_pairs": 1,
             "ms": {"triton_default": 0.5, "triton_m16_n64": 0.4, "torch": 2.0}},
            {"definition": "fp8", "tokens": 7, "offset": 192, "local_pairs": 9,
             "ms": {"triton_default": 0.5, "triton_m16_n64": 0.6}}]
    path = tmp_path / "moe_fp8.json"
    path.write_text(json.dumps({"device": "test", "fp8": rows}))
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_moe_sampling.py"),
                          "--summarise", str(path)], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    one, seven = (line.split() for line in out.splitlines()[-2:])
    assert one[2:] == ["triton_m16_n64", "0.4000", "0.5000", "1.25x", "2.0000", "5.00x"]
    assert seven[2:] == ["triton_default", "0.5000", "0.5000", "1.00x", "-", "-"]
