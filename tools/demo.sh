#!/usr/bin/env bash
# The demonstration: installs what is missing, builds, and annotates the
# built-in clip of moving shapes with the shapes demo model.
#   tools/demo.sh [INPUT] [gst-maskrcnn-annotate options]
# Writes demo-output/annotated.mp4 (or .webm, .avi: the first encoder
# GStreamer has) and demo-output/detections.jsonl in the current folder.
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"

bash "$top/tools/install-deps.sh"
[ -d "$top/build/meson-private" ] || meson setup "$top/build" "$top" >/dev/null
ninja -C "$top/build" tools/gst-maskrcnn-annotate gst-plugin/libgstmaskrcnn.so \
  >/dev/null

# Run from the build tree, as `meson devenv` does: the plugin from
# build/gst-plugin, the demo model from the source tree.
export GST_PLUGIN_PATH="$top/build/gst-plugin"
export GST_MASKRCNN_MODEL="${GST_MASKRCNN_MODEL:-$top/models/shapes-demo.safetensors}"
mkdir -p demo-output
exec "$top/build/tools/gst-maskrcnn-annotate" -o demo-output/annotated \
  --json demo-output/detections.jsonl "$@"
