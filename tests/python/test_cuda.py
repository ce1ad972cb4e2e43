#!/usr/bin/python3
"""Compares the CUDA backend with the CPU backend, stage by stage and end to
end, for both model variants at fp32 and fp16; and with torchvision running
on the same GPU.

  test_cuda.py --detect PATH [--sanitizer | --full]

Exits 77 (skipped) where no CUDA GPU is present or this build has no CUDA
backend.  Models and images are those of the CPU parity tests: the narrow
and R50 torchvision models with calibrated random weights, and the narrow
matterport model, so every image gives several detections.

Limits (CUDA against CPU):
                       fp32          fp16
  input                |d| <= 1e-5   |d| <= 1e-3 max |ref| (half rounding,
                                     2^-11 relative: 0.06 at matterport's
                                     mean-subtracted +-151)
  FPN levels rel L2    1e-4          2e-2
  proposals matched    99 %          90 % (at IoU 0.99 / 0.9)
  detections matched   99 %          95 %  (class, IoU >= 0.9; at fp16 of
                                     the larger of the two counts)
  box |diff|           0.5 px        2 px
  score |diff|         1e-3          1e-2
  mask IoU             0.99          0.95
At fp32 every unmatched detection must be explained: its score is within
the score limit of the model's own score threshold (torchvision's
box_score_thresh, matterport's DETECTION_MIN_CONFIDENCE) or of the last
score kept under the per-image cap.  At fp16 the matched share alone
decides.  matterport's boxes are integers (rint): a coordinate may differ
by exactly 1 px where the CPU's unrounded value is within 1e-4 of a .5 tie
(as test_matterport.py), and such a box's mask, resized to another size,
is not compared.

--sanitizer runs, instead, compute-sanitizer (memcheck with leak check,
racecheck) over one detection of each variant and precision.

--full runs, instead, torchvision's maskrcnn_resnet50_fpn at its full size (800 x
1333 resize), random calibrated weights, run by torch on the GPU and by the
CUDA backend at fp32, compared with the fp32 limits on final detections.
"""

import argparse
import pathlib
import sys
import tempfile

try:
    import torch
    import torchvision  # noqa: F401
except ImportError as missing:
    print(f"skipped: {missing}")
    sys.exit(77)

import numpy as np

import harness
import matterport_fixtures as fx
import matterport_reference
import models
import test_parity

# "input": harness.compare_tensor's bound; "explained": every unmatched
# detection must be near a cut-off
LIMITS = {
    "fp32": {"input": {"max_abs": 1e-5}, "fpn": 1e-4, "proposals": (0.99, 0.99), "matched": 0.99,
             "explained": True, "box": 0.5, "score": 1e-3, "mask_iou": 0.99},
    "fp16": {"input": {"rel_max": 1e-3}, "fpn": 2e-2, "proposals": (0.90, 0.9), "matched": 0.95,
             "explained": False, "box": 2.0, "score": 1e-2, "mask_iou": 0.95},
}
MATCH_IOU = 0.9
ROUNDING_EPS = 1e-4  # of a .5 tie, as test_matterport.py
FPN_NAMES = ["fpn_0", "fpn_1", "fpn_2", "fpn_3", "fpn_pool"]


def cuda_unavailable(detect, model_path, image_path):
    """Why the CUDA backend cannot run here, or None."""
    result = harness.run_detect(detect, ["--backend", "cuda", "--model", model_path, image_path])
    if result.returncode != 0 and "not available" in result.stderr:
        return result.stderr.strip()
    return None


def detections(result):
    dets = result["detections"]
    boxes = np.array([d["box"] for d in dets], dtype=np.float64).reshape(-1, 4)
    scores = np.array([d["score"] for d in dets], dtype=np.float64)
    labels = np.array([d["label_id"] for d in dets])
    return boxes, scores, labels


