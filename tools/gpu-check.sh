#!/usr/bin/env bash
# One short run on a lent GPU machine that gives the whole picture of the
# CUDA backend (docs/testing.md, "GPU check"):
#
#   tools/gpu-check.sh prepare DIR   here, without a GPU: builds the engine's
#                                    tools for sm_90 (+ PTX), makes the small
#                                    models and their CPU results, gathers the
#                                    libraries a bare machine lacks; DIR (at
#                                    most 64 MiB) is all the GPU machine needs
#   DIR/run.sh OUT                   there, from DIR alone, within 6 minutes
#                                    on an H100: every check runs, failed or
#                                    not; OUT/summary.txt first, then logs
#
# GPU_CHECK_BUILD: prepare's build directory (default: build-gpu beside
# tools/).  PYTHON: the Python with torch (default: python3 or
# /usr/bin/python3, whichever imports torch).
set -euo pipefail

LIMIT_BYTES=$((64 * 1024 * 1024))  # what a GPU machine receives

usage () {
  echo "usage: $0 prepare DIR | DIR/run.sh OUT (the copy in a prepared DIR)" >&2
  exit 2
}

python_with_torch () {
  if [ -n "${PYTHON:-}" ]; then
    echo "$PYTHON"
    return
  fi
  local candidate
  for candidate in python3 /usr/bin/python3; do
    if "$candidate" -c 'import torch' 2>/dev/null; then
      echo "$candidate"
      return
    fi
  done
  echo python3
}

