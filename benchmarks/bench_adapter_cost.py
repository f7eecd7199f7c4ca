"""GPU: what the FlashInfer adapter costs per eager call, against FlashInfer's own call of the
same kernel, and where the time goes.

Per op (flashinfer.norm.rmsnorm / fused_add_rmsnorm, activation.silu_and_mul, the decode
wrapper's run and plan) and batch, in paired rounds (modes shuffled each round, each timed
as `--calls` back-to-back eager calls between CUDA events: what an eager engine pays):

- `flashinfer`: FlashInfer's own function, the adapter not installed;
- `site`: the definition's call site called directly, serving FlashInfer's own function
  (the original ranks first): the dispatch frame and the original's wrapper, no adapter;
- `adapter->flashinfer`: the public FlashInfer call with the adapter installed, the
  database serving FlashInfer's own function at every key (the replacement then calls it
  without the site);
- `adapter->flashinfer, mixed table`: the same, but the catalogue's solution ranks first at
  one other batch, so every call goes through the site (what an engine pays where
  FlashInfer is the choice at this key but not at all);
- `adapter, dispatch off`: installed, fib-runtime off;
- `adapter->catalogue`: installed, serving the catalogue's Triton solution (its own launch
  cost included: the eager regime decides whether that pays).

Goal: `adapter->flashinfer` within +1 us of `flashinfer` per call (decode plan: no more than
FlashInfer's own plan). Prints a table and writes benchmarks/results/adapter_cost.json.
`--stand-ins` measures the host path alone, on any machine: FlashInfer's norm and activation
functions replaced by Python functions that return at once, CPU tensors, `flashinfer` vs
`adapter->flashinfer` and `adapter->flashinfer, mixed table` in paired rounds.

    python3 benchmarks/bench_adapter_cost.py [--batches 1 64] [--rounds 9] [--calls 200]
    python3 benchmarks/bench_adapter_cost.py --stand-ins
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parents[1]))  # integration/, after the package
from _common import RESULTS, per_call_us, print_table

import fib_runtime as fib
from fib_runtime.catalogue import load_catalogue
from fib_runtime.original import original_solution
from fib_runtime.schema import Correctness, Environment, Evaluation, Performance, Status, Trace
from fib_runtime.schema.trace import RANDOM, Workload
from fib_runtime.store import TraceDB
from integration.flashinfer_decode_layer import EPS, INTER, Layer, op_axes

CATALOGUE_CHOICE = {"rmsnorm_h4096": "triton_rowwise",
                    "fused_add_rmsnorm_residual_h4096": "triton_rowwise",
                    "silu_and_mul_i14336": "triton",
                    "gqa_paged_decode_h32_kv8_d128_ps1": "triton_split_kv"}


MODES = ["flashinfer", "site", "adapter->flashinfer", "adapter->flashinfer, mixed table",
         "adapter, dispatch off", "adapter->catalogue"]
MIXED_OTHER_BATCH = 4096  # "mixed": the catalogue's solution first here, never timed


def make_db(root: Path, batches: list[int], kv_len: int, first: str) -> Path:
    """The four definitions with one candidate measured at each batch: FlashInfer's own
    function (`first` = "original") or the catalogue's Triton solution ("catalogue"); with
    "mixed", FlashInfer's at each batch and the Triton solution at MIXED_OTHER_BATCH, so that
    dispatch must look at every call's key (the site stays in the path)."""
    from fib_runtime.adapters.flashinfer import originals

    catalogue = load_catalogue()
    db = TraceDB.open(root, create=True)
    hardware = fib.current_hardware()
    environment = Environment(hardware.name, dict(hardware.libs), {"hardware_key": hardware.key})
    traces = []
    for name, choice in CATALOGUE_CHOICE.items():
        definition = catalogue.definitions[name]
        db.add_definition(definition)
        own = original_solution(definition, getattr(originals, name))
        triton = next(s for s in catalogue.solutions if s.name == f"{name}__{choice}")
        measured = [(triton if first == "catalogue" else own, batch) for batch in batches]
        if first == "mixed":
            measured.append((triton, MIXED_OTHER_BATCH))
        for solution in {s.name: s for s, _ in measured}.values():
            db.add_solution(solution)
        for solution, batch in measured:
            axes = op_axes(batch, kv_len)[name]
            workload = Workload(f"{name}-{batch}", axes, {i: RANDOM for i in definition.inputs})
            traces.append(Trace(name, workload, solution.name, Evaluation(
                Status.PASSED, environment, "2026-01-01T00:00:00+00:00", None,
                Correctness(0.0, 0.0), Performance(0.001, 0.001, 1.0))))
    db.append_traces(traces)
    return root


