#!/bin/sh
# Live camera with masks, boxes and labels on screen.
#   camera.sh MODEL [DEVICE]      e.g. camera.sh model.safetensors /dev/video0
# The camera is a live source, so maskrcnn runs in its live mode: every frame
# is shown at the camera's rate with the newest finished results, however
# long an analysis takes; the sink keeps its default settings.
exec gst-launch-1.0 v4l2src device="${2:-/dev/video0}" ! videoconvert ! \
  maskrcnn model="$1" ! maskrcnnoverlay ! videoconvert ! autovideosink
