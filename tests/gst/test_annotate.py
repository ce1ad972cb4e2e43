"""gst-maskrcnn-annotate end to end with the shapes demo model.

The built-in clip (2 s) is annotated with the element's default model (the
demo model through GST_MASKRCNN_MODEL) and checked: the video decodes back
to every frame, the detections file finds the objects drawn into the clip
(class and box, against the clip's own truth), the progress and summary
lines are printed.  Then a file input, and the errors: each one line on
stderr and a non-zero exit.

usage: test_annotate.py ANNOTATE DEMO_MODEL OUTDIR
"""
import glob
import json
import os
import re
import subprocess
import sys

from video_files import decode

SECONDS, FPS = 2, 30
FRAMES = SECONDS * FPS
TIMEOUT = 300


def run(args, model=None):
    env = dict(os.environ)
    env.pop("GST_DEBUG", None)  # as a user runs it: only the program speaks
    env["GST_MASKRCNN_MODEL"] = model or ""
    return subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT, env=env)


def iou(a, b):
    """a, b: x1, y1, x2, y2."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def match(truth_path, detections_path):
    """(objects drawn, of them found, detections, of them matched): a
    detection matches an unmatched drawn object of its class with box IoU
    of at least 0.5."""
    truth = [json.loads(line) for line in open(truth_path)]
    found = [json.loads(line) for line in open(detections_path)]
    assert [t["frame"] for t in truth] == [f["frame"] for f in found] == list(range(FRAMES)), \
        "frames of the truth and the detections differ"
    drawn = hit = dets = 0
    for t, f in zip(truth, found):
        objects = list(t["objects"])
        drawn += len(objects)
        for d in f["detections"]:
            dets += 1
            x, y, w, h = d["bbox"]
            best = max(objects, default=None,
                       key=lambda o: iou(o["box"], (x, y, x + w, y + h)) if o["label"] == d["label"] else -1)
            if best and best["label"] == d["label"] and iou(best["box"], (x, y, x + w, y + h)) >= 0.5:
                objects.remove(best)
                hit += 1
    return drawn, hit, dets


def main():
    annotate, model, outdir = sys.argv[1:4]
    os.makedirs(outdir, exist_ok=True)
    for old in glob.glob(os.path.join(outdir, "*")):
        os.remove(old)
    failures = []

    def check(ok, what):
        print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)
        if not ok:
            failures.append(what)

    # The built-in clip with the default model.
    base = os.path.join(outdir, "clip")
    jsonl, truth = base + ".jsonl", base + "-truth.jsonl"
    r = run([annotate, "--duration", str(SECONDS), "-o", base, "--json", jsonl,
             "--clip-truth", truth], model=model)
    print(r.stdout + r.stderr)
    check(r.returncode == 0, f"built-in clip: exit status {r.returncode}")
    outputs = [p for p in glob.glob(base + ".*") if not p.endswith(".jsonl")]
    check(len(outputs) == 1, f"one video written: {outputs}")
    if outputs:
        frames, size = decode(outputs[0])
        check(frames == FRAMES and size == (640, 480),
              f"{outputs[0]} decodes to {frames} frames of {size}")
    progress = [line for line in r.stderr.splitlines() if line.startswith("progress: ")]
    check(progress and re.match(r"progress: 100%  60 frames  [0-9.]+ fps", progress[-1]),
          f"progress lines end at 100%: {progress[-1:] }")
    check(f"annotated built-in clip with {model}" in r.stdout, "summary names the default model")
    check(re.search(r"wrote .*: 60 frames in [0-9.]+ s \([0-9.]+ frames per second\)", r.stdout),
          "summary: frames and speed")
    check(re.search(r"inference: [0-9.]+ ms per frame on average \(60 frames analysed\)", r.stdout),
          "summary: average inference time")
    if os.path.exists(jsonl) and os.path.exists(truth):
        drawn, hit, dets = match(truth, jsonl)
        check(drawn == 4 * FRAMES and hit >= 0.9 * drawn,
              f"{hit} of {drawn} drawn objects found (class and box IoU >= 0.5)")
        check(dets <= 1.1 * hit, f"{dets} detections for {hit} found objects")
        per_class = {}
        for line in open(jsonl):
            for d in json.loads(line)["detections"]:
                per_class[d["label"]] = per_class.get(d["label"], 0) + 1
        summary = re.search(r"detections: (\d+)(?: \((.*)\))?", r.stdout)
        listed = dict((name, int(n)) for name, n in
                      (item.rsplit(" ", 1) for item in summary.group(2).split(", "))) \
            if summary and summary.group(2) else {}
        check(listed == per_class, f"summary counts {listed} match the detections file {per_class}")
    else:
        check(False, "detections and truth files written")

    # A file input (the annotated clip itself), any container GStreamer decodes.
    if outputs:
        again = os.path.join(outdir, "again.avi")
        r = run([annotate, outputs[0], "-o", again, "--model", model])
        frames, _ = decode(again) if r.returncode == 0 else (0, None)
        check(r.returncode == 0 and frames == FRAMES,
              f"file input: exit {r.returncode}, {frames} frames ({r.stderr.strip()[-200:]})")

    # Errors: one line on stderr, a non-zero exit, no video left behind.
    text = os.path.join(outdir, "not-a-video.txt")
    with open(text, "w") as f:
        f.write("hello\n" * 100)
    cases = [
        ("missing input", [os.path.join(outdir, "missing.mp4")], model, "cannot read"),
        ("input without video", [text, "-o", os.path.join(outdir, "text.avi")], model,
         "no decoder for this input"),
        ("no model", ["-d", "0.2", "-o", os.path.join(outdir, "nomodel.avi")], None, "No model"),
        ("bad model", ["-d", "0.2", "--model", text, "-o", os.path.join(outdir, "badmodel.avi")],
         model, "Could not load the Mask R-CNN model"),
        ("unknown container", ["-o", os.path.join(outdir, "x.xyz")], model, "unknown container"),
        ("bad backend", ["--backend", "tpu"], model, "--backend must be"),
    ]
    for name, args, env_model, expected in cases:
        r = run([annotate] + args, model=env_model)
        lines = r.stderr.splitlines()
        left = [p for p in glob.glob(os.path.join(outdir, "*.avi"))
                if os.path.basename(p) in ("text.avi", "nomodel.avi", "badmodel.avi")]
        check(r.returncode != 0 and len(lines) == 1 and expected in lines[0] and not left,
              f"{name}: exit {r.returncode}, stderr {lines}, left {left}")

    print(f"{len(failures)} failed" if failures else "all passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
