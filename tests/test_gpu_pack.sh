#!/usr/bin/env bash
# tools/gpu-check.sh prepare into a temporary directory, and the pack it
# makes checked here, without a GPU: its size; its programs running from it
# alone (LD_LIBRARY_PATH the pack's lib only), the CPU backend reproducing
# the pack's references; compute-sanitizer's filter naming every kernel of
# engine/cuda; run.sh saying "no GPU" with meson's skip code.  Exits 77
# (skipped) without nvcc, or without torch, h5py or scipy (the models).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-/usr/bin/python3}

if [ ! -x /usr/local/cuda/bin/nvcc ]; then
  echo "skipped: no /usr/local/cuda/bin/nvcc"
  exit 77
fi
if ! "$python" -c 'import torch, torchvision, h5py, scipy' 2>/dev/null; then
  echo "skipped: $python cannot import torch, torchvision, h5py and scipy"
  exit 77
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
pack=$scratch/pack

fail () {
  echo "FAIL $*"
  exit 1
}

started=$(date +%s)
PYTHON=$python "$repo/tools/gpu-check.sh" prepare "$pack"
echo "ok   prepare: $(($(date +%s) - started)) s"

bytes=$(du -sb "$pack" | cut -f1)
[ "$bytes" -le $((64 * 1024 * 1024)) ] || fail "size: $bytes bytes, over 64 MiB"
echo "ok   size: $bytes bytes"

# run.sh unpacks the libraries, finds no GPU and skips
[ -x "$pack/run.sh" ] || fail "run.sh: missing"
started=$(date +%s)
rc=0
output=$(PYTHON=$python "$pack/run.sh" "$scratch/out" 2>&1) || rc=$?
seconds=$(($(date +%s) - started))
if [ "$rc" != 77 ] || ! grep -q "no GPU" <<< "$output" || [ "$seconds" -gt 30 ]; then
  fail "run.sh without a GPU: exit status $rc after $seconds s: $output"
fi
echo "ok   run.sh without a GPU: exit status 77 after $seconds s: $output"

# everything the programs load is the pack's, glibc's, the C++ runtime's
# or CUDA's (the GPU machine's own)
unset MRCNN_CUDA_LIBRARY_PATH
loaded=$(LD_LIBRARY_PATH=$pack/lib ldd "$pack"/libexec/*)
foreign=$(awk -v lib="$pack/lib/" '$2 == "=>" && index($3, lib) != 1 { print $1, $3 }' <<< "$loaded" \
  | grep -vE '^(libc|libm|libdl|librt|libpthread|libresolv|libstdc\+\+|libgcc_s)\.so' \
  | grep -vE '^lib(cudart|cublas|cublasLt|cudnn)\.so' || true)
[ -z "$foreign" ] || fail "libraries from outside the pack: $foreign"
echo "ok   libraries: $(grep -c "$pack/lib/" <<< "$loaded") loads from the pack, the rest glibc, libstdc++ and CUDA"

for tool in mrcnn-detect mrcnn-bench; do
  LD_LIBRARY_PATH=$pack/lib "$pack/libexec/$tool" --help | grep -- --model > /dev/null \
    || fail "$tool --help"
done
for model in models/narrow.safetensors models/matterport-narrow.h5; do
  LD_LIBRARY_PATH=$pack/lib "$pack/libexec/mrcnn-detect" --info --model "$pack/$model" \
    | "$python" -c 'import json, sys; json.load(sys.stdin)' || fail "mrcnn-detect --info $model"
done
echo "ok   --help and --info (both models) with LD_LIBRARY_PATH=$pack/lib alone"

# the packed test_cuda.py, as the GPU machine runs it, on the CPU backend
PYTHONDONTWRITEBYTECODE=1 "$python" "$pack/tests/python/test_cuda.py" \
  --detect "$pack/bin/mrcnn-detect" --pack "$pack" --cpu-only || fail "CPU against the pack's references"

# the sanitizer's filter names every kernel defined in engine/cuda, all
# named *_kernel at the start of a line
kernels=$(sed -n 's/^\([a-z0-9_]*_kernel\) (.*/\1/p' "$repo"/engine/cuda/*.cu)
[ "$(grep -c __global__ <(cat "$repo"/engine/cuda/*.cu))" = "$(wc -l <<< "$kernels")" ] \
  || fail "kernels: a __global__ function of engine/cuda is not named NAME_kernel at a line's start"
diff <(sort -u <<< "$kernels") "$pack/kernels.txt" || fail "kernels.txt: not engine/cuda's kernels"
echo "ok   kernels.txt: the $(wc -l < "$pack/kernels.txt") kernels of engine/cuda"
