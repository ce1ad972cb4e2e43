"""gst-maskrcnn-annotate end to end with the shapes demo model.

The built-in clip (2 s) is annotated with the element's default model (the
demo model through GST_MASKRCNN_MODEL) and the tracker (--track) and
checked: the video decodes back to every frame, the clip's truth is well
formed (ids, classes, boxes in the frame, visible fractions), the
detections file finds the objects drawn into the clip (class and box,
against the clip's own truth) and carries track ids, the progress and
summary lines are printed.  Then a file input, and the errors: each one
line on stderr and a non-zero exit.

The objects to find are those at least 80 % visible (in the frame, not
under another object): the clip has objects coming in at the edges and
passing behind others, which the demo model (trained on whole shapes) finds
only in part.  A detection of an object less visible than that counts
neither as found nor as a false detection.

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
VISIBLE = 0.8  # objects to find: at least this visible


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


def check_truth(truth):
    """Problems with the clip's truth: every object has an id (from 1) that
    keeps its class, a box inside the frame and a visible fraction."""
    problems, labels = [], {}
    for t in truth:
        ids = [o["id"] for o in t["objects"]]
        if len(set(ids)) != len(ids):
            problems.append(f"frame {t['frame']}: an id twice: {ids}")
        for o in t["objects"]:
            x1, y1, x2, y2 = o["box"]
            if not (isinstance(o["id"], int) and o["id"] >= 1
                    and labels.setdefault(o["id"], o["label"]) == o["label"]
                    and o["label"] in ("square", "circle", "triangle")
                    and 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480
                    and 0 <= o["visible"] <= 1):
                problems.append(f"frame {t['frame']}: {o}")
    return problems


def match(truth, found):
    """(objects to find, of them found, detections not of barely visible
    objects, detections with a track id): a detection matches an unmatched
    object of its class with box IoU of at least 0.5, best first."""
    assert [t["frame"] for t in truth] == [f["frame"] for f in found] == list(range(FRAMES)), \
        "frames of the truth and the detections differ"
    wanted = hit = dets = tracked = 0
    for t, f in zip(truth, found):
        objects = list(t["objects"])
        wanted += sum(o["visible"] >= VISIBLE for o in objects)
        for d in f["detections"]:
            tracked += d.get("track_id", 0) > 0
            x, y, w, h = d["bbox"]
            box = (x, y, x + w, y + h)
            best = max(objects, default=None,
                       key=lambda o: iou(o["box"], box) if o["label"] == d["label"] else -1)
            if best and best["label"] == d["label"] and iou(best["box"], box) >= 0.5:
                objects.remove(best)
                if best["visible"] >= VISIBLE:
                    hit += 1
                    dets += 1
            else:
                dets += 1
    return wanted, hit, dets, tracked


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
             "--clip-truth", truth, "--track"], model=model)
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
        truth = [json.loads(line) for line in open(truth)]
        found = [json.loads(line) for line in open(jsonl)]
        problems = check_truth(truth)
        check(not problems, f"the clip's truth is well formed {problems[:3]}")
        wanted, hit, dets, tracked = match(truth, found)
        check(wanted >= 4 * FRAMES and hit >= 0.9 * wanted,
              f"{hit} of {wanted} objects at least {VISIBLE:.0%} visible found "
              "(class and box IoU >= 0.5)")
        check(dets <= 1.1 * hit, f"{dets} detections (but of objects less visible) for "
              f"{hit} found objects")
        tracks = re.search(r"^tracks: (\d+) \((\d+) of the detections have a track id\)$",
                           r.stdout, re.M)
        check(tracks and int(tracks.group(2)) == tracked and tracked >= 0.8 * hit
              and 5 <= int(tracks.group(1)) <= 8,
              f"track ids: {tracked} detections with one in the file, summary "
              f"{tracks.group(0) if tracks else None}")
        per_class = {}
        for f in found:
            for d in f["detections"]:
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
        ("bad tracker setting", ["-d", "0.2", "--tracker", "association=boxy", "-o",
                                 os.path.join(outdir, "badtracker.avi")], model,
         "maskrcnntracker: \"boxy\" is not a valid association"),
        ("unknown tracker property", ["-d", "0.2", "--tracker", "speed=2", "-o",
                                      os.path.join(outdir, "badtracker.avi")], model,
         "maskrcnntracker has no property \"speed\""),
    ]
    for name, args, env_model, expected in cases:
        r = run([annotate] + args, model=env_model)
        lines = r.stderr.splitlines()
        left = [p for p in glob.glob(os.path.join(outdir, "*.avi"))
                if os.path.basename(p) in ("text.avi", "nomodel.avi", "badmodel.avi",
                                           "badtracker.avi")]
        check(r.returncode != 0 and len(lines) == 1 and expected in lines[0] and not left,
              f"{name}: exit {r.returncode}, stderr {lines}, left {left}")

    print(f"{len(failures)} failed" if failures else "all passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
