#!/usr/bin/env bash
# The wheel and sdist as a user meets them (scripts/check_wheel.py: built, installed in a
# fresh venv, run from an empty folder); then the same check on a wheel with one package taken
# out, which must fail at the contents check and at `import fib_runtime`: the check sees a
# package the build forgot (as the hand-written list once forgot fib_runtime.trust).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$root"
"$py" scripts/check_wheel.py
out=$(mktemp)
trap 'rm -f "$out"' EXIT
if "$py" scripts/check_wheel.py --without fib_runtime.trust >"$out" 2>&1; then
  cat "$out"
  echo "check_wheel: a wheel without fib_runtime.trust passed the check" >&2
  exit 1
fi
for expected in "FAILED: wheel contents: missing fib_runtime/trust/" \
                "No module named 'fib_runtime.trust'"; do
  if ! grep -qF "$expected" "$out"; then
    cat "$out"
    echo "check_wheel: without fib_runtime.trust, no line says: $expected" >&2
    exit 1
  fi
done
echo "check_wheel: without fib_runtime.trust the check fails, as it must:"
grep -E "^(FAILED|check_wheel)" "$out" | cut -c1-160
