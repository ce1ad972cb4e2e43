#!/usr/bin/env bash
# Builds mrcnn-detect (installing what it needs) and runs it.
#   tools/detect.sh --model MODEL.safetensors|MODEL.h5 [--config FILE] IMAGE...
#                                                        detect on your images
#   tools/detect.sh                                      demonstration run
# The demonstration runs the shapes demo model (models/) on a synthetic
# frame of squares, circles and triangles.
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"

bash "$top/tools/install-deps.sh"
[ -d "$top/build/meson-private" ] || meson setup "$top/build" "$top" >/dev/null
ninja -C "$top/build" tools/mrcnn-detect >/dev/null

if [ $# -gt 0 ]; then
  exec "$top/build/tools/mrcnn-detect" "$@"
fi
demo="$top/build/demo"
mkdir -p "$demo"
/usr/bin/python3 -c "
import sys; sys.path.insert(0, '$top/tools')
from PIL import Image; import train_shapes
Image.fromarray(train_shapes.shapes_frame(7, 640, 480)[0]).save('$demo/shapes.png')"
exec "$top/build/tools/mrcnn-detect" --model "$top/models/shapes-demo.safetensors" \
  "$demo/shapes.png"
