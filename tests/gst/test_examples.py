"""Runs the examples that need no hardware on the test model: the C and the
Python pad-probe applications (which must print the same detections), the
many-cameras application on files and on live test sources, and the file
pipelines.  The camera example needs a camera and is not run."""
import argparse
import os
import re
import subprocess
import sys

import numpy as np
from PIL import Image

from test_pipelines import launch
from video_files import decode

TIMEOUT = 300
failures = []


def check(name, ok, figures):
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {figures}", flush=True)
    if not ok:
        failures.append(name)


def run(args):
    result = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT)
    if result.returncode != 0:
        print(result.stdout + result.stderr)
    return result.returncode, result.stdout


def frames_of(output):
    """Per frame: (header, [detection lines])."""
    frames = []
    for line in output.splitlines():
        if line.startswith("frame "):
            frames.append((line, []))
        elif line.startswith("  ") and not line.startswith("  (") and frames:
            frames[-1][1].append(line)
    return frames


def main():
    parser = argparse.ArgumentParser()
    for option in ("--model", "--image", "--outdir", "--print-detections", "--source-root"):
        parser.add_argument(option, required=True)
    parser.add_argument("--python", action="store_true",
                        help="the GstMaskRcnn typelib was built: run the Python example")
    args = parser.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    examples = os.path.join(args.source_root, "examples")

    # a short "recorded" video of the test frame
    video = os.path.join(args.outdir, "recorded.avi")
    rc, log = launch(f"filesrc location={args.image} ! pngdec ! imagefreeze num-buffers=3 ! "
                     f"videoconvert ! video/x-raw,format=I420 ! jpegenc quality=95 ! avimux ! "
                     f"filesink location={video}")
    check("recorded video made", rc == 0, f"exit {rc}")

    rc, out = run([args.print_detections, args.model, args.image])
    frames = frames_of(out)
    n = len(frames[0][1]) if frames else 0
    header = re.match(r"frame 0: 640x480, (\d+) detections", frames[0][0]) if frames else None
    check("C print-detections on an image", rc == 0 and len(frames) == 1 and header
          and int(header.group(1)) == n >= 10, f"exit {rc}, {n} detections")

    rc, c_out = run([args.print_detections, args.model, video, "interval=1"])
    c_frames = frames_of(c_out)
    check("C print-detections on a video, interval=1", rc == 0 and len(c_frames) == 3
          and "(repeated)" not in c_frames[0][0] and "(repeated)" in c_frames[1][0]
          and "(repeated)" not in c_frames[2][0] and c_frames[0][1] == c_frames[1][1]
          and len(c_frames[0][1]) >= 10,
          f"exit {rc}, {[h for h, _ in c_frames]}")

    if args.python:
        mask_png = os.path.join(args.outdir, "first-mask.png")
        rc, py_out = run([sys.executable, os.path.join(examples, "python", "print_detections.py"),
                          args.model, video, mask_png])
        py_frames = frames_of(py_out)
        c_frames = frames_of(run([args.print_detections, args.model, video])[1])
        same = [p[1] for p in py_frames] == [c[1] for c in c_frames]
        check("Python print_detections.py prints what the C example prints",
              rc == 0 and len(py_frames) == 3 and same,
              f"exit {rc}, {len(py_frames)} frames, "
              f"{sum(len(d) for _, d in py_frames)} detection lines, identical: {same}")
        mask = np.asarray(Image.open(mask_png)) if os.path.exists(mask_png) else None
        first = py_frames[0][1][0] if py_frames and py_frames[0][1] else ""
        pixels = re.search(r"mask (\d+) px", first)
        ok = (mask is not None and set(np.unique(mask)) <= {0, 255} and pixels is not None
              and int(np.count_nonzero(mask)) == int(pixels.group(1)) > 0)
        check("Python example saved the first mask as PNG", ok,
              f"{None if mask is None else mask.shape}, "
              f"{None if mask is None else int(np.count_nonzero(mask))} px on, printed {first.strip()!r}")

        many = os.path.join(examples, "python", "many_cameras.py")
        rc, out = run([sys.executable, many, "--batch-size", "2", args.model, video, video])
        lines = [re.match(r"stream (\d) frame (\d+): (\d+) detections", line)
                 for line in out.splitlines()]
        seen = sorted((int(m.group(1)), int(m.group(2)), int(m.group(3)))
                      for m in lines if m)
        expected = [(s, f, len(c_frames[f][1])) for s in (0, 1) for f in range(3)]
        check("many_cameras.py, two files on one engine in batches of 2: every frame of both "
              "streams with "
              "the C example's detections", rc == 0 and seen == expected,
              f"exit {rc}, {len(seen)} frame lines")
        rc, out = run([sys.executable, many, "--lanes", "2", "--seconds", "3", args.model,
                       "test", "test"])
        streams = {int(m.group(1)) for m in (re.match(r"stream (\d) frame", line)
                                             for line in out.splitlines()) if m}
        check("many_cameras.py, two live test sources on two lanes, each frame as it comes, "
              "for 3 s: frames of both",
              rc == 0 and streams == {0, 1} and "error" not in out,
              f"exit {rc}, streams {sorted(streams)}, {len(out.splitlines())} lines")

    annotated = os.path.join(args.outdir, "annotated.avi")
    rc, _ = run(["sh", os.path.join(examples, "pipelines", "annotate-file.sh"), args.model,
                 video, annotated])
    frames, size = decode(annotated) if rc == 0 else (0, None)
    check("annotate-file.sh", rc == 0 and frames == 3 and size == (640, 480),
          f"exit {rc}, {frames} frames of {size}")

    rc, _ = run(["sh", os.path.join(examples, "pipelines", "play-file.sh"), args.model, video,
                 "fakesink"])
    check("play-file.sh with fakesink", rc == 0, f"exit {rc}")

    if failures:
        print(f"{len(failures)} check(s) failed")
        sys.exit(1)


if __name__ == "__main__":
    main()
