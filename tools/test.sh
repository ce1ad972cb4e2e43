#!/usr/bin/env bash
# Builds the project and runs every test twice: in the normal build, and in
# a build with AddressSanitizer and UndefinedBehaviorSanitizer (any report,
# leaks included, fails the test); the normal build also runs the GStreamer
# element tests under valgrind (suite 'valgrind': a definite leak fails).  A
# third build (build-fuzz/, clang) runs each libFuzzer target of tests/fuzz for
# a bounded, reproducible time (suite 'fuzz').  The last line reads
# "N passed, N failed, N skipped".  Extra arguments go to the first two
# builds' `meson test`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/install-deps.sh
# OpenMP threads (the CPU backend's) wait passively: with its default
# spinning, a detection sharing the cores with other busy processes (tests
# run two at a time) takes many times longer
export OMP_WAIT_POLICY=passive
# nvcc for the CUDA backend (built wherever the toolkit is; its GPU tests
# skip where no GPU is present)
[ -x /usr/local/cuda/bin/nvcc ] && export PATH=$PATH:/usr/local/cuda/bin

setup () {
  local dir=$1
  shift
  if [ -d "$dir/meson-private" ]; then
    meson setup --reconfigure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@" >/dev/null
  fi
  ninja -C "$dir"
}

setup build
# (the introspection scanner cannot run sanitized code)
setup build-sanitize --buildtype=debugoptimized -Db_sanitize=address,undefined \
  -Db_lundef=false -Dintrospection=disabled

# libFuzzer needs clang; its build holds only the engine and the targets
CC=clang setup build-fuzz --buildtype=debugoptimized -Dfuzzing=true \
  -Db_sanitize=address,undefined -Db_lundef=false -Dgstreamer=disabled \
  -Dintrospection=disabled

rc=0
meson test -C build --print-errorlogs "$@" || rc=$?
# full stacks for leaks, so the suppressions of system libraries match
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0 \
  LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp:print_suppressions=0 \
  meson test -C build-sanitize --print-errorlogs "$@" || rc=$?
meson test -C build-fuzz --suite fuzz --print-errorlogs || rc=$?
/usr/bin/python3 tools/test_summary.py build/meson-logs/testlog.json \
  build-sanitize/meson-logs/testlog.json build-fuzz/meson-logs/testlog.json
exit $rc
