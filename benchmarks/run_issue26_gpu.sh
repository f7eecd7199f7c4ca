#!/usr/bin/env bash
# Issue 26 on one GPU, from the repository root with the installed wheel on PYTHONPATH,
# in at most ~240 s (each step under its own timeout; a failing step does not stop the next):
#   tests   the gpu-marked tests of the MoE family (every Triton configuration against the
#           reference on the catalogue's three shapes at 1, 33 and 512 tokens, uniform and
#           skewed routing) and the generic catalogue GPU test of the v128256 sampling
#           solutions (torch, FlashInfer: ids inside the support, batch 1 to 255); the FP8
#           DeepSeek-V3 definition: our reference and torch solution against the official
#           data set's reference at its workloads' token counts up to 1000      <= 120 s
#   bench   bench_moe_sampling.py: per-token-count winners of the bf16 MoE configurations
#           against the default configuration, held-out token counts, expert skew; sampling
#           torch vs FlashInfer                                                 <= 110 s
# Usage: bash benchmarks/run_issue26_gpu.sh OUT   (OUT/tests.log, OUT/bench.log,
#        OUT/moe_sampling.json)
set -uo pipefail
out=${1:?usage: run_issue26_gpu.sh OUT}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
step() {  # log, name, seconds, command...
  local log=$1 name=$2 limit=$3
  shift 3
  echo "== $name (limit ${limit}s): $*" | tee -a "$log"
  local start=$SECONDS
  timeout "$limit" "$@" >>"$log" 2>&1
  echo "== $name: exit $? in $((SECONDS - start)) s" | tee -a "$log"
}
step "$out/tests.log" gpu_tests 120 python3 -m pytest -q -p no:cacheprovider -m gpu \
  tests/definitions/test_moe.py tests/definitions/test_moe_fp8.py \
  tests/definitions/test_catalogue_solutions.py \
  -k "(moe_bf16 and not test_matches_reference_on_gpu) or v128256 or official_reference"
step "$out/bench.log" bench 110 python3 benchmarks/bench_moe_sampling.py --out "$out" \
  --budget 85
tail -n 60 "$out/tests.log" "$out/bench.log"
