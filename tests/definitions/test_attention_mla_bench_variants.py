"""benchmarks/bench_prefill_attention.py --variants: every named MLA launch configuration and
split rule it times computes the definition (Triton interpreter on the CPU, where a config's
tile sizes are kept but its dots run in float32), and the summary counts cells per variant."""

import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from attention_helpers import REPO, reference
from test_attention_mla import DECODE, PREFILL, _check, mla_inputs, ours

SPEC = importlib.util.spec_from_file_location(
    "bench_prefill_attention", REPO / "benchmarks" / "bench_prefill_attention.py")
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)

CASES = {DECODE: [(1, k) for k in (300, 0, 7, 1, 45)],
         PREFILL: [(1, 300), (0, 3), (12, 12), (3, 20), (6, 2)]}  # split in two


@pytest.mark.parametrize("name", [DECODE, PREFILL])
def test_every_variant_matches_the_reference(name: str) -> None:
    args = mla_inputs(name, CASES[name], seed=2)
    want = reference(ours(name))(*args)
    variants = bench.mla_variants(name, args)
    kind = "prefill" if name == PREFILL else "decode"
    assert set(bench.MLA_VARIANTS[kind]) < set(variants)
    for label, run in variants.items():
        _check(name, run(), want, label)


def test_summary_counts_cells_per_variant_and_the_best() -> None:
    def cell(definition: str, lat: dict, checks: dict) -> dict:
        return {"definition": definition, "latency_us": lat,
                "triton_over_flashinfer_throughput": lat["flashinfer"] / lat["triton"],
                **bench.best_of(lat, {**checks, "triton": "PASSED"})}

    cells = [cell(DECODE, {"triton": 20, "flashinfer": 10, "a": 14, "b": 5},
                  {"a": "PASSED", "b": "INCORRECT_NUMERICAL"}),
             cell(DECODE, {"triton": 10, "flashinfer": 10, "a": 8, "b": 9},
                  {"a": "PASSED", "b": "PASSED"}),
             cell(PREFILL, {"triton": 5, "flashinfer": 10, "c": 50, "d": 1},
                  {"c": "PASSED", "d": "ERROR PTXASError"}),
             {"definition": PREFILL, "error": "RuntimeError: x"}]
    summary = bench.variant_summary(cells)
    assert summary["decode shipped"]["at_or_above_0.80"] == 1
    assert summary["decode a"] == {"cells": 2, "at_or_above_0.80": 1, "geomean": 0.945,
                                   "min": 0.714, "checks_failed": 0}
    assert summary["decode b"]["cells"] == 1 and summary["decode b"]["checks_failed"] == 1
    # the best of a cell: the fastest passing variant, the shipped one included
    assert summary["decode best"]["cells"] == 2 and summary["decode best"]["min"] == 0.714
    assert summary["prefill best"]["geomean"] == 2.0 and summary["prefill c"]["min"] == 0.2
    assert "decode triton" not in summary
    assert summary["prefill d"] == {"cells": 0, "at_or_above_0.80": 0, "geomean": None,
                                    "min": None, "checks_failed": 1}  # listed, never best
