"""Added cost of fib.apply per call on CPU tensors with CPU python solutions.

Run: python benchmarks/bench_dispatch.py
Rows, each timed against calling the chosen solution directly (the same work by hand):
- hits on a 1-var-axis definition in every calling convention: value-returning, a
  destination-passing solution called value-style (outputs allocated), a value-returning
  solution called destination-passing style (results copied), and destination-passing; and
  a hit of a solution that does not take any layout (its per-call layout guard);
- a hit whose solution does real tensor work (`x * w + 1`, 4x8);
- a hit on a 4-var-axis attention-like definition;
- the first call of a new key (nearest resolution), the fallback path, dispatch switched off;
- the value-returning hit again under torch.no_grad() (how engines serve), against a floor
  timed in the same block;
- pieces of a hit, and the terms of the call contract (dispatch.contract): a dtype or device
  term in the hot key, and each per-call test.
Targets: <= 0.5 us added per hit for 1 var axis (<= 1.0 us for 4), and <= 2x the same-run
floor: a plain Python function that builds one tuple and does one dict get. Cases are
interleaved in rounds (shuffled each round) and medians reported, since hosts are noisy.
When flashinfer-bench is importable, its apply on the same definition is measured too.
Writes benchmarks/results/bench_dispatch.json.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import paired_ns, print_table, write_json

import fib_runtime as fib
from fib_runtime.hardware import current_hardware
from fib_runtime.schema import Definition, Solution, Trace
from fib_runtime.store import TraceDB

NORM = {
    "name": "bench_norm_h64", "op_type": "rmsnorm",
    "axes": {"batch_size": {"type": "var"}, "hidden_size": {"type": "const", "value": 64}},
    "inputs": {"x": {"shape": ["batch_size", "hidden_size"], "dtype": "float32"},
               "weight": {"shape": ["hidden_size"], "dtype": "float32"}},
    "outputs": {"y": {"shape": ["batch_size", "hidden_size"], "dtype": "float32"}},
    "reference": "def run(x, weight):\n    return x * weight\n",
}
ATTENTION = {
    "name": "bench_decode_h8_kv2_d16", "op_type": "gqa_paged",
    "axes": {"batch_size": {"type": "var"}, "num_qo_heads": {"type": "const", "value": 8},
             "num_kv_heads": {"type": "const", "value": 2},
             "head_dim": {"type": "const", "value": 16}, "num_pages": {"type": "var"},
             "page_size": {"type": "const", "value": 1}, "len_indptr": {"type": "var"},
             "num_kv_indices": {"type": "var"}},
    "inputs": {
        "q": {"shape": ["batch_size", "num_qo_heads", "head_dim"], "dtype": "float32"},
        "k_cache": {"shape": ["num_pages", "page_size", "num_kv_heads", "head_dim"],
                    "dtype": "float32"},
        "v_cache": {"shape": ["num_pages", "page_size", "num_kv_heads", "head_dim"],
                    "dtype": "float32"},
        "kv_indptr": {"shape": ["len_indptr"], "dtype": "int32"},
        "kv_indices": {"shape": ["num_kv_indices"], "dtype": "int32"},
        "sm_scale": {"shape": None, "dtype": "float32"}},
    "outputs": {"output": {"shape": ["batch_size", "num_qo_heads", "head_dim"],
                           "dtype": "float32"}},
    "reference": "def run(q, k_cache, v_cache, kv_indptr, kv_indices, sm_scale):\n"
                 "    return q\n",
}
# The chosen solutions do (almost) nothing, so what is measured is dispatch itself; one
# realistic solution does two small tensor ops. They take any layout, as the catalogue's do
# (FIB_ANY_LAYOUT, see dispatch.contract); "strict" does not, so its hits pass the per-call
# layout guard.
ANY_LAYOUT = "FIB_ANY_LAYOUT = True\n"
SOLUTIONS = {
    "identity": (ANY_LAYOUT + "def run(*args):\n    return args[0]\n", False),
    "identity_dps": (ANY_LAYOUT + "def run(x, weight, y):\n    return None\n", True),
    "scale_add": (ANY_LAYOUT + "def run(x, weight):\n    return x * weight + 1\n", False),
    "strict": ("def run(*args):\n    return args[0]\n", False),
}


def _norm_named(name: str) -> dict[str, Any]:
    return {**NORM, "name": name}


# definition -> (its solution's code, destination-passing?, the workloads measured)
NORM_BATCHES = [{"batch_size": b} for b in (1, 8, 64, 512)]
CASES = {
    "bench_norm_h64": (SOLUTIONS["identity"], NORM_BATCHES, NORM),
    "bench_norm_dps_h64": (SOLUTIONS["identity_dps"], NORM_BATCHES,
                           _norm_named("bench_norm_dps_h64")),
    "bench_norm_strict_h64": (SOLUTIONS["strict"], NORM_BATCHES,
                              _norm_named("bench_norm_strict_h64")),
    "bench_norm_real_h8": (SOLUTIONS["scale_add"], NORM_BATCHES, {
        **_norm_named("bench_norm_real_h8"),
        "axes": {**NORM["axes"], "hidden_size": {"type": "const", "value": 8}}}),
    "bench_decode_h8_kv2_d16": (SOLUTIONS["identity"], [
        {"batch_size": b, "num_pages": 4096, "len_indptr": b + 1, "num_kv_indices": b * 64}
        for b in (1, 8, 64)], ATTENTION),
}


def build_db(root: Path) -> TraceDB:
    db = TraceDB.open(root, create=True)
    hardware = current_hardware().name
    traces = []
    for name, ((code, dps), axes, raw) in CASES.items():
        definition = Definition.from_dict(raw)
        db.add_definition(definition)
        db.add_solution(Solution.from_dict({
            "name": f"{name}_solution", "definition": name, "author": "bench",
            "spec": {"language": "python", "target_hardware": ["any"],
                     "entry_point": "main.py::run", "destination_passing_style": dps},
            "sources": [{"path": "main.py", "content": code}]}))
        for values in axes:
            traces.append(Trace.from_dict({
                "definition": name, "solution": f"{name}_solution",
                "workload": {"uuid": str(uuid.uuid4()), "axes": values,
                             "inputs": {n: {"type": "random"} for n in definition.inputs}},
                "evaluation": {
                    "status": "PASSED", "log": "",
                    "correctness": {"max_relative_error": 0.0, "max_absolute_error": 0.0},
                    "performance": {"latency_ms": 0.01, "reference_latency_ms": 0.01,
                                    "speedup_factor": 1.0},
                    "environment": {"hardware": hardware, "libs": {}},
                    "timestamp": "2026-11-21T00:00:00+00:00"}}))
    db.append_traces(traces)
    return db


@fib.apply("bench_norm_h64")
def norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x


@fib.apply("bench_norm_dps_h64")
def norm_dps(x: torch.Tensor, weight: torch.Tensor, *out: torch.Tensor) -> Any:
    return x


@fib.apply("bench_norm_strict_h64")
def norm_strict(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x


@fib.apply("bench_norm_real_h8")
def norm_real(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x * weight + 1


@fib.apply("bench_decode_h8_kv2_d16")
def decode(q: Any, k_cache: Any, v_cache: Any, kv_indptr: Any, kv_indices: Any,
           sm_scale: float) -> Any:
    return q


@fib.apply("bench_norm_h64_unmeasured")
def unmeasured(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x


def first_call_ns(batches: range) -> tuple[float, float]:
    """Median cost of the first call of a new key, and of the second call of that key."""
    first, second = [], []
    w = torch.ones(64)
    for b in batches:
        x = torch.ones(b, 64)
        start = time.perf_counter_ns()
        norm(x, w)
        mid = time.perf_counter_ns()
        norm(x, w)
        first.append(mid - start)
        second.append(time.perf_counter_ns() - mid)
    return statistics.median(first), statistics.median(second)


FLOOR = "floor: one tuple from x.shape[0], one dict get"
NO_GRAD = "hit, 1 var axis, value-returning, under torch.no_grad() (x its own floor)"


def measure(calls: int, rounds: int) -> list[dict[str, Any]]:
    x, w = torch.ones(8, 64), torch.ones(64)
    y = torch.empty(8, 64)
    small_x, small_w = torch.randn(4, 8), torch.randn(8)
    q = torch.ones(8, 8, 16)
    kv = torch.ones(4096, 1, 2, 16)
    indptr = torch.arange(0, 9 * 64, 64, dtype=torch.int32)
    indices = torch.arange(8 * 64, dtype=torch.int32)
    attention_args = (q, kv, kv, indptr, indices, 0.25)
    x37 = torch.ones(37, 64)
    table = {(8,): norm}
    table_get = table.get
    typed = {(2, 512): norm, (2, 512, torch.float32): norm, (2, 512, -1): norm}
    typed_get, grad_enabled, float32 = typed.get, torch.is_grad_enabled, torch.float32

    def floor(x: Any, w: Any) -> Any:  # one tuple built from the argument, one dict get
        return table_get((x.shape[0],))

    def floor_const(x: Any, w: Any, n: int = 8) -> Any:  # the tuple built from a local
        return table_get((n,))

    def floor_then(fn: Any, x: Any, w: Any) -> Any:  # the floor, then the call
        table_get((x.shape[0],))
        return fn(x, w)

    counter = itertools.count()

    with tempfile.TemporaryDirectory() as tmp:
        build_db(Path(tmp))
        with fib.enable_apply(tmp, {"check_interval_s": 0}) as session:
            built = {name: session.runtime.build(f"{name}_solution").fn for name in CASES}
            ident, dps = built["bench_norm_h64"], built["bench_norm_dps_h64"]
            strict = built["bench_norm_strict_h64"]
            real, attn = built["bench_norm_real_h8"], built["bench_decode_h8_kv2_d16"]
            original, off = unmeasured.__wrapped__, norm.__wrapped__
            # case -> (through fib.apply, the same work by hand, target added ns)
            cases = {
                "hit, 1 var axis, value-returning": (
                    lambda: norm(x, w), lambda: ident(x, w), 500.0),
                "hit, 1 var axis, a solution that needs contiguous arguments": (
                    lambda: norm_strict(x, w), lambda: strict(x, w), 500.0),
                "hit, 1 var axis, destination-passing": (
                    lambda: norm_dps(x, w, y), lambda: dps(x, w, y), 500.0),
                "hit, DPS solution called value-style": (
                    lambda: norm_dps(x, w),
                    lambda: dps(x, w, x.new_empty((x.shape[0], 64), dtype=torch.float32)),
                    500.0),
                "hit, value solution called DPS-style": (
                    lambda: norm(x, w, y), lambda: y.copy_(ident(x, w)), 500.0),
                "hit, real work (x * w + 1, 4x8)": (
                    lambda: norm_real(small_x, small_w), lambda: real(small_x, small_w),
                    500.0),
                "hit, 4 var axes (attention-like)": (
                    lambda: decode(*attention_args), lambda: attn(*attention_args), 1000.0),
                "nearest key after resolution (37)": (
                    lambda: norm(x37, w), lambda: ident(x37, w), None),
                "fallback (definition not in DB)": (
                    lambda: unmeasured(x, w), lambda: original(x, w), None),
                FLOOR: (lambda: floor(x, w), lambda: None, None),
                "floor with a constant tuple": (lambda: floor_const(x, w), lambda: None, None),
                # Where a hit's time goes: each piece of the frame alone, and the floor
                # around a solution that does real work (cache effects of tensor work).
                "floor around the real-work solution": (
                    lambda: floor_then(real, small_x, small_w), lambda: real(small_x, small_w),
                    None),
                "piece: read x.shape[0]": (lambda: x.shape[0], lambda: None, None),
                "piece: read x.numel()": (lambda: x.numel(), lambda: None, None),
                "piece: key tuple (2, x.shape[0])": (lambda: (2, x.shape[0]), lambda: None,
                                                     None),
                "piece: one dict get": (lambda: table_get((8,)), lambda: (8,), None),
                "piece: next(counter)": (lambda: next(counter), lambda: None, None),
                # The contract's terms (dispatch.contract): in the key, or tested per call.
                "piece: dtype term in the key": (
                    lambda: typed_get((2, x.numel(), x.dtype)),
                    lambda: typed_get((2, x.numel())), None),
                "piece: device term in the key": (
                    lambda: typed_get((2, x.numel(), x.get_device())),
                    lambda: typed_get((2, x.numel())), None),
                "piece: per-call test x.dtype is D": (
                    lambda: x.dtype is float32, lambda: None, None),
                "piece: per-call test x.is_contiguous()": (
                    lambda: x.is_contiguous(), lambda: None, None),
                "piece: per-call test x.requires_grad": (
                    lambda: x.requires_grad, lambda: None, None),
                "piece: per-call test torch.is_grad_enabled()": (
                    lambda: grad_enabled(), lambda: None, None),
            }
            timed = paired_ns({case: (fib_fn, direct) for case, (fib_fn, direct, _) in
                               cases.items()}, calls=calls, rounds=rounds)
            first, second = first_call_ns(range(1000, 1400))
            with torch.no_grad():  # how engines serve: the grad test is one call
                quiet = paired_ns({NO_GRAD: (lambda: norm(x, w), lambda: ident(x, w)),
                                   FLOOR: (lambda: floor(x, w), lambda: None)},
                                  calls=calls, rounds=rounds)
    disabled = paired_ns({"off": (lambda: norm(x, w), lambda: off(x, w))}, calls=calls,
                         rounds=rounds)["off"]
    floor_ns = timed[FLOOR][2]
    rows = []
    for case, (_, _, target) in cases.items():
        fib_ns, direct_ns, added = timed[case]
        rows.append({"case": case, "call_ns": fib_ns, "direct_ns": direct_ns,
                     "added_ns": added, "target_ns": target})
    rows.append({"case": "off (dispatch disabled)", "call_ns": disabled[0],
                 "direct_ns": disabled[1], "added_ns": disabled[2], "target_ns": None})
    rows.append({"case": "first call of a new key (resolve)", "call_ns": first,
                 "direct_ns": second, "added_ns": first - second, "target_ns": None})
    for row in rows:
        row["x_floor"] = row["added_ns"] / floor_ns if floor_ns > 0 else None
    quiet_floor = quiet[FLOOR][2]
    rows.append({"case": NO_GRAD, "call_ns": quiet[NO_GRAD][0], "direct_ns": quiet[NO_GRAD][1],
                 "added_ns": quiet[NO_GRAD][2], "target_ns": 500.0,
                 "x_floor": quiet[NO_GRAD][2] / quiet_floor if quiet_floor > 0 else None})
    return rows


def flashinfer_bench_rows(calls: int, rounds: int) -> list[dict[str, Any]]:
    """flashinfer-bench's apply on the same database and definition, when installed,
    interleaved with ours and the direct call."""
    try:
        import flashinfer_bench as fib_bench
    except ImportError:
        return []
    x, w = torch.ones(8, 64), torch.ones(64)

    @fib_bench.apply("bench_norm_h64")
    def their_norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x

    with tempfile.TemporaryDirectory() as tmp:
        build_db(Path(tmp))
        with fib.enable_apply(tmp, {"check_interval_s": 0}) as session:
            direct = session.runtime.build("bench_norm_h64_solution").fn
            fib_bench.enable_apply(tmp)
            try:
                their_norm(x, w)
                timed = paired_ns({"ours": (lambda: norm(x, w), lambda: direct(x, w)),
                                   "theirs": (lambda: their_norm(x, w), lambda: direct(x, w))},
                                  calls=calls // 10, rounds=rounds)
            finally:
                fib_bench.disable_apply()
    return [{"case": f"same run: {who}", "call_ns": timed[side][0],
             "direct_ns": timed[side][1], "added_ns": timed[side][2],
             "target_ns": 500.0 if side == "ours" else None}
            for side, who in (("ours", "fib-runtime hit, 1 var axis"),
                              ("theirs", "flashinfer-bench apply hit"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", default="bench_dispatch", help="result file name")
    args = parser.parse_args()
    rows = measure(args.calls, args.rounds)
    external = flashinfer_bench_rows(args.calls, args.rounds)
    rows += external
    print_table(["case", "call ns", "direct ns", "added ns", "x floor", "target ns"],
                [[r["case"], r["call_ns"], r["direct_ns"], r["added_ns"],
                  "-" if r.get("x_floor") is None else f"{r['x_floor']:.2f}",
                  "-" if r["target_ns"] is None else r["target_ns"]] for r in rows])
    floor = next(r for r in rows if r["case"] == FLOOR)["added_ns"]
    print(f"floor (a plain function: one tuple from the argument's shape, one dict get): "
          f"{floor:.0f} ns; goal: every hit adds <= 500 ns and <= 2x the floor")
    if external:
        ratio = external[1]["added_ns"] / external[0]["added_ns"]
        print(f"flashinfer-bench apply adds {ratio:.0f}x the time fib-runtime adds per hit")
    else:
        print("flashinfer-bench is not installed (pip install flashinfer-bench): "
              "no comparison in this run")
    hw = current_hardware()
    path = write_json(args.out, {
        "device": hw.name, "python": hw.libs.get("python"), "torch": hw.libs.get("torch"),
        "calls": args.calls, "rounds": args.rounds, "floor_ns": floor, "rows": rows,
        "flashinfer_bench": bool(external)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
