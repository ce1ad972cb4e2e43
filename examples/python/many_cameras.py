#!/usr/bin/env python3
"""Several cameras (or files) in one process on one shared Mask R-CNN engine,
reading each stream's detections from a pad probe, as a DeepStream-style
application does.

    many_cameras.py [--lanes N] [--batch-size B] [--seconds S] \
                    MODEL SOURCE...

SOURCE is a file, a URI (rtsp://..., http://..., file://...) or "test" for a
live 640x480 test pattern at 30 fps.  Every stream's maskrcnn names the same
engine-id, so the model is loaded once; --lanes N analyses N frames side by
side on the CPU, each stream's frame as soon as a lane is free (worth it
with a small model on several cores); --batch-size B gathers up to B
streams' frames into one batch (a frame waits at most batch-timeout for
the others; default 1: each as it comes, the best choice on the CPU).  Live sources run in maskrcnn's live
mode: every frame passes at the camera's rate with the newest results.
Prints one line per frame and stream; stops at the end of every file,
after --seconds, or on Ctrl-C.

Needs PyGObject (python3-gi), GStreamer's typelibs and the GstMaskRcnn
typelib of this project (GI_TYPELIB_PATH when not installed).
"""
import argparse
import collections
import os
import signal
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstMaskRcnn", "1.0")
from gi.repository import GLib, Gst, GstMaskRcnn  # noqa: E402


def source_description(source):
    if source == "test":
        return ("videotestsrc is-live=true pattern=ball ! "
                "video/x-raw,width=640,height=480,framerate=30/1")
    uri = source if "://" in source else Gst.filename_to_uri(os.path.abspath(source))
    return f'uridecodebin uri="{uri}"'


# each stream's probe runs on its own streaming thread
print_lock = threading.Lock()


def say(text):
    with print_lock:
        print(text, flush=True)


def on_buffer(pad, info, index):
    meta = GstMaskRcnn.buffer_get_mask_rcnn_meta(info.get_buffer())
    if meta is None:
        say(f"stream {index}: not analysed yet")
        return Gst.PadProbeReturn.OK
    classes = collections.Counter(meta.get_detection(i).get_class_name()
                                  for i in range(meta.get_n_detections()))
    counts = ", ".join(f"{name} {n}" for name, n in sorted(classes.items()))
    # results of an earlier frame where repeated (live mode, interval)
    age = (f", results of frame {meta.result_frame_number} "
           f"({meta.result_age / Gst.MSECOND:.0f} ms old)" if meta.repeated else "")
    say(f"stream {index} frame {meta.frame_number}: {meta.get_n_detections()} detections"
        f"{' (' + counts + ')' if counts else ''}{age}")
    return Gst.PadProbeReturn.OK


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lanes", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=0, help="0: until the files end")
    parser.add_argument("model")
    parser.add_argument("sources", nargs="+")
    args = parser.parse_args()
    Gst.init(None)

    n = len(args.sources)
    branches = []
    for i, source in enumerate(args.sources):
        live = source == "test" or source.startswith("rtsp://")
        branches.append(
            f"{source_description(source)} ! videoconvert ! "
            f'maskrcnn name=detector{i} model="{args.model}" engine-id=cameras '
            f"batch-size={args.batch_size} lanes={args.lanes} ! "
            f"fakesink sync={str(live).lower()}")
    pipeline = Gst.parse_launch(" ".join(branches))
    for i in range(n):
        pad = pipeline.get_by_name(f"detector{i}").get_static_pad("src")
        pad.add_probe(Gst.PadProbeType.BUFFER, on_buffer, i)

    loop = GLib.MainLoop()
    status = {"rc": 0}

    def on_message(bus, message):
        if message.type == Gst.MessageType.ERROR:
            error, _ = message.parse_error()
            say(f"error from {message.src.get_name()}: {error.message}")
            status["rc"] = 1
            loop.quit()
        elif message.type == Gst.MessageType.WARNING:
            warning, _ = message.parse_warning()
            say(f"warning from {message.src.get_name()}: {warning.message}")
        elif message.type == Gst.MessageType.EOS:
            loop.quit()

    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    if args.seconds > 0:
        GLib.timeout_add(int(args.seconds * 1000), loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    pipeline.set_state(Gst.State.PLAYING)
    loop.run()
    pipeline.set_state(Gst.State.NULL)
    bus.remove_signal_watch()
    return status["rc"]


if __name__ == "__main__":
    raise SystemExit(main())
