#!/usr/bin/env bash
# The engine adapters against the real engine wheels, each in its own environment so the
# main one (.venv) is untouched; FIB_ENGINES picks them (default: both). vLLM 0.33.0: torch
# 2.13 CPU + vllm --no-deps + the pure-Python packages its layers import (~2-4 min on a fresh
# machine). SGLang 0.5.23: it pins torch 2.14.1 + torchvision 0.29.1 (the CUDA build of
# torch: a ~6 GB environment, ~2.5 min on a fresh machine). An engine that does not import
# fails here instead of letting its test file skip.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
engines=${FIB_ENGINES:-vllm sglang}
cd "$root"

# What vLLM 0.33.0's config, layernorm, activation and plugin modules import (found by
# importing them on torch 2.13 CPU after `pip install --no-deps vllm`).
VLLM_NEEDS="regex cachetools psutil numpy requests tqdm blake3 py-cpuinfo transformers>=5.16.1,<5.21
  pydantic msgspec cloudpickle pyzmq pyyaml einops cbor2 aiohttp openai-harmony openai pillow
  pybase64 uvloop prometheus_client xgrammar fastapi partial_json_parser llguidance"
# einops: SGLang's MoE top-k module (moe.topk, via eplb.expert_distribution), which the MoE
# method's dispatch and combine types live beside. (Its FusedMoE layer module would also need
# openai and partial_json_parser, through sglang.srt.parser; the tests do not import it.)
SGLANG_NEEDS="IPython torchvision==0.29.1 dill sentencepiece compressed_tensors gguf pybase64 starlette
  msgspec pyzmq aiohttp apache-tvm-ffi einops"
FIB_NEEDS="filelock orjson nvidia-ml-py safetensors tqdm pytest"

make_env() {  # name, torch requirement, engine wheel, its packages
  local venv=${FIB_ENGINE_VENV_ROOT:-$root/.venv-engines}/$1
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  local pip="$venv/bin/python -m pip install -q --disable-pip-version-check"
  $pip "$2" >&2
  $pip --no-deps "$3" >&2
  # shellcheck disable=SC2086
  $pip $4 $FIB_NEEDS "$2" >&2  # torch named again so nothing can replace it
  $pip --no-deps -e "$root" >&2
  echo "$venv/bin/python"
}

importable() {  # python, module: say why the engine does not import, and fail
  "$1" -c "import $2" || { echo "test_engines: $2 does not import in $1" >&2; return 1; }
}

status=0
for engine in $engines; do
  case $engine in
    vllm)
      py=$(make_env vllm torch==2.13.0 vllm==0.33.0 "$VLLM_NEEDS")
      VLLM_TARGET_DEVICE=cpu importable "$py" vllm.model_executor.layers.layernorm || { status=1; continue; }
      VLLM_TARGET_DEVICE=cpu "$py" -m pytest -q -p no:cacheprovider tests/engines/test_vllm.py \
        tests/engines/test_vllm_moe.py \
        || status=1 ;;
    sglang)
      py=$(make_env sglang torch==2.14.1 sglang==0.5.23 "$SGLANG_NEEDS")
      importable "$py" sglang.srt.layers.layernorm || { status=1; continue; }
      importable "$py" "sglang.srt.layers.quantization.unquant, sglang.srt.layers.moe.topk" \
        || { status=1; continue; }
      "$py" -m pytest -q -p no:cacheprovider tests/engines/test_sglang.py \
        tests/engines/test_sglang_moe.py || status=1 ;;
    *) echo "unknown engine $engine" >&2; exit 2 ;;
  esac
done
exit $status
