"""How far cuBLAS, an fp32-accumulated product and the Triton GEMM solutions are from the
fp64 product for gemm_n4096_k14336 (fp16), and from each other (GPU).

Shows why retune allows one ulp at the output's scale: at small M cuBLAS sums in another
order (split-K) than the Triton kernels, so they differ by about one ulp of the largest
outputs while being equally accurate. Prints a table; writes
benchmarks/results/gemm_accuracy_<gpu>.json.

    python3 benchmarks/bench_gemm_accuracy.py
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_json

from fib_runtime.catalogue import (
    catalogue_root,
    declared_entries,
    entry_functions,
    load_catalogue,
)
from fib_runtime.hardware import current_hardware

DEFINITION = "gemm_n4096_k14336"
N, K = 4096, 14336


def triton_solutions() -> dict[str, object]:
    path = catalogue_root() / "gemm" / "solutions" / "triton_gemm.py"
    spec = importlib.util.spec_from_file_location("gemm_accuracy_triton", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = load_catalogue().definitions
    return {entry["variant"]: getattr(module, entry_functions(entry, names)[DEFINITION])
            for entry in declared_entries(path)}


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU")
    torch.manual_seed(0)
    solutions = triton_solutions()
    rows, results = [], []
    for m in (1, 16, 256, 1024):
        a = torch.randn(m, K, device="cuda", dtype=torch.float16)
        b = torch.randn(N, K, device="cuda", dtype=torch.float16)
        exact = a.double() @ b.double().T
        cublas = a @ b.T
        outputs = {"cublas": cublas, "fp32_accumulate": (a.float() @ b.float().T).half(),
                   **{name: fn(a, b) for name, fn in solutions.items()}}
        for name, out in outputs.items():
            to_exact = float((out.double() - exact).abs().max())
            to_cublas = float((out.double() - cublas.double()).abs().max())
            results.append({"M": m, "output": name, "max_error_vs_fp64": to_exact,
                            "max_difference_vs_cublas": to_cublas,
                            "max_abs_output": float(exact.abs().max())})
            rows.append([m, name, to_exact, to_cublas, float(exact.abs().max())])
    print_table(["M", "output", "max |err| vs fp64", "max |diff| vs cuBLAS", "max |C|"], rows)
    hw = current_hardware()
    path = write_json(f"gemm_accuracy_{hw.key.lower()}", {
        "device": hw.name, "libs": hw.libs, "definition": DEFINITION, "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
