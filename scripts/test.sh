#!/usr/bin/env bash
# The test suite (GPU tests are skipped without CUDA).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$root"
exec python -m pytest -q "$@"
