#!/usr/bin/python3
"""Compares mrcnn-detect on matterport Keras weights with the NumPy reference.

  test_matterport.py --detect PATH --model narrow|r101

narrow: ResNet-50 blocks [3,4,6,3] at narrow widths (stem 8, F1 8/16/32/64,
        FPN 32, RPN conv 64, box head 128, mask head 32), 5 classes, at
        matterport's COCO configuration (square 800/1024), in both file
        layouts; 6 images (one downscaled) plus runs with the threshold options,
        DETECTION_MIN_CONFIDENCE 0, pad64 and none resize modes, the
        zero-padded-ROI edge case (A.10) and a sidecar changing the RPN and
        box-coding settings.
r101:   full-width ResNet-101 (FPN 256, 81 classes) at IMAGE_MIN_DIM 192 /
        IMAGE_MAX_DIM 256 (sidecar), 3 images (1 in the sanitizer build),
        both file layouts.

Weights are random, calibrated by matterport_fixtures so that every image
gets several confident detections.  The reference (matterport_reference.py)
is written from MODEL_SPEC Part A and shares no code with the engine.

Stage by stage (the engine's --dump-dir), with these limits:
- input.npy (molded image): |diff| <= 1e-4, except that a pixel may differ
  by exactly 1 where the float resize output lies within 1e-6 of an integer
  (the uint8 truncation then depends on the last bit);
- anchors.npy: |diff| <= 1e-6;
- fpn_0..3, fpn_pool (P2..P6): relative L2 <= 1e-4, max |diff| <= 1e-3 of
  the reference's largest magnitude (spec F.2);
- proposals.npy: as many real (non-zero) rows within 1 %, >= 99 % of the
  reference's matched at IoU >= 0.99, the rest zero rows;
- detections.npy: set-wise (spec F.3), boxes within 0.5 molded pixels,
  scores within 1e-3;
- mask_probs.npy: |diff| <= 1e-3 on matched detections; where the
  reference's own box gives more, against the reference's mask head run on
  the engine's detection box (the box is checked on its own; a sample at a
  crop_and_resize knife edge or on a steep feature follows the box's last
  bits).
End to end (the JSON output), set-wise (F.3): >= 99 % of the reference's
detections matched by class and IoU >= 0.9, or unmatched for a documented
reason: a score within 1e-3 of the threshold or of the score at the
DETECTION_MAX_INSTANCES cut, or a knife edge of ROI align (A.7: a crop
sample within 1e-4 feature pixels of the extrapolation boundary, which a
box clipped to x2 = 1.0 or y2 = 1.0 puts on h-1 / w-1 exactly, or a level
within 1e-4 of a rounding boundary) on the detection's proposal (for an
engine detection: overlapping, IoU >= 0.5, such a proposal or the detection
the reference makes of it moved 1 to 3 float32 steps across the edge), or
overlapping such a detection (IoU > the NMS threshold, same class); knife
edges may explain at most 10 % of either side's detections, and their
scores are exempt from the score limit;
integer boxes equal, or off by 1 only where the reference's unrounded value
is within 1e-4 of a .5 boundary; scores within 1e-3; label names; binary
masks differing in at most 0.1 % of the box area beyond the reference's 0.5
contour (pixels whose resized probability is within 1e-3 of 0.5).
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

try:
    import numpy as np
    import scipy  # noqa: F401
    import h5py  # noqa: F401
except ImportError as missing:
    print(f"skipped: {missing}")
    sys.exit(77)

import harness
import matterport_fixtures as fx
import matterport_reference as ref
from models import synthetic_image

INPUT_MAX_ABS = 1e-4
TRUNCATION_EPS = 1e-6
ANCHOR_MAX_ABS = 1e-6
MATCH_IOU = 0.9
MIN_MATCHED = 0.99
MAX_KNIFE_EDGES = 0.1  # share of detections an ROI-align knife edge may explain
PROPOSAL_IOU = 0.99
DETECTION_BOX_MAX_ABS = 0.5  # molded pixels
SCORE_MAX_ABS = 1e-3
ROUNDING_EPS = 1e-4
MASK_PROB_MAX_ABS = 1e-3
MASK_MAX_DIFF = 1e-3  # of the box area, beyond the 0.5 contour
MIN_REFERENCE_DETECTIONS = 5


def sanitized(detect):
    """Whether detect is the AddressSanitizer build (slower: fewer images)."""
    if os.environ.get("ASAN_OPTIONS") is not None:
        return True
    try:
        return "libasan" in subprocess.run(["ldd", str(detect)], capture_output=True, text=True).stdout
    except OSError:
        return False


def write_sidecar(path, config, form="json"):
    """A sidecar in JSON or key = value form (Python literals)."""
    path = pathlib.Path(path)
    if form == "json":
        path.write_text(json.dumps(config, indent=1) + "\n")
    else:
        lines = ["# matterport configuration", ""]
        lines += [f"{key} = {value!r}" for key, value in config.items()]
        path.write_text("\n".join(lines) + "\n")
    return path


def label_name(label_id, class_names, num_classes):
    if class_names:
        return class_names[label_id]
    if num_classes == 81:
        return ref.COCO_CLASS_NAMES[label_id]
    return f"class_{label_id}"


def engine_arrays(result):
    dets = result["detections"]
    boxes = np.array([d["box"] for d in dets], dtype=np.float64).reshape(-1, 4)
    scores = np.array([d["score"] for d in dets], dtype=np.float64)
    labels = np.array([d["label_id"] for d in dets], dtype=np.int64)
    return boxes, scores, labels


def near_cutoff(score, threshold, cap_score):
    return harness.near_cutoff(score, threshold, cap_score)


def match_detections(checks, name, ref_boxes, ref_scores, ref_labels, eng_boxes, eng_scores,
                     eng_labels, threshold, cap, sensitive=None, nms_threshold=None):
    """Greedy set-wise matching (F.3); checks the matched fraction and that
    every unmatched detection is explained: near a cut-off (the score
    threshold, or the lowest score kept under the cap), or near a knife edge
    (sensitive(side, index) true: its ROI's crop grid or level is within
    1e-4 of a boundary), or overlapping (IoU > the NMS threshold, same class)
    a detection so explained, which NMS may have suppressed or let through
    in its place.  Returns the pairs."""
    pairs, ref_unmatched, eng_unmatched = harness.greedy_match(ref_boxes, eng_boxes, MATCH_IOU,
                                                               ref_labels, eng_labels)
    ref_cap = float(ref_scores[-1]) if len(ref_scores) >= cap else None
    eng_cap = float(eng_scores[-1]) if len(eng_scores) >= cap else None
    sensitive = sensitive or (lambda side, index: False)
    items = ([("reference", i, ref_boxes[i], ref_labels[i]) for i in range(len(ref_scores))]
             + [("engine", j, eng_boxes[j], eng_labels[j]) for j in range(len(eng_scores))])
    pool = [item for item in items if sensitive(item[0], item[1])]
    unexplained, knife = [], {"reference": 0, "engine": 0}
    pending = ([("reference", i, ref_boxes[i], ref_labels[i]) for i in ref_unmatched
                if not near_cutoff(ref_scores[i], threshold, ref_cap)]
               + [("engine", j, eng_boxes[j], eng_labels[j]) for j in eng_unmatched
                  if not near_cutoff(eng_scores[j], threshold, eng_cap)])
    changed = True
    while changed:
        changed = False
        for item in list(pending):
            side, index, box, label = item
            overlaps = nms_threshold is not None and any(
                other[3] == label and harness.box_iou(box, other[2])[0, 0] > nms_threshold
                for other in pool if other[:2] != item[:2])
            if sensitive(side, index) or overlaps:
                pending.remove(item)
                pool.append(item)
                knife[side] += 1
                changed = True
    unexplained = [f"{side} #{index}" for side, index, _, _ in pending]
    # reference detections matched, or unmatched for a documented reason
    # (a cut-off or a knife edge), must make up MIN_MATCHED; knife edges
    # may explain at most MAX_KNIFE_EDGES of either side's detections (a
    # proposal across an edge takes one detection from one side and gives
    # the other side another)
    unmatched_ref = len(ref_unmatched) - sum(1 for item in pending if item[0] == "reference")
    fraction = (len(pairs) + unmatched_ref) / len(ref_scores) if len(ref_scores) else 1.0
    knife_ok = max(knife.values()) <= MAX_KNIFE_EDGES * max(len(ref_scores), len(eng_scores), 1)
    knife = sum(knife.values())
    checks.check(f"{name} matching", fraction >= MIN_MATCHED and not unexplained and knife_ok,
                 f"{len(eng_scores)} detections, reference {len(ref_scores)}; {len(pairs)} matched "
                 f"({len(pairs) / max(len(ref_scores), 1):.2%}), {unmatched_ref} unmatched near a cut-off "
                 f"or knife edge ({fraction:.2%} accounted for, need {MIN_MATCHED:.0%})"
                 + (f"; {knife} unmatched at a knife edge (at most {MAX_KNIFE_EDGES:.0%} a side)"
                    if knife else "")
                 + (f"; {len(unexplained)} unmatched and unexplained: {', '.join(unexplained[:6])}"
                    if unexplained else ""))
    return pairs


def compare_final(checks, name, out, result, image_path, height, width, config, class_names,
                  num_classes, edges):
    """End-to-end comparison of the JSON output with the reference's
    un-molded detections.  edges: knife-edge information (see Runner.run)."""
    threshold, cap = config["DETECTION_MIN_CONFIDENCE"], config["DETECTION_MAX_INSTANCES"]
    eng_boxes, eng_scores, eng_labels = engine_arrays(result)
    dets = result["detections"]
    descending = bool(np.all(np.diff(eng_scores) <= 0))
    integral = bool(np.all(eng_boxes == np.round(eng_boxes)))
    wrong_names = [f"{d['label_id']}: {d['label']!r}" for d in dets
                   if d["label"] != label_name(d["label_id"], class_names, num_classes)]
    checks.check(f"{name} output fields",
                 result["image"] == str(image_path) and (result["width"], result["height"]) == (width, height)
                 and descending and integral and not wrong_names,
                 f"image {result['image']!r}, {result['width']}x{result['height']}, scores "
                 f"{'descending' if descending else 'NOT descending'}, boxes "
                 f"{'integral' if integral else 'NOT integral'}, {len(wrong_names)} wrong label names"
                 + (f" ({', '.join(wrong_names[:4])})" if wrong_names else ""))
    rois = out["rois"].astype(np.float64)
    ref_boxes = rois[:, [1, 0, 3, 2]]  # (x1, y1, x2, y2)
    ref_unrounded = out["rois_unrounded"][:, [1, 0, 3, 2]]
    rows = out["kept_rows"]  # final detection -> row of the detection table
    pairs = match_detections(checks, f"{name} output", ref_boxes, out["scores"], out["class_ids"],
                             eng_boxes, eng_scores, eng_labels, threshold, cap,
                             edges["final_sensitive"](ref_boxes, eng_boxes),
                             config["DETECTION_NMS_THRESHOLD"])
    bad_boxes, boundary, worst_score, knife = [], 0, 0.0, 0
    for i, j in pairs:
        if edges["roi"][rows[i]] and abs(float(out["scores"][i]) - eng_scores[j]) > SCORE_MAX_ABS:
            knife += 1  # its class scores may legitimately differ
            continue
        diff = eng_boxes[j] - ref_boxes[i]
        near_half = np.abs(np.abs(ref_unrounded[i] - np.floor(ref_unrounded[i])) - 0.5) <= ROUNDING_EPS
        allowed = (diff == 0) | ((np.abs(diff) == 1) & near_half)
        boundary += int(np.count_nonzero(diff != 0))
        if not allowed.all():
            bad_boxes.append(f"#{i}: engine {eng_boxes[j].tolist()}, reference {ref_boxes[i].tolist()}")
        worst_score = max(worst_score, abs(float(out["scores"][i]) - eng_scores[j]))
    checks.check(f"{name} output boxes", not bad_boxes,
                 f"{len(pairs) - len(bad_boxes)} of {len(pairs)} boxes equal or off by 1 at a .5 "
                 f"boundary ({boundary} such coordinates)"
                 + (f"; differing: {'; '.join(bad_boxes[:4])}" if bad_boxes else ""))
    checks.check(f"{name} output scores", worst_score <= SCORE_MAX_ABS,
                 f"max |score diff| {worst_score:.3g} (limit {SCORE_MAX_ABS})"
                 + (f"; {knife} differing more, from proposals at a knife edge" if knife else ""))
    worst, failing, skipped, recomputed = 0.0, [], 0, 0
    for i, j in pairs:
        if not np.array_equal(eng_boxes[j], ref_boxes[i]):
            skipped += 1  # a box off by 1 resizes the mask to another size
            continue
        mask = dets[j]["mask"]
        if list(mask["size"]) != [height, width]:
            failing.append(f"#{i}: size {mask['size']}")
            continue
        eng = harness.rle_decode(mask["counts"], height, width)
        ref_mask, contour = out["masks"][i], out["mask_contours"][i]
        if rows[i] in edges["alternative_probs"]:
            # the reference's mask head on the engine's detection box
            # (see compare_dumps)
            ref_mask, contour = ref.paste_mask(edges["alternative_probs"][rows[i]], out["rois"][i],
                                               (height, width))
            recomputed += 1
        elif edges["mask"][rows[i]] and not edges["dumped"] and not np.array_equal(eng, ref_mask):
            skipped += 1  # no dump to recompute from
            continue
        differing = np.flatnonzero((eng != ref_mask).ravel())
        off_contour = np.setdiff1d(differing, contour).size
        x1, y1, x2, y2 = ref_boxes[i]
        area = (x2 - x1) * (y2 - y1)
        worst = max(worst, off_contour / area)
        if off_contour > MASK_MAX_DIFF * area:
            failing.append(f"#{i}: {differing.size} pixels differ, {off_contour} off the contour, "
                           f"box area {area:.0f}")
    checks.check(f"{name} output masks", not failing,
                 f"{len(pairs) - skipped} masks, worst off-contour disagreement {worst:.3%} of the box "
                 f"(limit {MASK_MAX_DIFF:.1%})"
                 + (f", {skipped} skipped (box off by 1, or knife edge without dumps)" if skipped else "")
                 + (f", {recomputed} compared with the reference on the engine's box"
                    if recomputed else "")
                 + (f"; failing: {'; '.join(failing[:4])}" if failing else ""))


def compare_dumps(checks, name, out, dump, model, edges):
    """Stage-by-stage comparison of the engine's dumps with the reference.
    Fills edges["alternative_probs"] for detections at a knife edge."""
    config = model.config
    edges["dumped"] = True
    def load(file):
        path = dump / file
        if not path.exists():
            checks.check(f"{name} {file}", False, "not written")
            return None
        return np.load(path)

    molded = out["molded"]
    height, width = molded.shape[:2]
    array = load("input.npy")
    if array is not None:
        expected = molded.transpose(2, 0, 1).astype(np.float64)
        if array.shape != expected.shape:
            checks.check(f"{name} input", False, f"shape {array.shape}, reference {expected.shape}")
        else:
            diff = np.abs(array.astype(np.float64) - expected)
            boundary = np.zeros(molded.shape[:2] + (3,), bool)
            if out["resized_float"] is not None:
                y1, x1, y2, x2 = out["window"]
                fraction = out["resized_float"] - np.floor(out["resized_float"])
                boundary[y1:y2, x1:x2] = (fraction <= TRUNCATION_EPS) | (fraction >= 1 - TRUNCATION_EPS)
            boundary = boundary.transpose(2, 0, 1)
            off_by_one = (np.abs(diff - 1) <= INPUT_MAX_ABS) & boundary
            bad = (diff > INPUT_MAX_ABS) & ~off_by_one
            checks.check(f"{name} input", not bad.any(),
                         f"shape {array.shape}, max |diff| {diff[~off_by_one].max():.3g} (limit "
                         f"{INPUT_MAX_ABS:g}), {np.count_nonzero(off_by_one)} values off by 1 at a "
                         f"truncation boundary, {np.count_nonzero(bad)} bad")
    array = load("anchors.npy")
    if array is not None:
        harness.compare_tensor(checks, f"{name} anchors", out["anchors"], array, max_abs=ANCHOR_MAX_ABS)
    for level, file in enumerate(["fpn_0", "fpn_1", "fpn_2", "fpn_3", "fpn_pool"]):
        array = load(f"{file}.npy")
        if array is not None:
            harness.compare_tensor(checks, f"{name} {file} (P{level + 2})",
                                   out["fpn"][level].transpose(2, 0, 1), array,
                                   rel_l2=harness.FEATURE_REL_L2, rel_max=harness.FEATURE_REL_MAX)
    pixels = np.array([height - 1, width - 1, height - 1, width - 1], np.float64)
    array = load("proposals.npy")
    if array is not None:
        array = array.reshape(-1, 4)
        real = np.any(array != 0, axis=1)
        count = int(np.count_nonzero(real))
        ref_rows = out["rpn_rois"][:out["num_proposals"]] * pixels
        pairs, _, _ = harness.greedy_match(ref_rows, array[real] * pixels, PROPOSAL_IOU)
        fraction = len(pairs) / max(len(ref_rows), 1)
        tail_zero = not real[count:].any()
        worst = max((float(np.abs(ref_rows[i] - (array[real] * pixels)[j]).max()) for i, j in pairs),
                    default=0.0)
        checks.check(f"{name} proposals",
                     array.shape == out["rpn_rois"].shape and tail_zero
                     and abs(count - len(ref_rows)) <= 0.01 * len(ref_rows) and fraction >= MIN_MATCHED,
                     f"shape {array.shape} (reference {out['rpn_rois'].shape}), {count} real rows "
                     f"(reference {len(ref_rows)}){'' if tail_zero else ', zero rows NOT at the end'}; "
                     f"{fraction:.2%} matched at IoU >= {PROPOSAL_IOU}; max coordinate diff "
                     f"{worst:.3g} molded px")
    raw, probs = load("detections.npy"), load("mask_probs.npy")
    if raw is None or probs is None:
        return
    raw = raw.reshape(-1, 6)
    det = out["detections"]
    checks.check(f"{name} detections order", bool(np.all(np.diff(raw[:, 4]) <= 0)),
                 f"{len(raw)} rows, scores {'descending' if np.all(np.diff(raw[:, 4]) <= 0) else 'NOT descending'}"
                 " (the DetectionLayer's top-k order)")
    # Boxes clipped to the window's edge can have zero height or width; they
    # are matched as (y1, x1, y2 + 1, x2 + 1) in molded pixels, the extent
    # un-molding gives them.
    extent = np.array([0, 0, 1, 1], np.float64)
    pairs = match_detections(checks, f"{name} detections", det[:, :4] * pixels + extent, det[:, 5],
                             det[:, 4].astype(np.int64), raw[:, :4] * pixels + extent, raw[:, 4],
                             np.rint(raw[:, 5]).astype(np.int64),
                             config["DETECTION_MIN_CONFIDENCE"], config["DETECTION_MAX_INSTANCES"],
                             edges["sensitive"](raw[:, :4]), config["DETECTION_NMS_THRESHOLD"])
    # a detection whose proposal is at a knife edge may legitimately differ
    compared = [(i, j) for i, j in pairs if not edges["roi"][i]
                or (abs(float(det[i, 5]) - float(raw[j, 4])) <= SCORE_MAX_ABS
                    and np.abs(det[i, :4] - raw[j, :4]).max() * max(height, width) <= DETECTION_BOX_MAX_ABS)]
    box_diff = max((float(np.abs(det[i, :4] * pixels - raw[j, :4] * pixels).max()) for i, j in compared),
                   default=0.0)
    score_diff = max((abs(float(det[i, 5]) - float(raw[j, 4])) for i, j in compared), default=0.0)
    checks.check(f"{name} detections boxes", box_diff <= DETECTION_BOX_MAX_ABS,
                 f"max |diff| {box_diff:.3g} molded px over {len(pairs)} matches (limit {DETECTION_BOX_MAX_ABS})")
    knife = len(pairs) - len(compared)
    checks.check(f"{name} detections scores", score_diff <= SCORE_MAX_ABS,
                 f"max |diff| {score_diff:.3g} (limit {SCORE_MAX_ABS})"
                 + (f"; {knife} differing more, from proposals at a knife edge" if knife else ""))
    if probs.shape[1:] != (28, 28) or len(probs) != len(raw):
        checks.check(f"{name} mask_probs", False, f"shape {probs.shape} for {len(raw)} detections")
        return
    # Mask probabilities depend on the box; a box within tolerance can still
    # move a sample across a knife edge (or, on a thin box, along a steep
    # feature), so a detection whose probabilities differ by more than the
    # limit is compared with the reference's mask head run on the engine's
    # box instead (the box itself is checked above).
    expected = out["mask_probs"].copy()
    for i, j in pairs:
        if np.abs(expected[i] - probs[j]).max() > MASK_PROB_MAX_ABS:
            alternative = model.mask_probs_for(out, raw[j:j + 1, :4], [int(det[i, 4])])[0]
            if np.abs(alternative - probs[j]).max() < np.abs(expected[i] - probs[j]).max():
                expected[i] = alternative
                edges["alternative_probs"][i] = alternative
    if pairs:
        recomputed = len(edges["alternative_probs"])
        harness.compare_tensor(checks, f"{name} mask_probs of {len(pairs)} matches"
                               + (f" ({recomputed} on the engine's box)" if recomputed else ""),
                               expected[[i for i, _ in pairs]], probs[[j for _, j in pairs]],
                               max_abs=MASK_PROB_MAX_ABS)


def knife_edges(out, model):
    """Which detections sit on a documented discontinuity of ROI align
    (ref.near_knife_edge: level within 1e-4 of a rounding boundary, or a
    crop sample within 1e-4 feature pixels of the extrapolation boundary),
    where a last-bit difference legitimately changes the result (model: the
    reference, whose box head gives what such a proposal becomes on the
    other side of its edge):
    - roi[k]: detection row k's proposal (7x7 box-head crop) is at one, so
      its class scores and refinement may differ;
    - mask[k]: its detection box (14x14 mask crop) is at one;
    - sensitive(engine_boxes) / final_sensitive(ref_boxes, engine_boxes):
      functions telling match_detections which unmatched detections are
      explained: reference rows with roi true, engine rows overlapping
      (IoU >= 0.5) a reference proposal at a knife edge or the detection
      box that proposal gives when one of its coordinates moves by 1 to 3
      float32 steps (which of them crosses the edge is a rounding lottery;
      across it, pooled features, class and refinement may all change)."""
    height, width = out["molded"].shape[:2]
    shapes = [level.shape[:2] for level in out["fpn"][:4]]
    proposals = out["rpn_rois"][:out["num_proposals"]]
    at_edge = proposals[ref.near_knife_edge(proposals, height, width, shapes, ref.POOL_SIZE)]
    moved = []
    for coordinate in range(4):
        for direction in (-np.inf, np.inf):
            boxes = at_edge.astype(np.float32)
            for _ in range(3):
                boxes = boxes.copy()
                boxes[:, coordinate] = np.nextafter(boxes[:, coordinate], np.float32(direction))
                moved.append(boxes)
    moved = np.concatenate(moved).reshape(-1, 4)
    edge_proposals = at_edge
    if len(moved):
        probs, deltas = model.box_head(ref.pyramid_roi_align(out["fpn"][:4], moved, ref.POOL_SIZE, height, width))
        classes = probs.argmax(axis=1)
        std = np.asarray(model.config["BBOX_STD_DEV"], np.float32)
        refined = ref.apply_box_deltas(moved, deltas[np.arange(len(moved)), classes] * std)
        window = ref.normalised_window(out["window"], height, width)
        edge_proposals = np.concatenate([at_edge, ref.clip_boxes(refined, window)])
    det = out["detections"]
    roi = ref.near_knife_edge(out["rpn_rois"][out["detection_rois"]], height, width, shapes, ref.POOL_SIZE)
    mask = ref.near_knife_edge(det[:, :4], height, width, shapes, ref.MASK_POOL_SIZE)

    def engine_near(boxes_norm, j):
        return bool(len(edge_proposals)) and harness.box_iou(boxes_norm[j], edge_proposals).max() >= 0.5

    def sensitive(engine_boxes):
        return lambda side, k: bool(roi[k]) if side == "reference" else engine_near(engine_boxes, k)

    # final detections: reference index -> table row; engine boxes back to
    # normalised molded coordinates through the window
    y1, x1, y2, x2 = out["window"]
    h0, w0 = out["original_shape"]

    def final_sensitive(ref_boxes, eng_boxes):
        def to_norm(box):  # (x1, y1, x2, y2) original pixels -> normalised (y1, x1, y2, x2)
            sy, sx = (y2 - y1) / h0, (x2 - x1) / w0
            return np.array([(box[1] * sy + y1) / (height - 1), (box[0] * sx + x1) / (width - 1),
                             (box[3] * sy + y1 - 1) / (height - 1), (box[2] * sx + x1 - 1) / (width - 1)])
        engine_norm = np.array([to_norm(b) for b in eng_boxes]).reshape(-1, 4)
        return lambda side, k: (bool(roi[out["kept_rows"][k]]) if side == "reference"
                                else engine_near(engine_norm, k))

    return {"roi": roi, "mask": mask, "sensitive": sensitive, "final_sensitive": final_sensitive,
            "alternative_probs": {}, "dumped": False}


class Runner:
    """Runs engine and reference on the same image and settings."""

    def __init__(self, checks, detect, scratch):
        self.checks, self.detect, self.scratch = checks, detect, scratch
        self.figures = []  # (name, reference detections, seconds engine, seconds reference)

    def run(self, name, model_path, weights, image, config=None, sidecar_form="json", options=None,
            dumps=True, num_classes=None, expect_detections=MIN_REFERENCE_DETECTIONS):
        """config: the sidecar's keys (None: no sidecar); options: the
        command line's threshold options {flag: value}, applied to the
        reference's configuration too."""
        checks = self.checks
        height, width = image.shape[:2]
        image_path = self.scratch / f"{name}.png"
        harness.save_png(image, image_path)
        ref_config = dict(config or {})
        ref_config.pop("CLASS_NAMES", None)
        ref_config.pop("NUM_CLASSES", None)
        flags = {"--score-threshold": "DETECTION_MIN_CONFIDENCE", "--nms-threshold": "DETECTION_NMS_THRESHOLD",
                 "--max-detections": "DETECTION_MAX_INSTANCES"}
        args = ["--model", model_path]
        for flag, value in (options or {}).items():
            ref_config[flags[flag]] = value
            args += [flag, value]
        if config is not None:
            args += ["--config", write_sidecar(self.scratch / f"{name}.{sidecar_form}", config, sidecar_form)]
        dump = self.scratch / f"dump-{name}"
        if dumps:
            dump.mkdir()
            args += ["--dump-dir", dump]
        model = ref.Model(weights, ref_config)
        started = time.monotonic()
        out = model.detect(image)
        ref_seconds = time.monotonic() - started
        n = len(out["scores"])
        checks.check(f"{name} reference", n >= expect_detections and n == len(out["detections"]),
                     f"{n} detections (need >= {expect_detections}), {out['num_proposals']} proposals, "
                     f"molded {out['molded'].shape[:2]}, window {out['window']}, scale {out['scale']:.6g}; "
                     f"{ref_seconds:.1f} s")
        started = time.monotonic()
        try:
            lines = harness.detect_json(self.detect, args + [image_path])
        except (RuntimeError, ValueError) as error:
            checks.check(f"{name} mrcnn-detect", False, str(error))
            return out
        seconds = time.monotonic() - started
        if not checks.check(f"{name} mrcnn-detect", len(lines) == 1, f"{len(lines)} JSON line(s), {seconds:.1f} s"):
            return out
        self.figures.append((name, n, seconds, ref_seconds))
        edges = knife_edges(out, model)
        if dumps:
            compare_dumps(checks, name, out, dump, model, edges)
        compare_final(checks, name, out, lines[0], image_path, height, width, model.config,
                      (config or {}).get("CLASS_NAMES"), num_classes, edges)
        return out


