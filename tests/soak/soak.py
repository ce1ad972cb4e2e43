#!/usr/bin/python3
"""Soak test: videotestsrc ! maskrcnn ! maskrcnnoverlay ! fakesink for many
frames, sampling this process's resident memory (VmRSS) as it goes.

Passes only if memory stays flat after the warm-up: the growth from the
first sample after it to any later sample stays below --max-growth-kib, and
the least-squares slope of RSS over the second half of the run stays below
--max-slope-kib per 10 000 frames.  Writes the samples as CSV (--csv).

usage: soak.py --model M.safetensors [--config SIDECAR] [--frames N] [--sample-every K]
               [--warmup W] [--csv OUT.csv]
"""
import argparse
import sys
import time

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402


def rss_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def slope(points):
    """Least-squares slope of (x, y) points."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--config", help="sidecar for the model (e.g. fewer proposals)")
    parser.add_argument("--frames", type=int, default=100000)
    parser.add_argument("--sample-every", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=10000,
                        help="frames before the reference sample")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--max-growth-kib", type=float, default=2048)
    parser.add_argument("--max-slope-kib", type=float, default=64,
                        help="per 10 000 frames, over the second half")
    parser.add_argument("--csv")
    args = parser.parse_args()
    if args.warmup >= args.frames:
        parser.error("--warmup must be below --frames")

    Gst.init(None)
    config = f"config={args.config}" if args.config else ""
    pipeline = Gst.parse_launch(
        f"videotestsrc pattern=ball num-buffers={args.frames} ! "
        f"video/x-raw,format=RGB,width={args.width},height={args.height} ! "
        f"maskrcnn name=m model={args.model} {config} ! maskrcnnoverlay ! "
        "fakesink name=sink sync=false")
    samples = []  # (frame, rss KiB)
    frames = [0]
    start = time.monotonic()

    def on_buffer(pad, info):
        frames[0] += 1
        if frames[0] % args.sample_every == 0:
            samples.append((frames[0], rss_kib()))
        return Gst.PadProbeReturn.OK

    sink = pipeline.get_by_name("sink")
    sink.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, on_buffer)
    loop = GLib.MainLoop()
    failure = []

    def on_message(bus, message):
        if message.type == Gst.MessageType.ERROR:
            error, debug = message.parse_error()
            failure.append(f"{error.message} ({debug})")
            loop.quit()
        elif message.type == Gst.MessageType.EOS:
            loop.quit()

    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    pipeline.set_state(Gst.State.PLAYING)
    loop.run()
    pipeline.set_state(Gst.State.NULL)
    bus.remove_signal_watch()
    elapsed = time.monotonic() - start
    if failure:
        print(f"pipeline error: {failure[0]}")
        return 1

    if args.csv:
        with open(args.csv, "w") as out:
            out.write("frame,rss_kib\n")
            for frame, rss in samples:
                out.write(f"{frame},{rss}\n")
    print(f"{frames[0]} frames in {elapsed:.0f} s ({frames[0] / elapsed:.0f} fps), "
          f"{len(samples)} samples")
    if frames[0] != args.frames:
        print(f"FAIL: expected {args.frames} frames")
        return 1
    after = [s for s in samples if s[0] >= args.warmup]
    if len(after) < 4:
        print("FAIL: fewer than 4 samples after the warm-up; lower --sample-every")
        return 1
    reference = after[0][1]
    growth = max(rss for _, rss in after) - reference
    second_half = [s for s in samples if s[0] >= args.frames // 2]
    per_10k = slope(second_half) * 10000 if len(second_half) >= 2 else 0.0
    print(f"RSS: {samples[0][1]} KiB at frame {samples[0][0]}, {reference} KiB after "
          f"the warm-up (frame {after[0][0]}), {samples[-1][1]} KiB at the end; "
          f"growth after the warm-up {growth} KiB (limit {args.max_growth_kib:g}), "
          f"slope over the second half {per_10k:.1f} KiB per 10 000 frames "
          f"(limit {args.max_slope_kib:g})")
    ok = growth < args.max_growth_kib and per_10k < args.max_slope_kib
    print("PASS" if ok else "FAIL: memory grows")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
