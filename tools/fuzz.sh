#!/usr/bin/env bash
# Builds the libFuzzer targets in build-fuzz/ (clang, ASan + UBSan) and runs
# each for SECONDS (default 600) with a random seed: any crash, leak or
# sanitizer report fails.  New inputs accumulate from run to run in
# build-fuzz/tests/fuzz/work-*/corpus, crashing ones in work-*/artifacts
# (keep them in tests/fuzz/regressions/TARGET/ once fixed).  tools/test.sh
# runs the same targets briefly with a fixed seed.
# usage: tools/fuzz.sh [SECONDS] [extra meson test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
args=(-Dfuzzing=true -Db_sanitize=address,undefined
  -Db_lundef=false -Dbuildtype=debugoptimized -Dgstreamer=disabled
  -Dintrospection=disabled)
if [ -d build-fuzz/meson-private ]; then
  meson setup --reconfigure build-fuzz "${args[@]}" >/dev/null
else
  CC=clang meson setup build-fuzz "${args[@]}" >/dev/null
fi
ninja -C build-fuzz
FUZZ_RANDOM=1 FUZZ_SECONDS=$seconds meson test -C build-fuzz --suite fuzz \
  --timeout-multiplier $(( seconds / 45 + 2 )) --print-errorlogs "$@"
