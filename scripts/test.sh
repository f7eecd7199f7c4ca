#!/usr/bin/env bash
# The test suite (GPU tests are skipped without CUDA).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
# flashinfer-bench's pure-Python package for the compatibility tests (tests/compat), without
# its dependencies (they would pull a CUDA torch and FlashInfer's wheels). Importing it, its
# tracing with dumps and its input builder on a CPU need only these two besides torch and
# safetensors (checked in a bare venv; apache-tvm-ffi and flashinfer are not imported).
if ! "$py" -c "import importlib.metadata as m, sys; sys.exit(m.version('flashinfer-bench') != '0.1.2')" 2>/dev/null; then
  pip_q --no-deps flashinfer-bench==0.1.2
  pip_q "pydantic>=2" "docstring-parser>=0.16"
fi
# matplotlib for `fib report`'s plots (the `report` extra), so its tests run in CI.
"$py" -c "import matplotlib" 2>/dev/null || pip_q "matplotlib>=3.7"
cd "$root"
exec python -m pytest -q "$@"
