#!/usr/bin/env bash
# Builds the project and runs every test; the last line reads
# "N passed, N failed, N skipped".  Extra arguments go to `meson test`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/install-deps.sh
if [ -d build/meson-private ]; then
  meson setup --reconfigure build >/dev/null
else
  meson setup build >/dev/null
fi
ninja -C build

rc=0
meson test -C build --print-errorlogs "$@" || rc=$?
/usr/bin/python3 tools/test_summary.py build/meson-logs/testlog.json
exit $rc
