#!/usr/bin/env bash
# The GPU evidence in one go: GPU tests, the demo, the catalogue retune, timing agreement,
# and the CPU-side overhead benchmarks. Logs and JSON go to ${1:-gpu_suite_out}.
#   bash benchmarks/run_gpu_suite.sh OUT_DIR [parts...]   parts: tests demo catalogue small timing overhead
set -uo pipefail
out=${1:-gpu_suite_out}; shift || true
parts=${*:-tests demo catalogue small timing overhead}
mkdir -p "$out"
py=${PYTHON:-python3}
export FIB_CACHE_PATH=${FIB_CACHE_PATH:-$(mktemp -d)}
run() { local name=$1; shift; echo "=== $name: $*"; local t0=$SECONDS
        "$@" 2>&1 | tee "$out/$name.log"; echo "=== $name: exit ${PIPESTATUS[0]} in $((SECONDS - t0)) s"; }
nvidia-smi -L 2>&1 | tee "$out/device.txt"
for part in $parts; do
  case $part in
    tests) run gpu_tests "$py" -m pytest -m gpu -q -p no:cacheprovider tests ;;
    demo) run demo "$py" -m fib_runtime.cli.main demo "$(mktemp -d)/db" ;;
    catalogue) run catalogue_retune "$py" benchmarks/bench_catalogue_retune.py ;;
    small) run small_batch "$py" benchmarks/bench_small_batch.py ;;
    timing) run timing_agreement "$py" benchmarks/bench_timing_agreement.py ;;
    overhead) run bench_dispatch "$py" benchmarks/bench_dispatch.py
              run bench_capture "$py" benchmarks/bench_capture.py
              run bench_store "$py" benchmarks/bench_store.py ;;
  esac
done
cp benchmarks/results/*.json "$out/" 2>/dev/null || true
