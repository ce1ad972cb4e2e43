#!/usr/bin/python3
"""Many streams in one process: N pipelines `videotestsrc ! maskrcnn !
fakesink` (each its own maskrcnn, as an application with N cameras builds
them) run together; prints, per stream count, the frames per second in
total and per stream, the time from the source to the sink per frame (p50,
p99) and the process's resident memory, as a Markdown table and, with
--jsonl, one JSON line per stream count.

  streams.py --model PATH [--streams 1,2,4,8] [--seconds S] [--live]
             [--size WxH] [--fps N] [--props "interval=2 ..."] [--jsonl PATH]

As fast as possible (default): sources are not live, maskrcnn analyses every
frame, the figures say how many frames the machine analyses.  --live:
sources are live at --fps, maskrcnn runs in its live mode (frames pass at
the source's rate, the newest results on each): frames per second are
those of the streams, "analysed/s" says how many frames the model saw and
"results' age" how much older than its frame a frame's results are.
Needs PyGObject and the plugin (GST_PLUGIN_PATH); /usr/bin/python3.
"""

import argparse
import json
import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstMaskRcnn", "1.0")
from gi.repository import GLib, Gst, GstMaskRcnn  # noqa: E402


def resident_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def percentile(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def collect_errors(pipelines, streams):
    for pipeline, stream in zip(pipelines, streams):
        msg = pipeline.get_bus().pop_filtered(Gst.MessageType.ERROR)
        if msg:
            stream["error"] = msg.parse_error()[0].message


def run(args, n):
    """Plays n pipelines for args.seconds; returns the figures."""
    width, height = args.size
    pipelines, streams = [], []
    for _ in range(n):
        pipeline = Gst.parse_launch(
            f"videotestsrc name=src is-live={str(args.live).lower()} pattern=ball ! "
            f"video/x-raw,width={width},height={height},framerate={args.fps}/1 ! "
            f"maskrcnn model={args.model} {args.props} ! fakesink name=sink "
            f"sync={str(args.live).lower()}")
        stream = {"pushed": {}, "latencies": [], "ages": [], "frames": 0, "analysed": 0,
                  "through": 0,
                  "error": None, "measuring": False, "last_result": None}

        def on_source(pad, info, stream=stream):
            stream["pushed"][info.get_buffer().pts] = time.monotonic()
            return Gst.PadProbeReturn.OK

        def on_sink(pad, info, stream=stream):
            buffer = info.get_buffer()
            start = stream["pushed"].pop(buffer.pts, None)
            stream["through"] += 1
            if stream["measuring"] and start is not None:
                stream["latencies"].append(time.monotonic() - start)
                stream["frames"] += 1
                meta = GstMaskRcnn.buffer_get_mask_rcnn_meta(buffer)
                if meta is not None and meta.result_age != Gst.CLOCK_TIME_NONE:
                    stream["ages"].append(meta.result_age / Gst.SECOND)
                if meta is not None and meta.result_frame_number != stream["last_result"]:
                    stream["last_result"] = meta.result_frame_number
                    stream["analysed"] += 1
            return Gst.PadProbeReturn.OK

        pipeline.get_by_name("src").get_static_pad("src").add_probe(
            Gst.PadProbeType.BUFFER, on_source)
        pipeline.get_by_name("sink").get_static_pad("sink").add_probe(
            Gst.PadProbeType.BUFFER, on_sink)
        pipelines.append(pipeline)
        streams.append(stream)
    for pipeline in pipelines:
        pipeline.set_state(Gst.State.PLAYING)
    # warm-up: every stream's first frame through (model loaded, first
    # allocations made), then the measured window
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(s["through"] or s["error"] for s in streams):
        time.sleep(0.05)
        collect_errors(pipelines, streams)
    for stream in streams:
        stream["measuring"] = True
    start = time.monotonic()
    peak_rss = resident_kib()
    while time.monotonic() - start < args.seconds:
        time.sleep(0.1)
        peak_rss = max(peak_rss, resident_kib())
        collect_errors(pipelines, streams)
    elapsed = time.monotonic() - start
    for stream in streams:
        stream["measuring"] = False
    for pipeline in pipelines:
        pipeline.set_state(Gst.State.NULL)
    latencies = [v for s in streams for v in s["latencies"]]
    ages = [v for s in streams for v in s["ages"]]
    per_stream = [s["frames"] / elapsed for s in streams]
    return {
        "streams": n, "live": args.live, "size": f"{width}x{height}", "seconds": round(elapsed, 2),
        "fps_total": round(sum(per_stream), 2),
        "fps_per_stream_min": round(min(per_stream), 2),
        "fps_per_stream_max": round(max(per_stream), 2),
        "analysed_per_s": round(sum(s["analysed"] for s in streams) / elapsed, 2),
        "latency_p50_ms": round(1000 * percentile(latencies, 50), 1),
        "latency_p99_ms": round(1000 * percentile(latencies, 99), 1),
        "result_age_p50_ms": round(1000 * percentile(ages, 50), 1),
        "result_age_p99_ms": round(1000 * percentile(ages, 99), 1),
        "rss_mib": round(peak_rss / 1024, 1),
        "errors": [s["error"] for s in streams if s["error"]],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--streams", default="1,2,4,8",
                        type=lambda t: [int(v) for v in t.split(",") if v])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--live", action="store_true")
    parser.add_argument("--size", default="640x480",
                        type=lambda t: tuple(int(v) for v in t.split("x")))
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--props", default="", help="extra maskrcnn properties")
    parser.add_argument("--jsonl", help="also write one JSON line per stream count here")
    args = parser.parse_args()
    Gst.init(None)
    GLib.set_prgname("maskrcnn-streams")

    rows = []
    print("| streams | frames/s total | per stream (min-max) | analysed/s | source to sink p50 "
          "| p99 | results' age p50 | p99 | resident |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in args.streams:
        row = run(args, n)
        rows.append(row)
        print(f"| {n} | {row['fps_total']:.1f} | {row['fps_per_stream_min']:.1f}-"
              f"{row['fps_per_stream_max']:.1f} | {row['analysed_per_s']:.1f} | "
              f"{row['latency_p50_ms']:.0f} ms | {row['latency_p99_ms']:.0f} ms | "
              f"{row['result_age_p50_ms']:.0f} ms | {row['result_age_p99_ms']:.0f} ms | "
              f"{row['rss_mib']:.0f} MiB |", flush=True)
        for error in row["errors"]:
            print(f"  error: {error}", file=sys.stderr)
    if args.jsonl:
        with open(args.jsonl, "w") as out:
            for row in rows:
                out.write(json.dumps(row) + "\n")
    sys.exit(1 if any(row["errors"] or row["fps_total"] <= 0 for row in rows) else 0)


if __name__ == "__main__":
    main()
