#!/usr/bin/env bash
# The main job on the embedded default database: capture -> retune -> dispatch.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec fib demo "$@"