def run_narrow(runner, scratch, small):
    started = time.monotonic()
    weights = fx.calibrated_weights("narrow")
    root, nested = scratch / "narrow.h5", scratch / "narrow-model-weights.h5"
    fx.write_h5(root, weights, "narrow")
    fx.write_h5(nested, weights, "narrow", layout="model_weights")
    print(f"narrow model: calibrated and written in {time.monotonic() - started:.1f} s")
    names = fx.NARROW_CLASS_NAMES
    sidecars = [None, {"NUM_CLASSES": 5, "CLASS_NAMES": names}, {"CLASS_NAMES": names}, None, None]
    forms = ["json", "json", "cfg", "json", "json"]
    images = fx.TEST_IMAGES["narrow"]
    if small:
        images = images[:3]  # the sanitizer build skips two 1024x1024 runs
    for k, (h, w, seed) in enumerate(images):
        path = nested if k % 2 else root
        runner.run(f"narrow-{h}x{w}{'-nested' if k % 2 else ''}", path, weights, synthetic_image(h, w, seed),
                   sidecars[k], forms[k], num_classes=5)
    if not small:  # downscaled (0.64) to 768x1024, no anti-aliasing (A.2)
        runner.run("narrow-1200x1600", root, weights, synthetic_image(1200, 1600, 9), num_classes=5)
    image = synthetic_image(300, 200, 2)
    runner.run("narrow-300x200-options", root, weights, image,
               options={"--score-threshold": 0.9, "--nms-threshold": 0.5, "--max-detections": 10},
               dumps=False, num_classes=5)
    runner.run("narrow-200x300-minconf0", root, weights, synthetic_image(200, 300, 1),
               {"DETECTION_MIN_CONFIDENCE": 0}, "cfg", dumps=False, num_classes=5)
    # IMAGE_MIN_SCALE 2.5 overrides 512/250 = 2.048: 625x750, padded to 640x768
    runner.run("narrow-250x300-pad64", nested, weights, synthetic_image(250, 300, 6),
               {"IMAGE_RESIZE_MODE": "pad64", "IMAGE_MIN_DIM": 512, "IMAGE_MIN_SCALE": 2.5},
               num_classes=5)
    runner.run("narrow-320x448-none", root, weights, synthetic_image(320, 448, 7),
               {"IMAGE_RESIZE_MODE": "none"}, "cfg", num_classes=5)
    # Fewer real proposals than POST_NMS_ROIS_INFERENCE: the zero rows
    # are classified too (A.10 edge case); here their argmax is a
    # foreground class, so with DETECTION_MIN_CONFIDENCE 0 they become
    # identical 1x1 detections at (0, 0), kept by NMS (zero area, IoU 0)
    # and cut at DETECTION_MAX_INSTANCES among equal scores.
    out = runner.run("narrow-256x256-zero-rows", root, weights, synthetic_image(256, 256, 8),
                     {"IMAGE_RESIZE_MODE": "none", "RPN_NMS_THRESHOLD": 0.3, "PRE_NMS_LIMIT": 300,
                      "DETECTION_MIN_CONFIDENCE": 0}, num_classes=5)
    zero_rows = int(np.count_nonzero(out["detection_rois"] >= out["num_proposals"]))
    runner.checks.check("narrow-256x256-zero-rows edge case exercised", zero_rows > 0,
                        f"{out['num_proposals']} real proposals, {zero_rows} detections from zero rows")
    runner.run("narrow-300x200-settings", root, weights, image,
               {"MEAN_PIXEL": [120.0, 110.5, 100.25], "RPN_ANCHOR_SCALES": [16, 32, 64, 128, 256],
                "RPN_ANCHOR_RATIOS": [0.5, 1, 2], "PRE_NMS_LIMIT": 2000, "RPN_NMS_THRESHOLD": 0.6,
                "POST_NMS_ROIS_INFERENCE": 300, "BBOX_STD_DEV": [0.1, 0.1, 0.25, 0.25],
                "RPN_BBOX_STD_DEV": [0.12, 0.12, 0.2, 0.2], "IMAGE_MIN_DIM": 640,
                "IMAGE_MAX_DIM": 768, "DETECTION_NMS_THRESHOLD": 0.4, "DETECTION_MAX_INSTANCES": 50},
               num_classes=5, expect_detections=1)