prepare () {
  local repo build dir python tool name path
  repo=$(cd "$(dirname "$0")/.." && pwd)
  build=${GPU_CHECK_BUILD:-$repo/build-gpu}
  mkdir -p "$1"
  dir=$(cd "$1" && pwd)
  python=$(python_with_torch)
  export PATH=/usr/local/cuda/bin:$PATH
  # an earlier pack (pack.env comes first) is replaced, anything else kept
  if [ -n "$(ls -A "$dir")" ] && [ ! -f "$dir/pack.env" ]; then
    echo "gpu-check: $dir: not empty and not a pack" >&2
    exit 1
  fi

  # one architecture, the H100's, and its PTX: a fraction of the default
  # build's nvcc time; no GStreamer (the GPU machine has none)
  local options=(-Dcuda=enabled -Dgpu_architectures=90 -Dgstreamer=disabled
    -Dintrospection=disabled --buildtype=release)
  if [ -d "$build/meson-private" ]; then
    meson setup --reconfigure "$build" "$repo" "${options[@]}" > /dev/null
  else
    meson setup "$build" "$repo" "${options[@]}" > /dev/null
  fi
  ninja -C "$build" tools/mrcnn-detect tools/mrcnn-bench

  find "$dir" -mindepth 1 -delete
  echo "BUILT='$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$repo" rev-parse --short HEAD \
    2>/dev/null || echo unknown)$(git -C "$repo" diff --quiet HEAD 2>/dev/null \
    || echo ' with local changes')'" > "$dir/pack.env"
  mkdir -p "$dir"/{bin,libexec,lib,tests/python,tools,bench}
  cp "$build"/tools/mrcnn-detect "$build"/tools/mrcnn-bench "$dir/libexec/"
  cp "$build"/engine/libmrcnn.so "$dir/lib/"
  # Every library the tools load but glibc's (the machine's, of at least
  # GLIBC_NEEDED), the C++ runtime's (any machine that runs torch has one
  # recent enough: the engine needs GLIBCXX_3.4.21; this one would need a
  # newer glibc) and the CUDA ones (run finds the machine's)
  local loaded
  loaded=$(LD_LIBRARY_PATH=$dir/lib ldd "$dir"/libexec/* "$dir"/lib/libmrcnn.so)
  while read -r name path; do
    case $name in
      libc.so.*|libm.so.*|libdl.so.*|librt.so.*|libpthread.so.*|libresolv.so.*) ;;
      libstdc++.so.*|libgcc_s.so.*) ;;
      libcudart.so.*|libcublas.so.*|libcublasLt.so.*|libcudnn.so.*|libmrcnn.so) ;;
      *) cp -L "$path" "$dir/lib/$name" ;;
    esac
  done < <(awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' <<< "$loaded" | sort -u)
  # PNG and JPEG are built into this gdk-pixbuf: no loader modules, and
  # none of the machine's
  : > "$dir/lib/loaders.cache"
  for tool in mrcnn-detect mrcnn-bench; do
    cat > "$dir/bin/$tool" <<EOF
#!/bin/sh
# $tool with the packed libraries, then the CUDA ones run.sh found
here=\$(dirname "\$0")/..
LD_LIBRARY_PATH=\$here/lib\${MRCNN_CUDA_LIBRARY_PATH:+:\$MRCNN_CUDA_LIBRARY_PATH} \\
  GDK_PIXBUF_MODULE_FILE=\$here/lib/loaders.cache exec "\$here/libexec/$tool" "\$@"
EOF
    chmod +x "$dir/bin/$tool"
  done

  # the engine's own kernels, for compute-sanitizer's filter
  grep -aoE '_Z[0-9]+[a-z0-9_]+_kernel' "$dir/lib/libmrcnn.so" | sed 's/^_Z[0-9]*//' \
    | sort -u > "$dir/kernels.txt"
  {
    echo "GLIBC_NEEDED=$(grep -aohE 'GLIBC_2\.[0-9]+' "$dir"/libexec/* "$dir"/lib/* | sort -uV \
      | tail -1 | cut -d_ -f2)"
    echo "CUDA_LIBRARIES='$(awk '$1 ~ /^lib(cudart|cublas|cublasLt|cudnn)[.]so/ { print $1 }' \
      <<< "$loaded" | sort -u | xargs)'"
  } >> "$dir/pack.env"

  cp "$repo"/tests/python/{test_cuda,harness,models,test_parity}.py "$dir/tests/python/"
  cp "$repo"/tools/export_torchvision.py "$dir/tools/"
  cp "$repo"/bench/{compare,torchvision_bench}.py "$dir/bench/"
  cp "$0" "$dir/gpu-check.sh"
  cat > "$dir/run.sh" <<'EOF'
#!/bin/sh
exec bash "$(dirname "$0")/gpu-check.sh" run "$@"
EOF
  chmod +x "$dir/run.sh"

  # models, images and the CPU backend's results, by the packed program
  PYTHONDONTWRITEBYTECODE=1 "$python" "$repo/tests/python/test_cuda.py" \
    --detect "$dir/bin/mrcnn-detect" --prepare "$dir"

  # compressed (the libraries, oneDNN 40 MiB of them); run unpacks them
  tar -C "$dir" -czf "$dir/lib.tar.gz" lib
  rm -r "${dir:?}/lib"

  local bytes
  bytes=$(du -sb "$dir" | cut -f1)
  (cd "$dir" && du -sh -- *)
  echo "gpu-check: $dir: $((bytes * 10 / 1048576 / 10)).$((bytes * 10 / 1048576 % 10)) MiB" \
    "(limit $((LIMIT_BYTES / 1048576)) MiB)"
  if [ "$bytes" -gt "$LIMIT_BYTES" ]; then
    echo "gpu-check: $dir is over the limit" >&2
    exit 1
  fi
}

# Directories of the CUDA libraries the engine links that the loader would
# not find by itself: /usr/local/cuda's, else those of pip's nvidia-*
# wheels (PyTorch's), where a machine has cuDNN only that way.
cuda_library_path () {
  local lib found dirs="" sites
  sites=$("$PYTHON" -c 'import site; print(*site.getsitepackages(), site.getusersitepackages())' \
    2>/dev/null || true)
  for lib in $CUDA_LIBRARIES; do
    if [ -e "/usr/local/cuda/lib64/$lib" ]; then
      found=/usr/local/cuda/lib64
    elif ldconfig -p 2>/dev/null | grep "[[:space:]]$lib " > /dev/null; then
      continue
    else
      # one word per directory
      # shellcheck disable=SC2086
      found=$(find $sites -path '*/nvidia/*' -name "$lib" -printf '%h\n' -quit 2>/dev/null || true)
      [ -n "$found" ] || continue
    fi
    case ":$dirs:" in
      *":$found:"*) ;;
      *) dirs=${dirs:+$dirs:}$found ;;
    esac
  done
  echo "$dirs"
}

