# Sourced by demo.sh and test.sh: create or reuse .venv and install fib-runtime into it.
# CPU-only machines get the CPU build of torch (never the multi-GB CUDA download).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${FIB_VENV:-$root/.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py=$venv/bin/python
pip_q() { "$py" -m pip install -q --disable-pip-version-check "$@"; }
if ! "$py" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    pip_q torch
  else
    # A CPU build: FIB_TORCH_CPU names where to find one (default: the 2.13.0 CPU wheel).
    pip_q ${FIB_TORCH_CPU:-torch==2.13.0}
  fi
fi
stamp=$venv/.fib-installed
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  # transformers pinned to the GPU machine's 5.17: newer ones mark layers for kernels >= 0.18.2 only
  pip_q -e "$root[triton,flashinfer,dev,transformers]" "transformers==5.17.0" "kernels==0.16.2"
  touch "$stamp"
fi
export PATH=$venv/bin:$PATH