def run_r101(runner, scratch, small):
    started = time.monotonic()
    weights = fx.calibrated_weights("r101")
    root, nested = scratch / "r101.h5", scratch / "r101-model-weights.h5"
    fx.write_h5(root, weights, "r101")
    if not small:
        fx.write_h5(nested, weights, "r101", layout="model_weights", split_names=True)
    print(f"r101 model: calibrated and written in {time.monotonic() - started:.1f} s")
    config = dict(fx.R101_CONFIG, NUM_CLASSES=81)
    images = fx.TEST_IMAGES["r101"][:1 if small else 3]
    for k, (h, w, seed) in enumerate(images):
        path = nested if k == 2 else root
        runner.run(f"r101-{h}x{w}{'-nested' if k == 2 else ''}", path, weights,
                   synthetic_image(h, w, seed), config, "cfg" if k % 2 else "json", num_classes=81)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detect", required=True, help="the mrcnn-detect executable")
    parser.add_argument("--model", required=True, choices=["narrow", "r101"])
    args = parser.parse_args()
    small = sanitized(args.detect)
    if small:
        print("sanitizer build: fewer images")
    checks = harness.Checks()
    with tempfile.TemporaryDirectory(prefix="matterport-") as scratch:
        scratch = pathlib.Path(scratch)
        runner = Runner(checks, args.detect, scratch)
        (run_narrow if args.model == "narrow" else run_r101)(runner, scratch, small)
        for name, n, seconds, ref_seconds in runner.figures:
            print(f"  {name}: {n} reference detections, engine {seconds:.1f} s, reference {ref_seconds:.1f} s")
    checks.finish()


if __name__ == "__main__":
    main()
