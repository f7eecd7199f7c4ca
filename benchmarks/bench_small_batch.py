"""Small batches of the catalogue's norms and activation against the launch floor, on this GPU.

For rmsnorm_h4096, fused_add_rmsnorm_h4096 and silu_and_mul_i14336 at batch 1..16, every
catalogue solution that runs on this GPU is built as dispatch builds it and timed two ways:

- launch-bound: calls issued back to back on the same inputs with no synchronisation, which
  is what an eager decode loop pays per call (a tiny kernel ends before the next is issued).
  Per-call time = CUDA events around `--calls` calls / calls; median of `--rounds` rounds,
  the cases shuffled in every round. The floor is an empty Triton kernel launched the
  ordinary way, `kernel[(1,)](x)`. Triton solutions are timed with their FastLauncher and
  again with Triton's ordinary launch (`/ordinary`).
- device: retune's timing (L2 flushed before each run, CUDA events around one call).
  Floors: the empty kernel, and a kernel that loads one value and stores it (the least any
  kernel that reads memory costs when its data is not in cache).

Prints one table per definition and regime; writes benchmarks/results/small_batch_<gpu>.json
(small_batch_<op types>_<gpu>.json for other `--definitions`).

    python3 benchmarks/bench_small_batch.py [--rounds 21] [--calls 500] [--out DIR]
        [--definitions NAME ...]   (other catalogue definitions with one batch axis, e.g. GEMMs)
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import per_call_us, print_table, write_json

from fib_runtime.build.calling import value_returning
from fib_runtime.build.loader import build_solution
from fib_runtime.catalogue import load_catalogue
from fib_runtime.errors import BuildError
from fib_runtime.hardware import current_hardware, target_matches
from fib_runtime.measure.timing import median_latency_ms
from fib_runtime.schema import Definition
from fib_runtime.tensors import torch_dtype
from fib_runtime.triton_launch import FastLauncher

DEFINITIONS = ("rmsnorm_h4096", "fused_add_rmsnorm_h4096", "silu_and_mul_i14336")
BATCHES = (1, 2, 4, 7, 8, 16)
ORDINARY = "/ordinary"


@triton.jit
def empty_kernel(x_ptr) -> None:
    """Does nothing: its time is the floor."""


@triton.jit
def load_store_kernel(x_ptr, y_ptr) -> None:
    """Reads one value and writes it: the floor of a kernel that touches memory."""
    tl.store(y_ptr, tl.load(x_ptr))


class Case:
    """One solution (or floor) on one input set, with its launchers set fast or ordinary."""

    def __init__(self, fn: Callable[..., Any], args: list[Any],
                 launchers: list[FastLauncher], fast: bool) -> None:
        self.fn, self.args, self.launchers, self.fast = fn, args, launchers, fast

    def per_call_us(self, calls: int) -> float:
        for launcher in self.launchers:
            launcher.direct = self.fast
        return per_call_us(self.fn, self.args, calls)

    def device_us(self) -> float:
        for launcher in self.launchers:
            launcher.direct = True
        return median_latency_ms(self.fn, self.args, device="cuda", warmup=10, iters=100) * 1e3


def launchers_of(module: ModuleType) -> list[FastLauncher]:
    return [v for v in vars(module).values() if isinstance(v, FastLauncher)]


def solutions(definition: Definition, key: str) -> dict[str, tuple[Callable, ModuleType]]:
    """variant -> (value-returning entry point, its module) for this GPU."""
    found = {}
    for solution in load_catalogue().solutions:
        if solution.definition != definition.name:
            continue
        if not target_matches(solution.spec.target_hardware, key):
            continue
        try:
            built = build_solution(solution)
        except BuildError as exc:
            print(f"skipped {solution.name}: {str(exc).splitlines()[0]}")
            continue
        variant = solution.name.split("__", 1)[1]
        found[variant] = (value_returning(built, definition), sys.modules[built.fn.__module__])
    return found


def make_inputs(definition: Definition, batch: int) -> list[torch.Tensor]:
    axes = {**definition.const_axes, **dict.fromkeys(definition.var_axes, batch)}
    return [torch.randn([axes[a] for a in spec.shape], device="cuda").to(torch_dtype(spec.dtype))
            for spec in definition.inputs.values()]


def cases_for(definition: Definition, key: str) -> dict[tuple[int, str], Case]:
    cases = {}
    for variant, (fn, module) in solutions(definition, key).items():
        launchers = launchers_of(module)
        for batch in BATCHES:
            args = make_inputs(definition, batch)
            try:
                fn(*args)
            except Exception as exc:  # e.g. flashinfer present but unable to build its kernel
                print(f"skipped {definition.name}__{variant}: {type(exc).__name__}: {exc}")
                break
            cases[batch, variant] = Case(fn, args, launchers, fast=True)
            if launchers:
                cases[batch, variant + ORDINARY] = Case(fn, args, launchers, fast=False)
    return cases


def launch_bound(cases: dict[Any, Case], rounds: int, calls: int
                 ) -> tuple[dict[Any, float], dict[Any, list[float]]]:
    """Median per-call time of every case, and its quartiles (the host is noisy)."""
    order = list(cases)
    times: dict[Any, list[float]] = {k: [] for k in order}
    gc.disable()  # no collector pause inside a round
    try:
        for round_ in range(rounds + 1):  # round 0 warms up and is dropped
            random.shuffle(order)
            for k in order:
                us = cases[k].per_call_us(calls)
                if round_:
                    times[k].append(us)
    finally:
        gc.enable()
    quartiles = {k: statistics.quantiles(v, n=4) for k, v in times.items()}
    return {k: statistics.median(v) for k, v in times.items()}, quartiles


def report(name: str, title: str, times: dict[tuple[int, str], float],
           floors: dict[str, float]) -> dict[str, Any]:
    """Print one table; return the per-batch times, best solution and ratios to the floors."""
    variants = sorted({v for _, v in times})
    rows, per_batch = [], {}
    for batch in BATCHES:
        mine = {v: times[batch, v] for v in variants if (batch, v) in times}
        best = min((v for v in mine if not v.endswith(ORDINARY)), key=mine.__getitem__)
        ratios = {f: mine[best] / us for f, us in floors.items()}
        per_batch[batch] = {"us": mine, "best": best, "best_over_floor": ratios}
        rows.append([batch, *(mine.get(v, "-") for v in variants), best,
                     *(f"{r:.2f}x" for r in ratios.values())])
    print(f"\n{name}: {title} (us per call)")
    print_table(["batch", *variants, "best", *(f"vs {f}" for f in floors)], rows)
    worst = {f: max(b["best_over_floor"][f] for b in per_batch.values()) for f in floors}
    print("worst best-vs-floor: " + ", ".join(f"{f} {r:.2f}x" for f, r in worst.items()))
    return {"batches": per_batch, "worst_best_over_floor": worst}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--out", type=Path, help="also write the JSON into this folder")
    parser.add_argument("--definitions", nargs="+", default=list(DEFINITIONS))
    opts = parser.parse_args()
    if opts.rounds < 2:
        parser.error("--rounds must be at least 2 (quartiles are reported)")
    hardware = current_hardware()
    one, sink = torch.randn(1, device="cuda"), torch.empty(1, device="cuda")
    floor_cases = {
        "empty": Case(lambda x: empty_kernel[(1,)](x), [one], [], True),
        "load_store": Case(lambda x, y: load_store_kernel[(1,)](x, y), [one, sink], [], True),
    }
    fast_empty = FastLauncher(empty_kernel)
    floor_cases["empty_fast"] = Case(lambda x: fast_empty((1, 1, 1), x, num_warps=4), [one],
                                     [], True)
    definitions = load_catalogue().definitions
    all_cases: dict[Any, Case] = {("floor", f): c for f, c in floor_cases.items()}
    for name in opts.definitions:
        for k, case in cases_for(definitions[name], hardware.key).items():
            all_cases[(name, *k)] = case
    launch, quartiles = launch_bound(all_cases, opts.rounds, opts.calls)
    device = {k: c.device_us() for k, c in all_cases.items() if not k[-1].endswith(ORDINARY)}
    launch_floor = {"empty kernel": launch["floor", "empty"]}
    device_floors = {"empty kernel": device["floor", "empty"],
                     "load+store": device["floor", "load_store"]}
    print(f"{hardware.name}: launch floor {launch_floor['empty kernel']:.2f} us per call "
          f"(FastLauncher: {launch['floor', 'empty_fast']:.2f}); device floors "
          f"{device_floors['empty kernel']:.2f} us empty, {device_floors['load+store']:.2f} us "
          "load+store")
    results: dict[str, Any] = {}
    for name in opts.definitions:
        pick = {k[1:]: v for k, v in launch.items() if k[0] == name}
        results[name] = {
            "launch_bound": report(name, "launch-bound", pick, launch_floor),
            "device": report(name, "device, L2 flushed",
                             {k[1:]: v for k, v in device.items() if k[0] == name},
                             device_floors),
        }
    payload = {
        "gpu": hardware.name, "torch": torch.__version__, "triton": triton.__version__,
        "calls": opts.calls, "rounds": opts.rounds,
        "floors_us": {"launch_empty": launch["floor", "empty"],
                      "launch_empty_fast": launch["floor", "empty_fast"],
                      "device_empty": device_floors["empty kernel"],
                      "device_load_store": device_floors["load+store"]},
        "definitions": results,
        "launch_bound_quartiles_us": {"/".join(map(str, k)): q for k, q in quartiles.items()},
    }
    ops = "" if opts.definitions == list(DEFINITIONS) else "_" + "_".join(
        sorted({definitions[n].op_type for n in opts.definitions}))
    path = write_json(f"small_batch{ops}_{hardware.key.lower()}", payload)
    if opts.out:
        (opts.out / path.name).write_text(path.read_text())
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