# section NAME BUDGET COMMAND...: COMMAND within BUDGET seconds (then it and
# its children are killed), its output in OUT/NAME.log; its exit status,
# time and budget appended to OUT/sections
section () {
  local name=$1 budget=$2 start rc=0
  shift 2
  start=$(date +%s)
  timeout -k 10 "$budget" "$@" > "$out/$name.log" 2>&1 || rc=$?
  echo "$name $rc $(($(date +%s) - start)) $budget" >> "$out/sections"
}

# The versions of what the engine loads (paths from ldd), as the libraries
# report them
library_versions () {
  "$PYTHON" - "$@" <<'EOF'
import ctypes, sys
paths = dict(arg.split("=", 1) for arg in sys.argv[1:])
value = ctypes.c_int()
cudart = ctypes.CDLL(paths["libcudart.so.13"])
cudart.cudaRuntimeGetVersion(ctypes.byref(value))
runtime = value.value
cudart.cudaDriverGetVersion(ctypes.byref(value))
driver = value.value
cublas = ctypes.CDLL(paths["libcublas.so.13"])
cublas_version = []
for part in range(3):  # MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL
    cublas.cublasGetProperty(part, ctypes.byref(value))
    cublas_version.append(str(value.value))
cudnn = ctypes.CDLL(paths["libcudnn.so.9"])
cudnn.cudnnGetVersion.restype = ctypes.c_size_t
version = cudnn.cudnnGetVersion()
print(f"engine: CUDA driver API {driver // 1000}.{driver % 1000 // 10}, runtime {runtime // 1000}."
      f"{runtime % 1000 // 10}, cuBLAS {'.'.join(cublas_version)}, cuDNN {version // 10000}."
      f"{version % 10000 // 100}.{version % 100} ({paths['libcudnn.so.9']})")
EOF
}

