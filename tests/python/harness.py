"""Running mrcnn-detect and comparing its output with torchvision's.

Comparison follows the model specification (part F): detections are matched
set-wise, because top-k, NMS and thresholds are discontinuous and rounding
differences may legitimately flip a near-tie; everything continuous is held
to fp32 tolerances.
"""

import json
import subprocess
import sys

import numpy as np
import torch
from PIL import Image
try:
    from pycocotools import mask as coco_mask
except ImportError:  # machines with torch alone (tools/gpu-check.sh run)
    coco_mask = None

from models import to_tensor

# fp32 failure lines (spec F.2, F.3).  The spec gives none for mask
# probabilities; their typical error is below 1e-4.
INPUT_MAX_ABS = 1e-5
FEATURE_REL_L2 = 1e-4
FEATURE_REL_MAX = 1e-3  # of the reference tensor's largest magnitude
MATCH_IOU = 0.9
MIN_MATCHED = 0.99
BOX_MAX_ABS = 0.5  # pixels
SCORE_MAX_ABS = 1e-3
# Score distance to a cut-off (threshold, or the last score kept under the
# per-image cap) within which a detection may be present on one side only.
NEAR_CUTOFF = 1e-3
MASK_PROB_MAX_ABS = 1e-3
MASK_IOU = 0.99
PROPOSAL_IOU = 0.99
MIN_PROPOSALS_MATCHED = 0.99

DETECT_TIMEOUT = 300  # seconds per mrcnn-detect run


class Checks:
    """Collects named pass/fail results and prints each with its figures."""

    def __init__(self):
        self.failures = []

    def check(self, name, ok, figures):
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {figures}", flush=True)
        if not ok:
            self.failures.append(name)
        return ok

    def finish(self):
        if self.failures:
            print(f"{len(self.failures)} check(s) failed: {', '.join(self.failures)}")
            sys.exit(1)
        print("all checks passed")
        sys.exit(0)


def run_detect(detect, args):
    """Runs mrcnn-detect; returns the CompletedProcess (text output)."""
    return subprocess.run([str(detect), *map(str, args)], capture_output=True, text=True,
                          timeout=DETECT_TIMEOUT)


