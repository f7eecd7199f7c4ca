#!/usr/bin/env bash
# Issue 25's GPU checks and measurements, < 240 s in all; each step has its own timeout and a
# failing step does not stop the others. Run from the repository root, fib_runtime importable
# (the installed wheel on PYTHONPATH, or an editable install):
#   tests     the prefill and MLA solutions (torch, Triton, FlashInfer) against the reference
#             on the GPU, FlashInfer's plan made once per workload                    <= 50 s
#   official  bench_prefill_attention.py on 12 official workloads' shapes a GQA prefill
#             definition: Triton vs FlashInfer's own wrappers (torch on the small)    <= 70 s
#   mla       the same on 15 official workloads each of MLA decode and prefill         <= 55 s
#   grid      GQA serving mixes (prompts, appends over a prefix) of all six prefill
#             definitions, ps16 included, with other Triton tile configurations       <= 60 s
# Usage: bash benchmarks/run_issue25_gpu.sh OUT   (logs and JSON in OUT)
set -uo pipefail
out=${1:?usage: run_issue25_gpu.sh OUT}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
log=$out/issue25.log
step() {  # name, seconds, command...
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s): $*" | tee -a "$log"
  local start=$SECONDS
  timeout "$limit" "$@" >>"$log" 2>&1
  echo "== $name: exit $? in $((SECONDS - start)) s" | tee -a "$log"
}
step tests 50 python3 -m pytest -q -p no:cacheprovider -m gpu \
  tests/definitions/test_attention_prefill_gpu.py
step official 70 python3 benchmarks/bench_prefill_attention.py --only official --limit 12 \
  --rounds 2 --out "$out"
step mla 55 python3 benchmarks/bench_prefill_attention.py --only mla --limit 15 --rounds 2 \
  --out "$out"
step grid 60 python3 benchmarks/bench_prefill_attention.py --only grid --rounds 2 --configs \
  --out "$out"
grep -E "^== |passed|failed|error|Triton/FlashInfer" "$log"
