#!/usr/bin/env bash
# Every GPU measurement of issue 29 but HF generate, about 9 minutes on one H100 or H200:
# the FlashInfer adapter's cost per eager call, the decode layer under CUDA graphs against the
# engine-style static choice before and after the step gate (with the per-op L2 diagnosis),
# and bench_choice's eager goal twice. JSON and one log under DIR (default
# benchmarks/results). HF generate (with its torch.compile modes) is its own command:
#   python3 integration/hf_generate.py --device cuda --batches 1,16,64 --layers 4 \
#     --new-tokens 16 --rounds 3 --compile-models llama,qwen3 --json DIR/hf_generate.json
set -uo pipefail
out=${1:-benchmarks/results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16}
log=$out/issue29_gpu.log
step() {  # name, seconds, command...
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s): $*" | tee -a "$log"
  local start=$SECONDS
  timeout "$limit" "$@" >>"$log" 2>&1
  echo "== $name: exit $? in $((SECONDS - start)) s" | tee -a "$log"
}
step adapter_cost 100 python3 benchmarks/bench_adapter_cost.py --out "$out/adapter_cost.json"
step step_graph 250 python3 benchmarks/bench_step_graph.py --out "$out/step_graph.json"
for run in 1 2; do
  step "choice_eager_$run" 90 python3 benchmarks/bench_choice.py --timings eager \
    --retune-timings device,eager --rounds 5 --budget 60 --out "$out" --tag "eager_$run"
done
tail -n 60 "$log"