def matterport_unrounded(dump, image, config):
    """The CPU's matterport boxes before their rounding to integers (x1, y1,
    x2, y2 original pixels), in the order of its output: its detections.npy
    (normalised y1, x1, y2, x2, score, label) unmolded as
    matterport_reference.unmold, zero-area boxes dropped."""
    raw = np.load(dump / "detections.npy")
    molded, window, _, _, _ = matterport_reference.mold_image(image, config)
    f32 = matterport_reference.F32
    wy1, wx1, wy2, wx2 = matterport_reference.norm_boxes(np.asarray(window, np.float64),
                                                         *molded.shape[:2])
    shift = np.array([wy1, wx1, wy1, wx1], f32)
    scale = np.array([wy2 - wy1, wx2 - wx1, wy2 - wy1, wx2 - wx1], f32)
    h0, w0 = image.shape[:2]
    boxes = (raw[:, :4].astype(f32) - shift) / scale
    # float32 times int64: float64, as NumPy in denorm_boxes
    unrounded = (boxes * np.array([h0 - 1, w0 - 1, h0 - 1, w0 - 1], np.int64)
                 + np.array([0, 0, 1, 1], np.int64))
    rounded = np.around(unrounded)
    keep = (rounded[:, 2] - rounded[:, 0]) * (rounded[:, 3] - rounded[:, 1]) > 0
    return unrounded[keep][:, [1, 0, 3, 2]]


def compare_final(checks, name, ref, eng, limits, score_thresh, max_detections, unrounded=None):
    """Set-wise comparison of two mrcnn-detect results (boxes in original
    pixels, RLE masks).  score_thresh, max_detections: the model's own cuts;
    unrounded: matterport_unrounded's boxes of ref, None for torchvision."""
    ref_boxes, ref_scores, ref_labels = detections(ref)
    eng_boxes, eng_scores, eng_labels = detections(eng)
    pairs, ref_unmatched, eng_unmatched = harness.greedy_match(
        ref_boxes, eng_boxes, MATCH_IOU, ref_labels, eng_labels)
    near = limits["score"]
    ref_cap = ref_scores[-1] if len(ref_scores) >= max_detections else None
    eng_cap = eng_scores[-1] if len(eng_scores) >= max_detections else None

    def at_cutoff(score, cap):
        return abs(score - score_thresh) <= near or (cap is not None and abs(score - cap) <= near)

    unexplained = ([f"CPU #{i} ({ref_scores[i]:.4f})" for i in ref_unmatched
                    if not at_cutoff(ref_scores[i], ref_cap)]
                   + [f"CUDA #{j} ({eng_scores[j]:.4f})" for j in eng_unmatched
                      if not at_cutoff(eng_scores[j], eng_cap)])
    # where the share alone decides, extra CUDA detections count against it
    total = len(ref_scores) if limits["explained"] else max(len(ref_scores), len(eng_scores))
    fraction = len(pairs) / total if total else 1.0
    checks.check(f"{name} detections matched",
                 len(ref_scores) >= 3 and fraction >= limits["matched"]
                 and not (limits["explained"] and unexplained),
                 f"CUDA {len(eng_scores)}, CPU {len(ref_scores)}, {len(pairs)} matched "
                 f"({fraction:.2%}, need {limits['matched']:.0%})"
                 + (f"; unmatched away from a cut-off: {', '.join(unexplained[:6])}" if unexplained else ""))

    def rounding_tie(i, j):
        """Integer boxes apart only by 1 px where the CPU's unrounded
        coordinate sits at a .5 tie, which a last-bit difference flips."""
        if unrounded is None:
            return False
        diff = np.abs(ref_boxes[i] - eng_boxes[j])
        near_half = np.abs(np.abs(unrounded[i] - np.floor(unrounded[i])) - 0.5) <= ROUNDING_EPS
        return bool(diff.any() and np.all((diff == 0) | ((diff == 1) & near_half)))

    ties = {(i, j) for i, j in pairs if rounding_tie(i, j)}
    compared = [(i, j) for i, j in pairs if (i, j) not in ties]
    box = max((float(np.abs(ref_boxes[i] - eng_boxes[j]).max()) for i, j in compared), default=0.0)
    score = max((abs(ref_scores[i] - eng_scores[j]) for i, j in pairs), default=0.0)
    checks.check(f"{name} boxes", box <= limits["box"], f"max |diff| {box:.3g} px (limit {limits['box']})"
                 + (f"; {len(ties)} off by 1 px at a .5 rounding tie" if ties else ""))
    checks.check(f"{name} scores", score <= limits["score"],
                 f"max |diff| {score:.3g} (limit {limits['score']})")
    height, width = ref["height"], ref["width"]
    worst = 1.0
    for i, j in compared:
        a = harness.rle_decode(ref["detections"][i]["mask"]["counts"], height, width)
        b = harness.rle_decode(eng["detections"][j]["mask"]["counts"], height, width)
        union = np.count_nonzero(a | b)
        worst = min(worst, np.count_nonzero(a & b) / union if union else 1.0)
    checks.check(f"{name} masks", worst >= limits["mask_iou"],
                 f"{len(compared)} masks, min IoU {worst:.4f} (limit {limits['mask_iou']})"
                 + (f"; {len(ties)} of boxes at a rounding tie not compared" if ties else ""))


