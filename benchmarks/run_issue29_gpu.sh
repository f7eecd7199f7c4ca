#!/usr/bin/env bash
# The GPU measurements of issue 29, in parts that each fit one device command (< 10 min):
#   adapters  the FlashInfer adapter's cost per eager call (bench_adapter_cost.py) and the
#             FlashInfer-API decode layer under CUDA graphs against the engine-style static
#             path at batch 1, 8, 32, 64, 128, before and after `fib verify`
#             (bench_step_graph.py)                                              ~5 min
#   choice    bench_choice.py's eager goal, two consecutive runs                 ~6 min
#   hf-llama  HF generate, Llama shapes, batch 1/16/64: eager, fib, Liger, torch.compile
#             of the unpatched and of the routed model                          ~8 min
#   hf-qwen3  the same for Qwen3 shapes, without the compile modes               ~4 min
# Usage: bash benchmarks/run_issue29_gpu.sh OUT PART...   (JSON and one log per part in OUT)
set -uo pipefail
out=${1:?usage: run_issue29_gpu.sh OUT PART...}
shift
mkdir -p "$out"
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16}
step() {  # log, name, seconds, command...
  local log=$1 name=$2 limit=$3
  shift 3
  echo "== $name (limit ${limit}s): $*" | tee -a "$log"
  local start=$SECONDS
  timeout "$limit" "$@" >>"$log" 2>&1
  echo "== $name: exit $? in $((SECONDS - start)) s" | tee -a "$log"
}
hf() {  # model, extra arguments...
  local model=$1
  shift
  step "$out/hf_$model.log" "hf_$model" 500 python3 integration/hf_generate.py --device cuda \
    --models "$model" --batches 1,16,64 --layers 4 --new-tokens 16 --rounds 3 \
    --json "$out/hf_generate_$model.json" "$@"
}
for part in "$@"; do
  case $part in
    adapters)
      step "$out/adapters.log" adapter_cost 120 python3 benchmarks/bench_adapter_cost.py \
        --out "$out/adapter_cost.json"
      step "$out/adapters.log" step_graph 330 python3 benchmarks/bench_step_graph.py \
        --out "$out/step_graph.json" ;;
    choice)
      for run in 1 2; do
        step "$out/choice.log" "choice_eager_$run" 170 python3 benchmarks/bench_choice.py \
          --timings eager --retune-timings device,eager --rounds 5 --budget 140 \
          --out "$out" --tag "eager_$run"
      done ;;
    hf-llama) hf llama --compile-models llama ;;
    hf-qwen3) hf qwen3 --modes eager,fib,liger --compile-models none ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
done
tail -n 40 "$out"/*.log
