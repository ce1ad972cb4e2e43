#!/usr/bin/python3
"""Measures the shapes demo model as the engine runs it: box and mask
AP@0.5 (pycocotools COCOeval) of mrcnn-detect's output on held-out
synthetic frames.

    /usr/bin/python3 tools/evaluate_shapes.py [--frames 200] [--min-ap X]

The frames come from tools/train_shapes.py's generator with a seed the
training never uses.  With --min-ap the exit status is 1 when either AP is
below X.  Exits 77 (skipped) where numpy, PIL, torch or pycocotools cannot
be imported.
"""

import argparse
import contextlib
import io
import json
import pathlib
import subprocess
import sys
import tempfile

TOP = pathlib.Path(__file__).resolve().parent.parent
SKIP = 77


def coco_ground_truth(frames, class_names):
    from pycocotools import mask as mask_utils
    import numpy as np
    images, annotations = [], []
    for image_id, (name, image, objects) in enumerate(frames, start=1):
        height, width = image.shape[:2]
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        for obj in objects:
            rle = mask_utils.encode(np.asfortranarray(obj["mask"].astype(np.uint8)))
            x1, y1, x2, y2 = obj["box"]
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id,
                "category_id": obj["label"], "segmentation": rle,
                "area": float(mask_utils.area(rle)), "bbox": [x1, y1, x2 - x1, y2 - y1],
                "iscrowd": 0})
    categories = [{"id": i, "name": n} for i, n in enumerate(class_names) if i > 0]
    return {"images": images, "annotations": annotations, "categories": categories}


def engine_detections(lines, image_ids):
    results = []
    for line in lines:
        record = json.loads(line)
        image_id = image_ids[pathlib.Path(record["image"]).name]
        for det in record["detections"]:
            x1, y1, x2, y2 = det["box"]
            results.append({"image_id": image_id, "category_id": det["label_id"],
                            "score": det["score"], "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "segmentation": det["mask"]})
    return results


def average_precision_50(gt, results, iou_type):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        detections = coco.loadRes(results) if results else COCO()
        evaluation = COCOeval(coco, detections, iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[1])  # AP at IoU 0.5, all areas, 100 detections


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detect", default=str(TOP / "build" / "tools" / "mrcnn-detect"),
                        help="the mrcnn-detect program (default: build/tools/mrcnn-detect)")
    parser.add_argument("--model", default=str(TOP / "models" / "shapes-demo.safetensors"))
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--seed", type=int, default=2,
                        help="data seed (the training uses 1)")
    parser.add_argument("--score-threshold", type=float, default=0.05,
                        help="lowest score kept, as COCO evaluations do (default 0.05)")
    parser.add_argument("--min-ap", type=float, metavar="X",
                        help="fail when box or mask AP@0.5 is below X")
    args = parser.parse_args()

    try:
        import numpy  # noqa: F401
        import pycocotools  # noqa: F401
        from PIL import Image
        sys.path.insert(0, str(TOP / "tools"))
        import train_shapes
    except ImportError as error:
        print(f"skipped: {error}")
        return SKIP

    with tempfile.TemporaryDirectory(prefix="shapes-eval-") as scratch:
        frames = []
        for i in range(args.frames):
            image, objects = train_shapes.shapes_frame(args.seed * 10_000_000 + i)
            name = f"frame{i:04d}.png"
            Image.fromarray(image).save(pathlib.Path(scratch) / name)
            frames.append((name, image, objects))
        command = [args.detect, "--model", args.model,
                   "--score-threshold", str(args.score_threshold)]
        command += [str(pathlib.Path(scratch) / name) for name, _, _ in frames]
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode != 0:
            print(f"mrcnn-detect failed ({run.returncode}): {run.stderr.strip()}")
            return 1
    gt = coco_ground_truth(frames, train_shapes.CLASS_NAMES)
    image_ids = {name: i for i, (name, _, _) in enumerate(frames, start=1)}
    results = engine_detections(run.stdout.splitlines(), image_ids)
    box_ap = average_precision_50(gt, results, "bbox")
    mask_ap = average_precision_50(gt, results, "segm")
    print(f"{args.frames} frames, {len(gt['annotations'])} objects, "
          f"{len(results)} detections (score >= {args.score_threshold})")
    print(f"box AP@0.5 {box_ap:.3f}")
    print(f"mask AP@0.5 {mask_ap:.3f}")
    if args.min_ap is not None and min(box_ap, mask_ap) < args.min_ap:
        print(f"FAIL: below {args.min_ap}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
