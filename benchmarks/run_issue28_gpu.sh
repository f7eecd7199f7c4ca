#!/usr/bin/env bash
# Issue 28's GPU run, ~4 min: the roofline benchmark (bench_catalogue_i.py --quick) for the
# short-row norms (with Qwen3's per-head q norm), the other norms and the activation, the
# decode GEMMs; then the GPU tests of issue 28's kernels. Each step has its own time limit
# (total 240 s), a failing step does not stop the others, and the benchmark writes its JSON
# after each part, so a step cut short keeps what it measured.
#   bash benchmarks/run_issue28_gpu.sh OUT          # from the repository root
#   bash benchmarks/run_issue28_gpu.sh OUT --dry    # the same steps on the CPU, tiny sizes
# Writes OUT/{short,norms,gemm}/catalogue_i_<gpu>_quick.json and a log per step in OUT;
# prints each step's exit status and the tail of each log.
set -uo pipefail
out=${1:?usage: run_issue28_gpu.sh OUT [--dry]}
dry=${2:-}
mkdir -p "$out"
: >"$out/steps.log"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
step() {  # name, seconds, command...
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s): $*" | tee -a "$out/steps.log"
  local start=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  echo "== $name: exit $? in $((SECONDS - start)) s" | tee -a "$out/steps.log"
}
short=(rmsnorm_h128 rmsnorm_h256 rmsnorm_h512 rmsnorm_h1024 fused_add_rmsnorm_h128
       fused_add_rmsnorm_h512 fused_add_rmsnorm_h1024)
norms=(rmsnorm_h4096 fused_add_rmsnorm_h4096 fused_add_rmsnorm_residual_h128
       fused_add_rmsnorm_residual_h1024 fused_add_rmsnorm_residual_h4096 silu_and_mul_i14336)
gemms=(gemm_n4096_k4096 gemm_n6144_k4096 gemm_n28672_k4096 gemm_n4096_k14336)
mode=--quick
if [ "$dry" = --dry ]; then  # CPU: Triton's interpreter, one definition of each kind
  mode=--dry
  short=(rmsnorm_h128)
  norms=(fused_add_rmsnorm_residual_h128)
  gemms=(gemm_n4096_k4096)  # --dry swaps in a small GEMM
fi
step bench_short 70 "$py" benchmarks/bench_catalogue_i.py "$mode" --only "${short[@]}" \
  --out "$out/short"
step bench_gemm 45 "$py" benchmarks/bench_catalogue_i.py "$mode" --only "${gemms[@]}" \
  --out "$out/gemm"
step bench_norms 50 "$py" benchmarks/bench_catalogue_i.py "$mode" --only "${norms[@]}" \
  --out "$out/norms"
step tests_kernels 45 "$py" -m pytest -q -p no:cacheprovider -m gpu \
  tests/definitions/test_roofline_kernels.py
step tests_catalogue 30 "$py" -m pytest -q -p no:cacheprovider -m gpu \
  tests/definitions/test_catalogue_solutions.py -k "short_t or multirow_t or splitk"
tail -n 25 "$out"/*.log