def compare_stages(checks, name, ref_dir, eng_dir, limits):
    """The dumped intermediates, so a failure points at a stage."""
    def load(directory, stem):
        path = directory / f"{stem}.npy"
        return np.load(path) if path.exists() else None

    harness.compare_tensor(checks, f"{name} input", load(ref_dir, "input"), load(eng_dir, "input"),
                           **limits["input"])
    for stem in FPN_NAMES:
        harness.compare_tensor(checks, f"{name} {stem}", load(ref_dir, stem), load(eng_dir, stem),
                               rel_l2=limits["fpn"])
    anchors = load(ref_dir, "anchors")
    if anchors is not None:
        harness.compare_tensor(checks, f"{name} anchors", anchors, load(eng_dir, "anchors"),
                               max_abs=1e-6)
    ref, eng = load(ref_dir, "proposals"), load(eng_dir, "proposals")
    need, iou = limits["proposals"]
    real = ref[np.any(ref != 0, axis=1)]
    eng_real = eng[np.any(eng != 0, axis=1)] if eng is not None else np.zeros((0, 4))
    pairs, _, _ = harness.greedy_match(real, eng_real, iou)
    fraction = len(pairs) / max(len(real), 1)
    checks.check(f"{name} proposals", fraction >= need,
                 f"CUDA {len(eng_real)}, CPU {len(real)}; {fraction:.2%} matched at IoU >= {iou} "
                 f"(need {need:.0%})")


def run_pair(checks, detect, scratch, name, model_path, image, cuts, matterport_config=None,
             extra=()):
    """CPU once, then CUDA at both precisions, on one image.  cuts: the
    model's (score threshold, max detections); matterport_config: the
    configuration of a matterport model, None for torchvision."""
    image_path = scratch / f"{name}.png"
    harness.save_png(image, image_path)
    dumps = {}
    results = {}
    for backend, precision in (("cpu", "fp32"), ("cuda", "fp32"), ("cuda", "fp16")):
        dump = scratch / f"dump-{name}-{backend}-{precision}"
        dump.mkdir()
        try:
            lines = harness.detect_json(detect, ["--model", model_path, "--backend", backend,
                                                 "--precision", precision, "--dump-dir", dump,
                                                 *extra, image_path])
        except RuntimeError as error:
            checks.check(f"{name} {backend} {precision} runs", False, str(error))
            return
        results[backend, precision] = lines[0]
        dumps[backend, precision] = dump
    ref = results["cpu", "fp32"]
    unrounded = (matterport_unrounded(dumps["cpu", "fp32"], image, matterport_config)
                 if matterport_config else None)
    for precision in ("fp32", "fp16"):
        limits = LIMITS[precision]
        label = f"{name} {precision}"
        compare_stages(checks, label, dumps["cpu", "fp32"], dumps["cuda", precision], limits)
        compare_final(checks, label, ref, results["cuda", precision], limits, *cuts, unrounded)


def torchvision_on_gpu(checks, detect, scratch):
    """Full-size R50-FPN: torch on the GPU against the CUDA backend (fp32)."""
    model = models.calibrated_model("maskrcnn_resnet50_fpn", bn_eps=0.0)
    model_path = scratch / "r50-full.safetensors"
    from safetensors.torch import save_file
    import export_torchvision
    metadata = export_torchvision.model_metadata(model)
    del metadata["backbone_bn_eps"]
    save_file(export_torchvision.model_tensors(model), str(model_path), metadata)
    gpu_model = model.cuda().eval()
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    for height, width, seed in [(480, 640, 3), (720, 1280, 5), (600, 400, 1)]:
        name = f"torch-gpu-{height}x{width}"
        image = models.synthetic_image(height, width, seed)
        image_path = scratch / f"{name}.png"
        harness.save_png(image, image_path)
        with torch.no_grad():
            out = gpu_model([models.to_tensor(image).cuda()])[0]
        ref = {"height": height, "width": width, "detections": []}
        for box, score, label, soft in zip(out["boxes"].cpu().numpy(), out["scores"].cpu().numpy(),
                                           out["labels"].cpu().numpy(), out["masks"][:, 0].cpu().numpy()):
            mask = np.asfortranarray(soft >= 0.5)
            from pycocotools import mask as coco_mask
            rle = coco_mask.encode(mask.astype(np.uint8))
            ref["detections"].append({"box": box.tolist(), "score": float(score), "label_id": int(label),
                                      "mask": {"size": [height, width],
                                               "counts": rle["counts"].decode()}})
        try:
            eng = harness.detect_json(detect, ["--model", model_path, "--backend", "cuda",
                                               "--precision", "fp32", image_path])[0]
        except RuntimeError as error:
            checks.check(f"{name} runs", False, str(error))
            continue
        compare_final(checks, name, ref, eng, LIMITS["fp32"], model.roi_heads.score_thresh,
                      model.roi_heads.detections_per_img)


