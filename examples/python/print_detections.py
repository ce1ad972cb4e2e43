#!/usr/bin/env python3
"""Runs maskrcnn over a video or image file, prints the detections of every
frame from a pad probe and saves the first detection's mask as a PNG.

    print_detections.py MODEL FILE [MASK.png]

Needs PyGObject (python3-gi), NumPy, GStreamer's typelibs and the GstMaskRcnn
typelib of this project (GI_TYPELIB_PATH when not installed).
"""
import sys

import gi
import numpy as np

gi.require_version("Gst", "1.0")
gi.require_version("GstMaskRcnn", "1.0")
from gi.repository import Gst, GstMaskRcnn  # noqa: E402


def on_buffer(pad, info, state):
    meta = GstMaskRcnn.buffer_get_mask_rcnn_meta(info.get_buffer())
    if meta is None:
        print(f"frame {state['frame']}: not analysed")
    else:
        n = meta.get_n_detections()
        print(f"frame {state['frame']}: {meta.frame_width}x{meta.frame_height}, "
              f"{n} detections{' (repeated)' if meta.repeated else ''}")
        for i in range(n):
            d = meta.get_detection(i)
            x, y, w, h = d.get_box()
            mx, my, mw, mh = d.get_mask_rect()
            # get_mask() copies the mask out of the meta once, as bytes (mw x
            # mh, row-major, at frame pixel mx, my); frombuffer views them
            # without a second copy (read-only).  d.dup_full_mask(
            # meta.frame_width, meta.frame_height) pastes it into a frame.
            mask = np.frombuffer(d.get_mask() or b"", np.uint8).reshape(mh, mw)
            print(f"  {d.get_class_name():12s} {d.score:.3f}  box {x:.1f},{y:.1f} "
                  f"{w:.1f}x{h:.1f}  mask {np.count_nonzero(mask >= 128)} px")
            if state["png"] and not state["saved"]:
                save_mask(state["png"], mask)
                state["saved"] = True
    state["frame"] += 1
    return Gst.PadProbeReturn.OK


def save_mask(path, mask):
    from PIL import Image
    Image.fromarray(mask).save(path)  # uint8 rows x columns: mode L
    height, width = mask.shape
    print(f"  (mask of the first detection saved to {path}, {width}x{height})")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    model, path = sys.argv[1], sys.argv[2]
    Gst.init(None)
    pipeline = Gst.parse_launch(
        f'filesrc location="{path}" ! decodebin ! videoconvert ! '
        f'maskrcnn name=detector model="{model}" ! fakesink')
    state = {"frame": 0, "png": sys.argv[3] if len(sys.argv) > 3 else None,
             "saved": False}
    pad = pipeline.get_by_name("detector").get_static_pad("src")
    pad.add_probe(Gst.PadProbeType.BUFFER, on_buffer, state)
    pipeline.set_state(Gst.State.PLAYING)
    msg = pipeline.get_bus().timed_pop_filtered(
        Gst.CLOCK_TIME_NONE, Gst.MessageType.ERROR | Gst.MessageType.EOS)
    pipeline.set_state(Gst.State.NULL)
    if msg.type == Gst.MessageType.ERROR:
        sys.exit(f"error: {msg.parse_error()[0].message}")


if __name__ == "__main__":
    main()