def calls_of(layer: Layer, batch: int) -> dict[str, Callable[[], Any]]:
    """Each op's public FlashInfer call, as the layer makes it (static tensors)."""
    import flashinfer

    g = torch.Generator(device="cuda").manual_seed(batch)
    x = torch.randn(batch, 4096, generator=g, device="cuda").bfloat16()
    r = torch.randn(batch, 4096, generator=g, device="cuda").bfloat16()
    w = layer.w_in
    out = torch.empty_like(x)
    gate_up = torch.randn(batch, 2 * INTER, generator=g, device="cuda").bfloat16()
    q = torch.randn(batch, 32, 128, generator=g, device="cuda").bfloat16()
    return {
        "rmsnorm": lambda: flashinfer.norm.rmsnorm(x, w, EPS, out=out),
        "fused_add_rmsnorm": lambda: flashinfer.norm.fused_add_rmsnorm(x, r, w, EPS),
        "silu_and_mul": lambda: flashinfer.activation.silu_and_mul(gate_up, out=layer.act),
        "decode_run": lambda: layer.wrapper.run(q, (layer.k_cache, layer.v_cache),
                                                out=layer.attn),
        "decode_plan": layer.plan,
    }


def site_calls(layer: Layer, batch: int) -> dict[str, Callable[[], Any]]:
    """The definitions' call sites called directly (the adapter's routes, no adapter frame)."""
    from fib_runtime.adapters.flashinfer import norm

    g = torch.Generator(device="cuda").manual_seed(batch)
    x = torch.randn(batch, 4096, generator=g, device="cuda").bfloat16()
    r = torch.randn(batch, 4096, generator=g, device="cuda").bfloat16()
    out = torch.empty_like(x)
    gate_up = torch.randn(batch, 2 * INTER, generator=g, device="cuda").bfloat16()
    rms = norm._route("rmsnorm", 4096, EPS, torch.bfloat16)
    fused = norm._route("fused_add_rmsnorm_residual", 4096, EPS, torch.bfloat16)
    silu = norm._route("silu_and_mul", INTER, None, torch.bfloat16)
    w = layer.w_in
    return {"rmsnorm": lambda: rms.call(x, w, out),
            "fused_add_rmsnorm": lambda: fused.call(x, r, w, x, r),
            "silu_and_mul": lambda: silu.call(gate_up, layer.act)}



class Modes:
    """Switch between the modes (outside the timed runs)."""

    def __init__(self, dbs: dict[str, Path]) -> None:
        self.dbs = dbs
        self.session: Any = None

    def enter(self, mode: str) -> None:
        from fib_runtime.adapters import flashinfer as fi

        if self.session is not None:
            self.session.__exit__()
            self.session = None
        if mode == "flashinfer":
            fi.uninstall()
            return
        fi.install()
        if mode != "adapter, dispatch off":
            db = {"adapter->catalogue": "catalogue", "adapter->flashinfer, mixed table": "mixed"}
            self.session = fib.enable_apply(self.dbs[db.get(mode, "original")],
                                            {"check_interval_s": 0})