def detect_json(detect, args):
    """Runs mrcnn-detect and returns its JSON lines, or raises with its stderr."""
    try:
        result = run_detect(detect, args)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"mrcnn-detect {' '.join(map(str, args))} ran past {DETECT_TIMEOUT} s")
    if result.returncode != 0:
        raise RuntimeError(f"mrcnn-detect {' '.join(map(str, args))} exited with "
                           f"{result.returncode}: {result.stderr.strip()}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def save_png(image, path):
    Image.fromarray(image).save(path)


def rle_decode(counts, height, width):
    """Decodes a COCO compressed RLE string (pycocotools' `counts`) into a
    bool [height, width] mask.  Runs alternate 0s and 1s, starting with 0s,
    over the pixels in column-major order; each run length is coded in
    6-bit groups offset from '0', and from the fourth run on as the
    difference from the run two before."""
    runs = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            group = ord(counts[position]) - 48
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift  # sign extension
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    if any(run < 0 for run in runs) or sum(runs) != height * width:
        raise ValueError(f"RLE does not describe a {height}x{width} mask")
    flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
    mask = flat.reshape(width, height).T
    # the format's own decoder, where installed, must read it the same way
    if coco_mask is not None and not np.array_equal(
            mask, coco_mask.decode({"size": [height, width], "counts": counts.encode()}).astype(bool)):
        raise ValueError("pycocotools decodes this RLE differently")
    return mask


def box_iou(a, b):
    """IoU matrix of boxes a [N,4] and b [M,4] (x1, y1, x2, y2)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    width = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    height = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = width * height
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def greedy_match(ref_boxes, eng_boxes, min_iou, ref_labels=None, eng_labels=None):
    """Matches reference boxes, in their order, each to the unmatched engine
    box of the same label with the highest IoU >= min_iou.  Returns
    (pairs, unmatched reference indices, unmatched engine indices)."""
    iou = box_iou(ref_boxes, eng_boxes)
    if ref_labels is not None:
        iou = np.where(np.equal.outer(np.asarray(ref_labels), np.asarray(eng_labels)), iou, 0.0)
    taken = np.zeros(iou.shape[1], dtype=bool)
    pairs, unmatched = [], []
    for i in range(iou.shape[0]):
        candidates = np.where(taken, -1.0, iou[i])
        j = int(np.argmax(candidates)) if candidates.size else -1
        if j >= 0 and candidates[j] >= min_iou:
            taken[j] = True
            pairs.append((i, j))
        else:
            unmatched.append(i)
    return pairs, unmatched, list(np.flatnonzero(~taken))


@torch.no_grad()
def reference(model, image, mask_contour=MASK_PROB_MAX_ABS):
    """Runs torchvision's pipeline stage by stage on a uint8 HWC image, as
    model([image]) does, keeping the intermediates the engine dumps.

    Final masks are kept as bool (>= 0.5) plus, per detection, the flat
    indices of pixels whose probability is within mask_contour of 0.5
    (where an engine's rounding may flip them)."""
    height, width = image.shape[:2]
    images, _ = model.transform([to_tensor(image)])
    features = model.backbone(images.tensors)
    proposals, _ = model.rpn(images, features)
    detections = model.roi_heads(features, proposals, images.image_sizes)[0][0]
    out = {
        "input": images.tensors[0].numpy(),
        "resized_size": images.image_sizes[0],
        "fpn": [features[name][0].numpy() for name in ("0", "1", "2", "3", "pool")],
        "proposals": proposals[0].numpy(),
        "boxes_resized": detections["boxes"].numpy(),
        "scores": detections["scores"].numpy(),
        "labels": detections["labels"].numpy(),
        "mask_probs": detections["masks"][:, 0].numpy(),
    }
    # transform.postprocess pastes every mask into a full-size float image;
    # a few at a time keeps memory bounded on large images.
    boxes, masks, contours = [], [], []
    for start in range(0, len(out["scores"]), 8):
        chunk = {key: detections[key][start:start + 8] for key in ("boxes", "labels", "scores", "masks")}
        pasted = model.transform.postprocess([chunk], images.image_sizes, [(height, width)])[0]
        boxes.append(pasted["boxes"].numpy())
        for soft in pasted["masks"][:, 0].numpy():
            masks.append(soft >= 0.5)
            contours.append(np.flatnonzero(np.abs(soft - 0.5) <= mask_contour))
    out["boxes"] = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)
    out["masks"] = masks
    out["mask_contours"] = contours
    return out


def compare_tensor(checks, name, ref, eng, max_abs=None, rel_l2=None, rel_max=None):
    """Checks an intermediate tensor: same shape, then the given error bounds
    (absolute, L2 relative to the reference, and largest error relative to
    the reference's largest magnitude)."""
    ref = np.asarray(ref, dtype=np.float64)
    eng = np.asarray(eng, dtype=np.float64)
    if ref.shape != eng.shape:
        return checks.check(name, False, f"shape {eng.shape}, reference {ref.shape}")
    if not np.all(np.isfinite(eng)):
        return checks.check(name, False, f"{np.count_nonzero(~np.isfinite(eng))} non-finite values")
    diff = np.abs(ref - eng)
    worst = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    l2 = float(np.linalg.norm(ref - eng) / max(np.linalg.norm(ref), 1e-30))
    ok = True
    figures = [f"shape {ref.shape}", f"max abs diff {worst:.3g}"]
    if max_abs is not None:
        ok &= worst <= max_abs
        figures[-1] += f" (limit {max_abs:g})"
    if rel_l2 is not None:
        ok &= l2 <= rel_l2
        figures.append(f"rel L2 {l2:.3g} (limit {rel_l2:g})")
    if rel_max is not None:
        ok &= worst <= rel_max * scale
        figures.append(f"max diff / max |ref| {worst / max(scale, 1e-30):.3g} (limit {rel_max:g})")
    return checks.check(name, ok, ", ".join(figures))


def compare_proposals(checks, name, ref, eng):
    """Proposals are compared as sets: NMS near-ties at IoU 0.7 and the
    cut at the post-NMS count may swap a few of them."""
    eng = np.asarray(eng).reshape(-1, 4)
    count_ok = abs(len(eng) - len(ref)) <= (1 - MIN_PROPOSALS_MATCHED) * len(ref)
    pairs, _, _ = greedy_match(ref, eng, PROPOSAL_IOU)
    fraction = len(pairs) / max(len(ref), 1)
    worst = max((float(np.abs(ref[i] - eng[j]).max()) for i, j in pairs), default=0.0)
    return checks.check(
        name, count_ok and fraction >= MIN_PROPOSALS_MATCHED,
        f"{len(eng)} proposals, reference {len(ref)}; {fraction:.2%} of the reference matched "
        f"at IoU >= {PROPOSAL_IOU} (need {MIN_PROPOSALS_MATCHED:.0%}); max coordinate diff "
        f"of matches {worst:.3g} px")


def near_cutoff(score, score_thresh, cap_score):
    """Whether a detection with this score may exist on one side only."""
    return (abs(score - score_thresh) <= NEAR_CUTOFF
            or (cap_score is not None and abs(score - cap_score) <= NEAR_CUTOFF))


def compare_detections(checks, name, ref_boxes, ref_scores, ref_labels,
                       eng_boxes, eng_scores, eng_labels, score_thresh, max_detections):
    """Set-wise detection comparison (spec F.3).  Returns the matched pairs."""
    ref_boxes = np.asarray(ref_boxes).reshape(-1, 4)
    eng_boxes = np.asarray(eng_boxes).reshape(-1, 4)
    pairs, ref_unmatched, eng_unmatched = greedy_match(ref_boxes, eng_boxes, MATCH_IOU,
                                                       ref_labels, eng_labels)
    # Under the per-image cap the lowest kept score is a cut-off as well.
    ref_cap = float(ref_scores[-1]) if len(ref_scores) >= max_detections else None
    eng_cap = float(eng_scores[-1]) if len(eng_scores) >= max_detections else None
    unexplained = ([f"reference #{i} score {ref_scores[i]:.6f}" for i in ref_unmatched
                    if not near_cutoff(ref_scores[i], score_thresh, ref_cap)]
                   + [f"engine #{j} score {eng_scores[j]:.6f}" for j in eng_unmatched
                      if not near_cutoff(eng_scores[j], score_thresh, eng_cap)])
    fraction = len(pairs) / len(ref_scores) if len(ref_scores) else 1.0
    box_diff = max((float(np.abs(ref_boxes[i] - eng_boxes[j]).max()) for i, j in pairs), default=0.0)
    score_diff = max((abs(float(ref_scores[i]) - float(eng_scores[j])) for i, j in pairs), default=0.0)
    checks.check(
        f"{name} matching", fraction >= MIN_MATCHED and not unexplained,
        f"{len(eng_scores)} detections, reference {len(ref_scores)}; {len(pairs)} matched "
        f"({fraction:.2%}, need {MIN_MATCHED:.0%})"
        + (f"; {len(unexplained)} unmatched away from a cut-off: {', '.join(unexplained[:6])}"
           + (", ..." if len(unexplained) > 6 else "") if unexplained else ""))
    checks.check(f"{name} boxes", box_diff <= BOX_MAX_ABS,
                 f"max |box diff| {box_diff:.3g} px over {len(pairs)} matches (limit {BOX_MAX_ABS})")
    checks.check(f"{name} scores", score_diff <= SCORE_MAX_ABS,
                 f"max |score diff| {score_diff:.3g} (limit {SCORE_MAX_ABS})")
    return pairs


def paste_box_knife_edge(ref_box, engine_box, mask_size):
    """Whether torchvision's paste (paste_masks_in_image: the box expanded
    by (M + 2) / M in float32, its corners truncated to whole pixels) puts
    the two boxes' masks on different pixel grids although the boxes agree
    to within the box limit: a corner on either side of a whole pixel, where
    a last-bit difference moves the whole mask by one pixel."""
    from torchvision.models.detection.roi_heads import expand_boxes
    boxes = torch.tensor(np.array([ref_box, engine_box], np.float32))
    grid = expand_boxes(boxes, (mask_size + 2) / mask_size).to(dtype=torch.int64)
    return bool(torch.any(grid[0] != grid[1]))


def compare_masks(checks, name, ref, pairs, engine_detections, height, width):
    """Binary full-image masks of matched detections: IoU >= MASK_IOU, or
    every differing pixel on the reference's 0.5 contour.  Where the two
    boxes straddle a whole pixel of the paste grid (paste_box_knife_edge),
    the reference's mask probabilities are pasted again with the engine's
    box and the engine's mask is held to that."""
    from torchvision.models.detection.roi_heads import paste_masks_in_image
    worst_iou, failing, regridded = 1.0, [], 0
    for i, j in pairs:
        mask = engine_detections[j]["mask"]
        if list(mask["size"]) != [height, width]:
            failing.append(f"#{i}: size {mask['size']}")
            continue
        eng = rle_decode(mask["counts"], height, width)
        ref_mask, contour = ref["masks"][i], ref["mask_contours"][i]
        engine_box = np.asarray(engine_detections[j]["box"], np.float32)
        probs = ref["mask_probs"][i]
        if paste_box_knife_edge(ref["boxes"][i], engine_box, probs.shape[-1]):
            soft = paste_masks_in_image(torch.from_numpy(probs)[None, None], torch.from_numpy(engine_box)[None],
                                        (height, width))[0, 0].numpy()
            ref_mask = soft >= 0.5
            contour = np.flatnonzero(np.abs(soft - 0.5) <= MASK_PROB_MAX_ABS)
            regridded += 1
        union = np.count_nonzero(ref_mask | eng)
        iou = np.count_nonzero(ref_mask & eng) / union if union else 1.0
        differing = np.flatnonzero((ref_mask != eng).ravel())
        off_contour = np.setdiff1d(differing, contour).size
        worst_iou = min(worst_iou, iou)
        if iou < MASK_IOU and off_contour:
            failing.append(f"#{i}: IoU {iou:.4f}, {differing.size} pixels differ, "
                           f"{off_contour} away from the 0.5 contour")
    return checks.check(name, not failing,
                        f"{len(pairs)} masks, min IoU {worst_iou:.4f} (limit {MASK_IOU}, or differing "
                        f"pixels only where |p - 0.5| <= {MASK_PROB_MAX_ABS:g})"
                        + (f"; {regridded} at a paste-grid knife edge, against the reference's mask "
                           f"pasted with the engine's box" if regridded else "")
                        + (f"; failing: {'; '.join(failing[:5])}" if failing else ""))
