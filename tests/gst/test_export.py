"""maskrcnnexport read back by pycocotools, on the test model and image.

One pipeline writes the same frames as JSON Lines with RLE masks, JSON
Lines with polygons and COCO results; a pad probe keeps the masks of the
GstMaskRcnnMeta (with --meta, when the GstMaskRcnn typelib was built).

- every RLE decodes (pycocotools) to the meta's mask, and pycocotools
  encodes that mask to the same string;
- every polygon list fills back (pycocotools frPyObjects) to the mask with
  its holes filled, exactly; for hole-free shapes pushed with a hand-made
  meta (--meta), to within 2 % of the mask's area;
- the COCO results load with COCO.loadRes against a ground truth made of
  the same detections: AP 1 for boxes and masks; with half the detections
  dropped, recall and AP fall;
- a run killed mid-way leaves a file that parses line by line up to the
  cut, frames 0, 1, 2, ... in order; so does a file truncated anywhere;
- an unwritable location fails with an error naming it.

usage: test_export.py MODEL IMAGE OUTDIR [--meta]
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy import ndimage

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

FRAMES = 5
failures = 0


def check(ok, what):
    global failures
    print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)
    if not ok:
        failures += 1


def source(image, frames):
    return (f"filesrc location={image} ! pngdec ! imagefreeze num-buffers={frames} ! "
            f"videoconvert ! video/x-raw,format=RGB")


def run_pipeline(model, image, outdir, with_meta):
    """Runs the export pipeline; returns the meta's masks per frame, as
    full-frame 0/1 arrays (None without --meta)."""
    out = {k: os.path.join(outdir, f) for k, f in (
        ("rle", "rle.jsonl"), ("poly", "poly.jsonl"), ("coco", "results.json"),
        ("coco_poly", "results-poly.json"), ("cats", "categories.json"))}
    pipeline = Gst.parse_launch(
        f"{source(image, FRAMES)} ! maskrcnn model={model} ! "
        f"maskrcnnexport name=first location={out['rle']} ! "
        f"maskrcnnexport location={out['poly']} mask-encoding=polygon ! "
        f"maskrcnnexport location={out['coco']} format=coco "
        f"categories-location={out['cats']} ! "
        f"maskrcnnexport location={out['coco_poly']} format=coco mask-encoding=polygon ! "
        f"fakesink")
    frames = None
    if with_meta:
        gi.require_version("GstMaskRcnn", "1.0")
        from gi.repository import GstMaskRcnn
        frames = []

        def probe(pad, info):
            meta = GstMaskRcnn.buffer_get_mask_rcnn_meta(info.get_buffer())
            masks = []
            for i in range(meta.get_n_detections()):
                d = meta.get_detection(i)
                mx, my, mw, mh = d.get_mask_rect()
                full = np.zeros((meta.frame_height, meta.frame_width), np.uint8)
                data = d.get_mask()
                if data:
                    rect = np.frombuffer(bytes(data), np.uint8).reshape(mh, mw)
                    full[my:my + mh, mx:mx + mw] = rect >= 128
                masks.append(full)
            frames.append(masks)
            return Gst.PadProbeReturn.OK

        pipeline.get_by_name("first").get_static_pad("sink").add_probe(
            Gst.PadProbeType.BUFFER, probe)
    pipeline.set_state(Gst.State.PLAYING)
    msg = pipeline.get_bus().timed_pop_filtered(
        300 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipeline.set_state(Gst.State.NULL)
    check(msg is not None and msg.type == Gst.MessageType.EOS,
          f"pipeline ran to EOS ({msg.parse_error()[0].message if msg and msg.type == Gst.MessageType.ERROR else ''})")
    return out, frames


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def check_rle(lines, frames):
    n = 0
    exact = True
    same_string = True
    for line in lines:
        for k, d in enumerate(line["detections"]):
            seg = d["segmentation"]
            m = mask_utils.decode(seg)
            if frames is not None:
                exact &= np.array_equal(m, frames[line["frame"]][k])
            again = mask_utils.encode(np.asfortranarray(m))["counts"].decode()
            same_string &= again == seg["counts"]
            n += 1
    check(n > 0, f"{n} detections in {len(lines)} frames")
    if frames is not None:
        check(exact, "RLE decoded by pycocotools == the meta's mask, every pixel")
    check(same_string, "pycocotools encodes the decoded mask to the same string")


def polygon_fill(seg, h, w):
    if isinstance(seg, dict):  # an empty mask stays an RLE
        return mask_utils.decode(seg)
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(seg, h, w)))


def check_model_polygons(rle_lines, poly_lines):
    """The test model's masks are ragged and nearly all have holes, which an
    outer contour cannot hold: the fill must be the mask with its holes
    filled, exactly."""
    exact = True
    parts, worst_holes = 0, 0.0
    for a, b in zip(rle_lines, poly_lines):
        for da, db in zip(a["detections"], b["detections"]):
            m = mask_utils.decode(da["segmentation"])
            fill = polygon_fill(db["segmentation"], a["height"], a["width"])
            parts += len(db["segmentation"])
            filled = ndimage.binary_fill_holes(m)  # background 4-connected
            exact &= np.array_equal(fill, filled)
            worst_holes = max(worst_holes, (filled.sum() - m.sum()) / max(m.sum(), 1))
    check(len(poly_lines) == len(rle_lines) and parts > 0 and exact,
          f"{parts} polygons of the model's masks fill back to the masks with their "
          f"holes filled, every pixel (holes: up to {100 * worst_holes:.1f} % of a mask)")


def shape_masks(w, h):
    """Hole-free shapes with soft edges (0..255), as (x, y, mask) rectangles."""
    yy, xx = np.mgrid[0:h, 0:w] + 0.5

    def soft(inside):  # signed distance in pixels -> 0..255
        return np.clip(128 + 255 * inside, 0, 255).astype(np.uint8)

    def box(x0, y0, x1, y1):  # distance inside the box's nearest edge
        return np.minimum(np.minimum(xx - x0, x1 - xx), np.minimum(yy - y0, y1 - yy))

    c, s = np.cos(0.5), np.sin(0.5)
    u, v = (xx - 200) * c + (yy - 60) * s, -(xx - 200) * s + (yy - 60) * c
    shapes = [
        soft(30 - np.hypot(xx - 60, yy - 60)),                      # disc
        soft(1 - np.hypot(u / 50, v / 20)),                         # rotated ellipse
        soft(np.maximum(12 - np.hypot(xx - 60, yy - 170),
                        12 - np.hypot(xx - 100, yy - 170))),        # two parts
        soft(np.minimum.reduce([yy - 140, 220 - yy, (xx - 150) - 0.6 * (yy - 140)])),
        soft(3 - np.hypot(xx - 280, yy - 200)),                     # small disc
        soft(np.maximum(box(240, 120, 270, 180), box(240, 120, 300, 150))),  # L shape
    ]
    out = []
    for full in shapes:
        ys, xs = np.nonzero(full >= 128)
        x0, y0, x1, y1 = xs.min() - 2, ys.min() - 2, xs.max() + 3, ys.max() + 3
        out.append((int(x0), int(y0), np.ascontiguousarray(full[y0:y1, x0:x1])))
    return out


def check_shape_polygons(outdir):
    """Hole-free shapes pushed with a hand-made meta: the RLE decodes to the
    mask and the polygons fill back within 2 % of its area."""
    from gi.repository import GstMaskRcnn
    w, h = 320, 240
    rle_path = os.path.join(outdir, "shapes-rle.jsonl")
    poly_path = os.path.join(outdir, "shapes-poly.jsonl")
    pipeline = Gst.parse_launch(
        f"appsrc name=src caps=video/x-raw,format=RGB,width={w},height={h},framerate=1/1 "
        f"format=time ! maskrcnnexport location={rle_path} ! "
        f"maskrcnnexport location={poly_path} mask-encoding=polygon ! fakesink")
    shapes = shape_masks(w, h)
    buffer = Gst.Buffer.new_allocate(None, w * h * 3, None)
    buffer.pts = 0
    meta = GstMaskRcnn.buffer_add_mask_rcnn_meta(buffer, w, h)
    meta.soft_masks = True
    for i, (x, y, rect) in enumerate(shapes):
        mh, mw = rect.shape
        meta.add_detection(i + 1, f"shape{i}", 0.9, x, y, mw, mh, x, y, mw, mh,
                           rect.tobytes())
    pipeline.set_state(Gst.State.PLAYING)
    src = pipeline.get_by_name("src")
    src.emit("push-buffer", buffer)
    src.emit("end-of-stream")
    msg = pipeline.get_bus().timed_pop_filtered(
        60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipeline.set_state(Gst.State.NULL)
    check(msg is not None and msg.type == Gst.MessageType.EOS, "shapes pipeline ran to EOS")
    rle = read_jsonl(rle_path)[0]["detections"]
    poly = read_jsonl(poly_path)[0]["detections"]
    exact, worst, parts = len(rle) == len(shapes), 0.0, 0
    for (x, y, rect), dr, dp in zip(shapes, rle, poly):
        expected = np.zeros((h, w), np.uint8)
        mh, mw = rect.shape
        expected[y:y + mh, x:x + mw] = rect >= 128
        exact &= np.array_equal(mask_utils.decode(dr["segmentation"]), expected)
        fill = polygon_fill(dp["segmentation"], h, w)
        parts += len(dp["segmentation"])
        worst = max(worst, np.abs(fill.astype(int) - expected).sum() / expected.sum())
    check(exact, f"{len(shapes)} shapes with soft edges: RLE decodes to the mask at 128")
    check(parts == len(shapes) + 1 and worst <= 0.02,
          f"their {parts} polygons fill back within {100 * worst:.2f} % of the mask area (<= 2 %)")


def evaluate(gt, results, iou_type):
    dt = gt.loadRes(results)
    e = COCOeval(gt, dt, iou_type)
    e.evaluate()
    e.accumulate()
    e.summarize()
    return e.stats[0], e.stats[8]  # AP@[.5:.95], AR@100


def check_coco(out, rle_lines):
    with open(out["cats"]) as f:
        categories = json.load(f)
    images, annotations = [], []
    for line in rle_lines:
        images.append({"id": line["frame"], "width": line["width"],
                       "height": line["height"]})
        for d in line["detections"]:
            annotations.append({
                "id": len(annotations) + 1, "image_id": line["frame"],
                "category_id": d["category_id"], "bbox": d["bbox"],
                "segmentation": d["segmentation"], "iscrowd": 0,
                "area": float(mask_utils.area(d["segmentation"]))})
    seen = sorted({a["category_id"] for a in annotations})
    check([c["id"] for c in categories] == seen,
          f"categories file lists the classes seen: {categories}")
    gt_path = os.path.join(os.path.dirname(out["coco"]), "ground-truth.json")
    with open(gt_path, "w") as f:
        json.dump({"images": images, "annotations": annotations,
                   "categories": categories}, f)
    gt = COCO(gt_path)

    with open(out["coco"]) as f:
        results = json.load(f)
    check(len(results) == len(annotations),
          f"coco results: {len(results)} detections, as in the JSON Lines")
    for iou_type in ("bbox", "segm"):
        ap, ar = evaluate(gt, out["coco"], iou_type)
        check(ap > 0.999 and ar > 0.999,
              f"{iou_type}: results against themselves: AP {ap:.3f}, AR {ar:.3f} (1)")
    # the polygons lose the holes: some masks no longer match at high IoU
    dt = gt.loadRes(out["coco_poly"])
    check(len(dt.getAnnIds()) == len(results), "loadRes reads the polygon results")

    # Every other detection dropped: each kept one still matches its own
    # ground truth exactly, so in a class with n_c ground truths of which
    # k_c are kept, recall is k_c / n_c at every IoU threshold with precision
    # 1 up to it: AR and AP are the mean of k_c / n_c over the classes.
    half = os.path.join(os.path.dirname(out["coco"]), "results-half.json")
    kept = results[::2]
    with open(half, "w") as f:
        json.dump(kept, f)
    expected = np.mean([sum(r["category_id"] == c for r in kept)
                        / sum(a["category_id"] == c for a in annotations) for c in seen])
    for iou_type in ("bbox", "segm"):
        ap, ar = evaluate(gt, half, iou_type)
        check(abs(ar - expected) < 0.01 and abs(ap - expected) < 0.02 and ap < 0.9,
              f"{iou_type}: half the detections dropped: AP {ap:.3f}, AR {ar:.3f} "
              f"(expected {expected:.3f})")


def parse_up_to_cut(text):
    """Complete lines parse; what follows the last newline is the cut."""
    lines = text.split("\n")
    objects = [json.loads(line) for line in lines[:-1]]
    return objects, lines[-1]


def check_cut(model, image, outdir, rle_path):
    path = os.path.join(outdir, "killed.jsonl")
    proc = subprocess.Popen(
        ["gst-launch-1.0", "-q"] + f"{source(image, 1000)} ! maskrcnn model={model} ! "
        f"maskrcnnexport location={path} ! fakesink".split(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if os.path.exists(path) and open(path, "rb").read().count(b"\n") >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with open(path) as f:
        objects, rest = parse_up_to_cut(f.read())
    check(len(objects) >= 3 and [o["frame"] for o in objects] == list(range(len(objects)))
          and all(o["analysed"] for o in objects),
          f"killed run: {len(objects)} frames parse in order "
          f"({len(rest)} bytes of a line being written when killed)")

    with open(rle_path) as f:
        text = f.read()
    ok = True
    for cut in range(0, len(text), max(1, len(text) // 97)):
        objects, _ = parse_up_to_cut(text[:cut])
        ok &= len(objects) == text[:cut].count("\n")
    check(ok, "a file truncated anywhere parses up to the cut")


def check_unwritable():
    result = subprocess.run(
        ["gst-launch-1.0", "videotestsrc", "num-buffers=1", "!", "maskrcnnexport",
         "location=/nonexistent/dir/out.jsonl", "!", "fakesink"],
        capture_output=True, text=True, timeout=60)
    log = result.stdout + result.stderr
    check(result.returncode != 0 and "/nonexistent/dir/out.jsonl" in log,
          f"unwritable location: exit {result.returncode}, error names the path")


def main():
    model, image, outdir = sys.argv[1:4]
    with_meta = "--meta" in sys.argv[4:]
    os.makedirs(outdir, exist_ok=True)
    Gst.init(None)
    out, frames = run_pipeline(model, image, outdir, with_meta)
    rle_lines = read_jsonl(out["rle"])
    check([line["frame"] for line in rle_lines] == list(range(FRAMES)),
          f"{FRAMES} lines, frames 0..{FRAMES - 1}")
    check_rle(rle_lines, frames)
    check_model_polygons(rle_lines, read_jsonl(out["poly"]))
    if with_meta:
        check_shape_polygons(outdir)
    check_coco(out, rle_lines)
    check_cut(model, image, outdir, out["rle"])
    check_unwritable()
    print(f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
