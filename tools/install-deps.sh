#!/usr/bin/env bash
# Installs what building and testing need, where it is missing (Debian 12).
set -euo pipefail

packages=(meson ninja-build pkg-config gcc libglib2.0-dev libjson-glib-dev
  libdnnl-dev libgdk-pixbuf-2.0-dev python3 python3-pip python3-venv python3-numpy
  python3-pil python3-torchvision libhdf5-dev python3-h5py python3-scipy
  python3-skimage
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-tools
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good libpango1.0-dev
  libcairo2-dev fonts-dejavu-core gobject-introspection
  libgirepository1.0-dev python3-gi gir1.2-gstreamer-1.0
  gir1.2-gst-plugins-base-1.0 valgrind clang libclang-rt-14-dev libomp-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
fi

# safetensors, pycocotools and motmetrics (the tracker's scores) are not
# packaged by Debian 12
if ! /usr/bin/python3 -c "import safetensors, pycocotools, motmetrics" \
    2>/dev/null; then
  echo "installing: safetensors pycocotools motmetrics (PyPI)" >&2
  /usr/bin/python3 -m pip install -q --break-system-packages safetensors \
    pycocotools motmetrics >&2
fi
