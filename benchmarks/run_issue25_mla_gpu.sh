#!/usr/bin/env bash
# Issue 25's MLA checks and launch-configuration sweep on one GPU, < 9 min worst case (about
# 3 expected, most of it Triton compiling ~25 kernel variants once); each step has its own
# timeout, a failing step does not stop the other, the sweep's JSON is written after every cell.
#   tests  the MLA Triton solution and every swept configuration against the reference at
#          the official workloads' shapes (tests/definitions/test_attention_mla_gpu.py)  <= 200 s
#   sweep  bench_prefill_attention.py --only mla --variants on 10 official workloads each
#          of MLA decode and prefill: FlashInfer, the shipped solution, the pre-issue-25
#          split rules and the named configurations, table + per-variant summary    <= 320 s
# Usage: bash benchmarks/run_issue25_mla_gpu.sh OUT   (logs and JSON in OUT)
set -uo pipefail
out=${1:?usage: run_issue25_mla_gpu.sh OUT}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
log=$out/issue25_mla.log
step() {  # name, seconds, command...
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s): $*" | tee -a "$log"
  local start=$SECONDS
  timeout "$limit" "$@" >>"$log" 2>&1
  echo "== $name: exit $? in $((SECONDS - start)) s" | tee -a "$log"
}
step tests 200 python3 -m pytest -q -p no:cacheprovider -m gpu \
  tests/definitions/test_attention_mla_gpu.py
step sweep 320 python3 benchmarks/bench_prefill_attention.py --only mla --variants --limit 10 \
  --rounds 2 --out "$out"
grep -E "^== |passed|failed|error|Triton/FlashInfer|^  (decode|prefill) " "$log"