run () {
  [ $# -eq 1 ] || usage
  local pack
  pack=$(cd "$(dirname "$0")" && pwd)
  [ -f "$pack/pack.env" ] || usage
  mkdir -p "$1"
  out=$(cd "$1" && pwd)
  cd "$pack"
  # shellcheck source=/dev/null
  . ./pack.env
  PYTHON=$(python_with_torch)
  export PATH=$PATH:/usr/local/cuda/bin PYTHONDONTWRITEBYTECODE=1
  local started
  started=$(date +%s)
  rm -f "$out/sections" "$out/checks" "$out/bench.jsonl"
  [ -d lib ] || tar -xzf lib.tar.gz
  export MRCNN_CUDA_LIBRARY_PATH
  MRCNN_CUDA_LIBRARY_PATH=$(cuda_library_path)

  if ! bin/mrcnn-detect --backend cuda --model models/narrow.safetensors \
      images/narrow-240x320.png > /dev/null 2> "$out/probe.log" \
      && grep -q "not available" "$out/probe.log"; then
    echo "no GPU: $(cat "$out/probe.log")" | tee "$out/summary.txt"
    exit 77
  fi

  # what the engine loads, and from where
  local loaded missing found=() lib path
  loaded=$(LD_LIBRARY_PATH=lib${MRCNN_CUDA_LIBRARY_PATH:+:$MRCNN_CUDA_LIBRARY_PATH} \
    ldd libexec/mrcnn-detect libexec/mrcnn-bench)
  missing=$(awk '$3 == "not" { print $1 }' <<< "$loaded" | sort -u | xargs)
  for lib in $CUDA_LIBRARIES; do
    path=$(awk -v lib="$lib" '$1 == lib && $3 ~ /^\// { print $3; exit }' <<< "$loaded")
    found+=("$lib=${path:-not found}")
  done
  {
    if [ -z "$missing" ]; then
      echo "PASS libraries: ${found[*]}"
    else
      echo "FAIL libraries: not found: $missing (looked in the pack, the system," \
        "/usr/local/cuda/lib64 and pip's nvidia-* wheels)"
    fi
    local have
    have=$(getconf GNU_LIBC_VERSION | cut -d' ' -f2)
    if [ "$(printf '%s\n' "$GLIBC_NEEDED" "$have" | sort -V | head -1)" = "$GLIBC_NEEDED" ]; then
      echo "PASS glibc: the pack needs $GLIBC_NEEDED, this machine has $have"
    else
      echo "FAIL glibc: the pack needs $GLIBC_NEEDED, this machine has $have"
    fi
  } > "$out/checks"

  {
    echo "gst-maskrcnn GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'); pack built $BUILT"
    nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader \
      | sed 's/^/GPU /' || echo "GPU: nvidia-smi failed"
    nvidia-smi | grep -o 'CUDA Version: [0-9.]*' | sed 's/^/driver: /' || true
    if [ -z "$missing" ]; then
      LD_LIBRARY_PATH=$MRCNN_CUDA_LIBRARY_PATH library_versions "${found[@]}" \
        || echo "engine: library versions unreadable (environment.log)"
    fi
    "$PYTHON" -c 'import torch, torchvision; print(f"torch {torch.__version__}, torchvision" \
      f" {torchvision.__version__}, its CUDA {torch.version.cuda}, cuDNN" \
      f" {torch.backends.cudnn.version()}")' || echo "torch: not importable"
    (compute-sanitizer --version || echo "compute-sanitizer: not found") | tail -1
  } > "$out/environment.txt" 2> "$out/environment.log"

  local detect=(--detect bin/mrcnn-detect --pack .)
  # correctness in two streams at once (the GPU has room for both), the
  # benchmark alone after them
  (
    section parity 200 "$PYTHON" tests/python/test_cuda.py "${detect[@]}"
    section torchvision 80 "$PYTHON" tests/python/test_cuda.py "${detect[@]}" --full --full-images 2
  ) &
  section sanitizer 200 "$PYTHON" tests/python/test_cuda.py "${detect[@]}" --sanitizer \
    --kernels kernels.txt --jobs 8 &
  wait
  section bench 100 "$PYTHON" bench/compare.py --bench bin/mrcnn-bench --backend cuda \
    --shapes matterport-r101 --precisions fp16 --batches 1,8 --cases worst \
    --jsonl "$out/bench.jsonl"

  summary "$(($(date +%s) - started))"
  ! grep -q '^FAIL' "$out/summary.txt"
}

# OUT/summary.txt: the versions, the machine checks, one line per section
# (its checks counted, its time against its budget), then one per check
summary () {
  local details name rc seconds budget note
  details=$(
    for name in parity torchvision sanitizer; do
      sed -n "s/^ok   /PASS $name /p; s/^FAIL /FAIL $name /p" "$out/$name.log"
    done
    # compare.py's tables: per run, shape, precision, batch, case, engine
    # p50 and fps, torch p50 and fps, speed-up, engine and torch MiB,
    # detections; per stage, the engine's times
    awk -F' *[|] *' '$2 == "shape" || $2 ~ /^-/ { next }
      NF == 14 { printf "%s bench %s %s batch %s %s: engine p50 %s ms, %s fps; torch p50 %s ms," \
        " %s fps; speed-up %s; %s / %s MiB; detections %s\n", (/failed/ ? "FAIL" : "PASS"), $2,
        $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 }
      NF == 11 { printf "PASS bench stages %s, ms: preprocess %s, backbone %s, proposals %s," \
        " detect %s, masks %s, paste %s; sum %s, p50 %s\n", $2, $3, $4, $5, $6, $7, $8, $9,
        $10 }' "$out/bench.log"
  )
  {
    cat "$out/environment.txt"
    echo "total: $1 s"
    echo
    cat "$out/checks"
    for name in parity torchvision sanitizer bench; do
      rc=missing seconds=0 budget=0
      read -r rc seconds budget < <(awk -v name="$name" '$1 == name { print $2, $3, $4 }' \
        "$out/sections") || true
      case $rc in
        0) note="" ;;
        124|137) note=", timed out" ;;
        77) note=", $(grep -m1 '^skipped' "$out/$name.log")" ;;
        *) note=", exit status $rc" ;;
      esac
      echo "$([ "$rc" = 0 ] && echo PASS || echo FAIL) $name:" \
        "$(grep -c "^PASS $name " <<< "$details") passed," \
        "$(grep -c "^FAIL $name " <<< "$details") failed, $seconds s of $budget s$note"
    done
    echo
    echo "$details"
  } > "$out/summary.txt"
  # on the terminal: the versions, the overview and what failed
  awk 'blank < 2 { print } /^$/ { blank++ } blank >= 2 && /^FAIL/' "$out/summary.txt"
}

case ${1:-} in
  prepare) [ $# -eq 2 ] || usage; prepare "$2" ;;
  run) shift; run "$@" ;;
  *) usage ;;
esac
