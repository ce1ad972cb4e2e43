#!/bin/sh
# Runs a libFuzzer target for a bounded time.  Every input in the corpus
# directories (seeds, kept regression inputs) is replayed first; crashing
# inputs go to WORKDIR/artifacts.  Exits non-zero on a crash, a leak, a
# sanitizer report, a timeout (10 s an input) or running out of memory
# (2.5 GiB, 1.1 GiB in one allocation).
#
# By default the run is reproducible (fixed seed, a fresh WORKDIR/fixed-corpus),
# so that a test run passes or fails the same way each time.  With
# FUZZ_RANDOM=1 the seed is random and WORKDIR/corpus grows from run to run;
# FUZZ_SECONDS and FUZZ_RUNS override the time and set a number of runs.
# usage: run_fuzzer.sh TARGET WORKDIR SECONDS CORPUS_DIR...
set -eu
target=$1 workdir=$2 seconds=${FUZZ_SECONDS:-$3}
shift 3
here=$(cd "$(dirname "$0")" && pwd)
# corpus directories that do not exist (no regression input kept) are left out
for dir in "$@"; do
  shift
  [ -d "$dir" ] && set -- "$@" "$dir"
done
set -- -max_total_time="$seconds" "$@"
corpus=$workdir/corpus
if [ -z "${FUZZ_RANDOM:-}" ]; then
  corpus=$workdir/fixed-corpus
  rm -rf "$corpus"
  set -- -seed=1 "$@"
fi
if [ -n "${FUZZ_RUNS:-}" ]; then
  set -- -runs="$FUZZ_RUNS" "$@"
fi
mkdir -p "$corpus" "$workdir/artifacts"
export LSAN_OPTIONS="suppressions=$here/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
exec "$target" -timeout=10 -rss_limit_mb=2560 -malloc_limit_mb=1100 \
  -print_final_stats=1 -artifact_prefix="$workdir/artifacts/" \
  "$corpus" "$@"