def sanitizer_runs(checks, detect, scratch, models_by_variant):
    """compute-sanitizer's memcheck and racecheck over one detection of each
    variant and precision: any report fails."""
    import shutil
    import subprocess
    tool = shutil.which("compute-sanitizer") or "/usr/local/cuda/bin/compute-sanitizer"
    if not pathlib.Path(tool).exists():
        print("skipped: compute-sanitizer not found")
        sys.exit(77)
    image_path = scratch / "sanitizer.png"
    harness.save_png(models.synthetic_image(240, 320, 5), image_path)
    for variant, model_path in models_by_variant.items():
        for precision in ("fp32", "fp16"):
            for check in ("memcheck", "racecheck"):
                result = subprocess.run(
                    [tool, "--tool", check, "--error-exitcode", "3", "--leak-check", "full"
                     if check == "memcheck" else "no", str(detect), "--model", str(model_path),
                     "--backend", "cuda", "--precision", precision, str(image_path)],
                    capture_output=True, text=True, timeout=900)
                summary = [line for line in result.stdout.splitlines() + result.stderr.splitlines()
                           if "ERROR SUMMARY" in line or "RACECHECK SUMMARY" in line]
                checks.check(f"{check} {variant} {precision}", result.returncode == 0,
                             f"exit {result.returncode}; {'; '.join(summary) or result.stderr[-400:]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detect", required=True, help="the mrcnn-detect executable")
    parser.add_argument("--sanitizer", action="store_true",
                        help="only compute-sanitizer memcheck and racecheck runs")
    parser.add_argument("--full", action="store_true",
                        help="only full-size R50 against torchvision on the GPU")
    args = parser.parse_args()
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tools"))

    checks = harness.Checks()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = pathlib.Path(tmp)
        narrow = scratch / "narrow.safetensors"
        narrow_model = test_parity.build("narrow", narrow)
        probe = scratch / "probe.png"
        harness.save_png(models.synthetic_image(64, 64, 1), probe)
        why = cuda_unavailable(args.detect, narrow, probe)
        if why:
            print(f"skipped: {why}")
            sys.exit(77)

        if args.full:
            torchvision_on_gpu(checks, args.detect, scratch)
            checks.finish()
        if args.sanitizer:
            matterport = scratch / "matterport-narrow.h5"
            fx.write_h5(matterport, fx.calibrated_weights("narrow"), "narrow")
            sanitizer_runs(checks, args.detect, scratch,
                           {"torchvision": narrow, "matterport": matterport})
            checks.finish()
        heads = narrow_model.roi_heads
        for height, width, seed in test_parity.IMAGES["narrow"][:3]:
            run_pair(checks, args.detect, scratch, f"narrow-{height}x{width}", narrow,
                     models.synthetic_image(height, width, seed),
                     (heads.score_thresh, heads.detections_per_img))
        r50 = scratch / "r50.safetensors"
        heads = test_parity.build("r50", r50).roi_heads
        for height, width, seed in test_parity.IMAGES["r50"]:
            run_pair(checks, args.detect, scratch, f"r50-{height}x{width}", r50,
                     models.synthetic_image(height, width, seed),
                     (heads.score_thresh, heads.detections_per_img))

        weights = fx.calibrated_weights("narrow")
        matterport = scratch / "matterport-narrow.h5"
        fx.write_h5(matterport, weights, "narrow")
        # no sidecar: the file runs at matterport's own configuration
        config = matterport_reference.DEFAULT_CONFIG
        for height, width, seed in fx.TEST_IMAGES["narrow"][:3]:
            run_pair(checks, args.detect, scratch, f"matterport-{height}x{width}", matterport,
                     models.synthetic_image(height, width, seed),
                     (config["DETECTION_MIN_CONFIDENCE"], config["DETECTION_MAX_INSTANCES"]), config)
    checks.finish()


if __name__ == "__main__":
    main()