def run(batches: list[int], rounds: int, calls: int, kv_len: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="fib-adapter-cost-"))
    dbs = {first: make_db(tmp / first, batches, kv_len, first)
           for first in ("original", "catalogue", "mixed")}
    modes = MODES
    switch = Modes(dbs)
    rng = random.Random(0)
    rows: list[dict[str, Any]] = []
    with torch.no_grad():
        for batch in batches:
            layer = Layer(batch, kv_len)
            samples: dict[str, dict[str, list[float]]] = {}
            for _ in range(rounds):
                order = list(modes)
                rng.shuffle(order)
                for mode in order:
                    switch.enter("adapter->flashinfer, mixed table" if mode == "site" else mode)
                    layer.plan()
                    ops = site_calls(layer, batch) if mode == "site" else calls_of(layer, batch)
                    for op, fn in ops.items():
                        for _ in range(3):  # resolve, build, JIT outside the timed run
                            fn()
                        n = calls if op != "decode_plan" else max(10, calls // 10)
                        samples.setdefault(op, {}).setdefault(mode, []).append(
                            per_call_us(fn, (), n))
            switch.enter("flashinfer")
            for op, by_mode in samples.items():
                own = by_mode["flashinfer"]
                row: dict[str, Any] = {"batch": batch, "op": op}
                for mode, values in by_mode.items():
                    row[f"{mode} us"] = statistics.median(values)
                    if mode != "flashinfer":
                        row[f"{mode} - flashinfer us"] = statistics.median(
                            v - o for v, o in zip(values, own, strict=True))
                rows.append(row)
    return {"device": torch.cuda.get_device_name(), "rounds": rounds, "calls": calls,
            "rows": rows, "goal": "adapter->flashinfer - flashinfer <= 1 us per call"}


def stand_ins(rounds: int, calls: int) -> dict[str, Any]:
    """The adapter's host path with FlashInfer's kernels replaced by no-op Python functions."""
    import time

    import flashinfer.activation
    import flashinfer.norm
    from fib_runtime.adapters import flashinfer as fi

    def rmsnorm(input: Any, weight: Any, eps: float = 1e-6, out: Any = None,
                enable_pdl: Any = None) -> Any:
        return out

    def fused_add_rmsnorm(input: Any, residual: Any, weight: Any, eps: float = 1e-6,
                          enable_pdl: Any = None) -> None:
        return None

    def silu_and_mul(input: Any, out: Any = None, enable_pdl: Any = None) -> Any:
        return out

    fi.uninstall()
    flashinfer.norm.rmsnorm, flashinfer.norm.fused_add_rmsnorm = rmsnorm, fused_add_rmsnorm
    flashinfer.activation.silu_and_mul = silu_and_mul
    tmp = Path(tempfile.mkdtemp(prefix="fib-adapter-host-"))
    roots = {"adapter": make_db(tmp / "original", [4], 512, "original"),
             "adapter, mixed table": make_db(tmp / "mixed", [4], 512, "mixed")}
    x, r = torch.randn(4, 4096).bfloat16(), torch.randn(4, 4096).bfloat16()
    w, out = torch.randn(4096).bfloat16(), torch.empty(4, 4096, dtype=torch.bfloat16)
    gate_up, act = torch.randn(4, 2 * INTER).bfloat16(), torch.empty(4, INTER).bfloat16()
    ops = {"rmsnorm": lambda: flashinfer.norm.rmsnorm(x, w, EPS, out=out),
           "fused_add_rmsnorm": lambda: flashinfer.norm.fused_add_rmsnorm(x, r, w, EPS),
           "silu_and_mul": lambda: flashinfer.activation.silu_and_mul(gate_up, out=act)}

    def ns_per_call(fn: Callable[[], Any]) -> float:
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        return (time.perf_counter_ns() - start) / calls

    modes = ["own", *roots]
    samples: dict[str, dict[str, list[float]]] = {op: {m: [] for m in modes} for op in ops}
    rng = random.Random(0)
    for _ in range(rounds):
        for mode in rng.sample(modes, len(modes)):
            if mode == "own":
                fi.uninstall()
                session = None
            else:
                fi.install()
                session = fib.enable_apply(roots[mode], {"check_interval_s": 0})
            for op, fn in ops.items():
                fn()
                fn()
                samples[op][mode].append(ns_per_call(fn))
            if session is not None:
                session.__exit__()
    fi.uninstall()

    def added(s: dict[str, list[float]], mode: str) -> float:
        return statistics.median(a - o for a, o in zip(s[mode], s["own"], strict=True))

    rows = [{"op": op, "own_ns": statistics.median(s["own"]),
             "adapter_ns": statistics.median(s["adapter"]), "added_ns": added(s, "adapter"),
             "mixed_ns": statistics.median(s["adapter, mixed table"]),
             "mixed_added_ns": added(s, "adapter, mixed table")}
            for op, s in samples.items()]
    rows.append(plan_stand_in(rounds, calls))
    return {"mode": "stand-ins (host path only)", "rounds": rounds, "calls": calls,
            "rows": rows}


def plan_stand_in(rounds: int, calls: int) -> dict[str, Any]:
    """The decode wrapper's plan replacement around a no-op FlashInfer plan (which keeps
    the buffers a real plan leaves on the wrapper), against that no-op called bare: the
    adapter's own work per plan, replanned with the same arguments as an engine does."""
    import time

    from fib_runtime.adapters.flashinfer import decode

    class Wrapper:
        _kv_layout = "NHD"

    wrapper = Wrapper()
    indptr = torch.arange(5, dtype=torch.int32)
    indices, last = torch.arange(4, dtype=torch.int32), torch.ones(4, dtype=torch.int32)

    def plan0(self: Any, indptr: Any, indices: Any, last: Any, *args: Any, **kwargs: Any) -> None:
        self._paged_kv_indptr_buf = indptr
        self._paged_kv_indices_buf = indices
        self._paged_kv_last_page_len_buf = last

    plan, _ = decode.wrap(plan0, lambda *args, **kwargs: None)
    options = {"q_data_type": torch.bfloat16, "kv_data_type": torch.bfloat16}
    modes = {"own": lambda: plan0(wrapper, indptr, indices, last, 32, 8, 128, 1, **options),
             "adapter": lambda: plan(wrapper, indptr, indices, last, 32, 8, 128, 1, **options)}
    samples: dict[str, list[float]] = {m: [] for m in modes}
    rng = random.Random(1)
    for _ in range(rounds):
        for mode in rng.sample(list(modes), len(modes)):
            fn = modes[mode]
            fn()
            start = time.perf_counter_ns()
            for _ in range(calls):
                fn()
            samples[mode].append((time.perf_counter_ns() - start) / calls)
    added = statistics.median(a - o for a, o in zip(samples["adapter"], samples["own"],
                                                    strict=True))
    return {"op": "decode_plan", "own_ns": statistics.median(samples["own"]),
            "adapter_ns": statistics.median(samples["adapter"]), "added_ns": added,
            "mixed_ns": None, "mixed_added_ns": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--kv-len", type=int, default=512)
    parser.add_argument("--out", type=Path, default=RESULTS / "adapter_cost.json")
    parser.add_argument("--stand-ins", action="store_true",
                        help="the host path alone, FlashInfer's kernels replaced (any machine)")
    args = parser.parse_args()
    if args.stand_ins:
        result = stand_ins(args.rounds, max(args.calls, 20000))
        print_table(["op", "flashinfer (stand-in) ns", "adapter ns", "added ns",
                     "adapter, mixed table ns", "added ns"],
                    [[r["op"], *(f"{r[k]:.0f}" if r[k] is not None else "-" for k in (
                        "own_ns", "adapter_ns", "added_ns", "mixed_ns", "mixed_added_ns"))]
                     for r in result["rows"]])
        out = args.out.with_name("adapter_cost_host.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
        return
    result = run(args.batches, args.rounds, args.calls, args.kv_len)
    modes = MODES
    print_table(["batch", "op", *(f"{m} us" for m in modes), "adapter->flashinfer - own"],
                [[r["batch"], r["op"], *(f"{r[f'{m} us']:.2f}" if f"{m} us" in r else "-"
                                         for m in modes),
                  f"{r['adapter->flashinfer - flashinfer us']:+.2f}"] for r in result["rows"]])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
