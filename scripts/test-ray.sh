#!/usr/bin/env bash
# The Ray cluster tests (marked `ray`; skipped by the main suite): adds the `ray` extra to
# the venv (a ~80 MB wheel, no torch), then starts local two-node clusters on 127.0.0.1.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$root"
python -c "import ray" 2>/dev/null || pip_q -e "$root[ray]"
exec env FIB_TEST_RAY=1 python -m pytest -q -m ray tests/scale "$@"
