#!/usr/bin/python3
"""Compares the CUDA backend with the CPU backend, stage by stage and end to
end, for both model variants at fp32 and fp16; and with torchvision running
on the same GPU.

  test_cuda.py --detect PATH [--sanitizer [--kernels FILE] [--jobs N] |
                              --full [--full-images N]] [--pack DIR [--cpu-only]]
  test_cuda.py --detect PATH --prepare DIR

Exits 77 (skipped) where no CUDA GPU is present or this build has no CUDA
backend.  Models and images are those of the CPU parity tests: the narrow
and R50 torchvision models, v1 and v2 (maskrcnn_resnet50_fpn_v2's
layers), with calibrated random weights, and the narrow matterport model, so every image gives several detections.  Each backend
runs a model's images in one mrcnn-detect process (the dumps of each in
its own subdirectory); CUDA then runs them twice over, four to a call
(--batch 4: each size's frames share a batch, whose backbone runs at
once), each frame held to the same limits as alone.  A run that fails is
reported, and the other runs and comparisons still happen.

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
racecheck) over one batch of two frames (the image twice, their backbone
at once), then the image alone, of each variant and precision; --kernels
FILE instruments only the kernels named there (one name a line, matched
as a substring: the engine's own, so cuDNN's and cuBLAS's run as they
are), --jobs N runs N of them at a time.

--full runs, instead, torchvision's maskrcnn_resnet50_fpn at its full size (800 x
1333 resize), random calibrated weights, run by torch on the GPU and by the
CUDA backend at fp32, compared with the fp32 limits on final detections
(--full-images N: on the first N of its three images).

--prepare DIR (tools/gpu-check.sh prepare; no GPU needed) writes the narrow
torchvision (v1 and v2) and matterport models, their images and the CPU backend's
results on them (DIR/references/NAME.json) into DIR.  --pack DIR takes them
from there instead of making them, so that only the R50 models need torch
(and none needs h5py, scipy or pycocotools): CUDA's final results are
compared with the pack's CPU results, its stage tensors (too large to pack:
some 28 MB an image) with those of the CPU backend run here, whose final
results must match the pack's within the fp32 limits.  --cpu-only runs only
that CPU backend and comparison (no GPU needed).
"""

import argparse
import concurrent.futures
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

try:
    import torch
    import torchvision  # noqa: F401
except ImportError as missing:
    print(f"skipped: {missing}")
    sys.exit(77)

import numpy as np
from PIL import Image

import harness
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


class Group:
    """A model and its images.  cuts: the model's (score threshold, max
    detections); config: a matterport model's configuration, None for
    torchvision; references, unrounded: a pack's CPU results and their
    matterport_unrounded boxes, one per image (None: computed here)."""

    def __init__(self, name, model, cuts, images, config=None, references=None, unrounded=None):
        self.name, self.model, self.cuts, self.images = name, model, cuts, images
        self.config, self.references, self.unrounded = config, references, unrounded


# the groups --prepare writes and --pack reads
PACKED = ("narrow", "narrow_v2", "matterport")


def make_group(kind, directory):
    """Makes a model (narrow, narrow_v2, r50, r50_v2 or matterport) and its images in
    directory: torch, and h5py and scipy for matterport."""
    started = time.monotonic()
    for sub in ("models", "images"):
        (directory / sub).mkdir(exist_ok=True)
    config = None
    if kind == "matterport":
        import matterport_fixtures as fx
        import matterport_reference
        model = directory / "models" / "matterport-narrow.h5"
        fx.write_h5(model, fx.calibrated_weights("narrow"), "narrow")
        # no sidecar: the file runs at matterport's own configuration
        config = matterport_reference.DEFAULT_CONFIG
        cuts = (config["DETECTION_MIN_CONFIDENCE"], config["DETECTION_MAX_INSTANCES"])
        shapes = fx.TEST_IMAGES["narrow"][:3]
    else:
        model = directory / "models" / f"{kind}.safetensors"
        heads = test_parity.build(kind, model).roi_heads
        cuts = (heads.score_thresh, heads.detections_per_img)
        shapes = test_parity.IMAGES[kind][:3]
    images = []
    for height, width, seed in shapes:
        images.append(directory / "images" / f"{kind}-{height}x{width}.png")
        harness.save_png(models.synthetic_image(height, width, seed), images[-1])
    print(f"{kind}: model and images made in {time.monotonic() - started:.1f} s", flush=True)
    return Group(kind, model, cuts, images, config)


def write_references(directory, group, references, unrounded):
    """directory/references/NAME.json: the group's model, cuts and, per
    image, the CPU result (and the matterport_unrounded boxes)."""
    (directory / "references").mkdir(exist_ok=True)
    (directory / "references" / f"{group.name}.json").write_text(json.dumps({
        "model": str(group.model.relative_to(directory)), "cuts": list(group.cuts),
        "images": [{"path": str(path.relative_to(directory)), "result": result,
                    "unrounded": None if boxes is None else boxes.tolist()}
                   for path, result, boxes in zip(group.images, references, unrounded)]}))


def read_group(directory, name):
    """The group write_references wrote into directory."""
    data = json.loads((directory / "references" / f"{name}.json").read_text())
    images = data["images"]
    return Group(name, directory / data["model"], tuple(data["cuts"]),
                 [directory / image["path"] for image in images],
                 references=[image["result"] for image in images],
                 unrounded=[None if image["unrounded"] is None else np.array(image["unrounded"])
                            for image in images])


def cuda_unavailable(detect, model_path, image_path):
    """Why the CUDA backend cannot run here, or None."""
    result = harness.run_detect(detect, ["--backend", "cuda", "--model", model_path, image_path])
    if result.returncode != 0 and "not available" in result.stderr:
        return result.stderr.strip()
    return None


def run_batch(checks, detect, name, model, images, backend, precision, dump=None, batch=1):
    """One mrcnn-detect process over images, batch to a call.  Returns each
    image's result (None where the run did not get to it) and dump
    directory (dump, or dump/INDEX for several images)."""
    args = ["--model", model, "--backend", backend, "--precision", precision, "--batch", str(batch)]
    dumps = [None] * len(images)
    if dump is not None:
        args += ["--dump-dir", dump]
        dumps = [dump / str(i) for i in range(len(images))] if len(images) > 1 else [dump]
    what = f"{name} {backend} {precision}"
    started = time.monotonic()
    try:
        result = harness.run_detect(detect, args + list(images))
    except subprocess.TimeoutExpired:
        checks.check(f"{what} runs", False, f"ran past {harness.DETECT_TIMEOUT} s")
        return [None] * len(images), dumps
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    print(f"{what}: {len(lines)} of {len(images)} images in {time.monotonic() - started:.1f} s",
          flush=True)
    if result.returncode != 0:
        checks.check(f"{what} runs", False, f"exit status {result.returncode} after {len(lines)} of "
                     f"{len(images)} images: {result.stderr.strip()[-600:]}")
    return lines + [None] * (len(images) - len(lines)), dumps


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
    import matterport_reference
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


def mask_of(result, i):
    """Detection i's full-image binary mask: its RLE decoded, or as given."""
    mask = result["detections"][i]["mask"]
    return mask if isinstance(mask, np.ndarray) else harness.rle_decode(
        mask["counts"], result["height"], result["width"])


def compare_final(checks, name, ref, eng, limits, score_thresh, max_detections, unrounded=None,
                  sides=("CPU", "CUDA")):
    """Set-wise comparison of two mrcnn-detect results (boxes in original
    pixels, RLE masks, or boolean arrays in ref).  score_thresh,
    max_detections: the model's own cuts; unrounded: matterport_unrounded's
    boxes of ref, None for torchvision; sides: what ref and eng are, for
    the messages."""
    ref_side, eng_side = sides
    ref_boxes, ref_scores, ref_labels = detections(ref)
    eng_boxes, eng_scores, eng_labels = detections(eng)
    pairs, ref_unmatched, eng_unmatched = harness.greedy_match(
        ref_boxes, eng_boxes, MATCH_IOU, ref_labels, eng_labels)
    near = limits["score"]
    ref_cap = ref_scores[-1] if len(ref_scores) >= max_detections else None
    eng_cap = eng_scores[-1] if len(eng_scores) >= max_detections else None

    def at_cutoff(score, cap):
        return abs(score - score_thresh) <= near or (cap is not None and abs(score - cap) <= near)

    unexplained = ([f"{ref_side} #{i} ({ref_scores[i]:.4f})" for i in ref_unmatched
                    if not at_cutoff(ref_scores[i], ref_cap)]
                   + [f"{eng_side} #{j} ({eng_scores[j]:.4f})" for j in eng_unmatched
                      if not at_cutoff(eng_scores[j], eng_cap)])
    # where the share alone decides, extra detections of eng count against it
    total = len(ref_scores) if limits["explained"] else max(len(ref_scores), len(eng_scores))
    fraction = len(pairs) / total if total else 1.0
    checks.check(f"{name} detections matched",
                 len(ref_scores) >= 3 and fraction >= limits["matched"]
                 and not (limits["explained"] and unexplained),
                 f"{eng_side} {len(eng_scores)}, {ref_side} {len(ref_scores)}, {len(pairs)} matched "
                 f"({fraction:.2%}, need {limits['matched']:.0%})"
                 + (f"; unmatched away from a cut-off: {', '.join(unexplained[:6])}" if unexplained else ""))

    def rounding_tie(i, j):
        """Integer boxes apart only by 1 px where ref's unrounded
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
    worst = 1.0
    for i, j in compared:
        a, b = mask_of(ref, i), mask_of(eng, j)
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


def cpu_references(checks, detect, scratch, group):
    """Runs the CPU backend over the group's images.  Returns the CPU
    results to compare with (the pack's, which this run must match, or this
    run's), their matterport_unrounded boxes and this run's dumps."""
    results, dumps = run_batch(checks, detect, group.name, group.model, group.images, "cpu", "fp32",
                               scratch / f"dump-{group.name}-cpu")
    if group.references is None:
        unrounded = [matterport_unrounded(dump, np.asarray(Image.open(path).convert("RGB")), group.config)
                     if group.config and result is not None else None
                     for path, dump, result in zip(group.images, dumps, results)]
        return results, unrounded, dumps
    for path, reference, result, boxes in zip(group.images, group.references, results, group.unrounded):
        if result is not None:
            guarded(checks, f"{path.stem} CPU here", compare_final, reference, result, LIMITS["fp32"],
                    *group.cuts, boxes, sides=("pack", "here"))
    return group.references, group.unrounded, dumps


def guarded(checks, name, compare, *args, **kwargs):
    """compare(checks, name, *args, **kwargs), an error in it reported as a
    failed check: one broken comparison must not hide the others."""
    try:
        compare(checks, name, *args, **kwargs)
    except Exception as error:
        checks.check(f"{name} compared", False, f"{type(error).__name__}: {error}")


def run_group(checks, detect, scratch, group):
    """The CPU backend, then CUDA at both precisions, each over all the
    group's images; then each image's comparisons."""
    references, unrounded, cpu_dumps = cpu_references(checks, detect, scratch, group)
    for precision in ("fp32", "fp16"):
        results, dumps = run_batch(checks, detect, group.name, group.model, group.images, "cuda",
                                   precision, scratch / f"dump-{group.name}-cuda-{precision}")
        for i, path in enumerate(group.images):
            label = f"{path.stem} {precision}"
            if results[i] is None:
                continue  # its run's failure is reported
            if (cpu_dumps[i] / "input.npy").exists():
                guarded(checks, label, compare_stages, cpu_dumps[i], dumps[i], LIMITS[precision])
            if references[i] is not None:
                guarded(checks, label, compare_final, references[i], results[i], LIMITS[precision],
                        *group.cuts, unrounded[i])
        # the images twice, four to a call: each size's frames share a
        # batch, whose backbone runs at once; each frame's results must
        # meet the same bar as alone
        n = len(group.images)
        results, _ = run_batch(checks, detect, f"{group.name} batched", group.model, group.images * 2,
                               "cuda", precision, batch=4)
        for i, path in enumerate(group.images * 2):
            if results[i] is not None and references[i % n] is not None:
                guarded(checks, f"{path.stem} {precision} batched", compare_final, references[i % n],
                        results[i], LIMITS[precision], *group.cuts, unrounded[i % n])


def torchvision_on_gpu(checks, detect, scratch, count):
    """Full-size R50-FPN: torch on the GPU against the CUDA backend (fp32),
    on the first count images."""
    started = time.monotonic()
    model = models.calibrated_model("maskrcnn_resnet50_fpn", bn_eps=0.0)
    model_path = scratch / "r50-full.safetensors"
    import export_torchvision
    metadata = export_torchvision.model_metadata(model)
    del metadata["backbone_bn_eps"]
    export_torchvision.save_file(export_torchvision.model_tensors(model), str(model_path), metadata)
    print(f"full-size R50: made in {time.monotonic() - started:.1f} s", flush=True)
    gpu_model = model.cuda().eval()
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    shapes = [(480, 640, 3), (720, 1280, 5), (600, 400, 1)][:count]
    images = [models.synthetic_image(height, width, seed) for height, width, seed in shapes]
    paths = [scratch / f"torch-gpu-{height}x{width}.png" for height, width, _ in shapes]
    for image, path in zip(images, paths):
        harness.save_png(image, path)
    results, _ = run_batch(checks, detect, "torch-gpu", model_path, paths, "cuda", "fp32")
    for image, path, eng in zip(images, paths, results):
        if eng is None:
            continue  # its run's failure is reported
        height, width = image.shape[:2]
        with torch.no_grad():
            out = gpu_model([models.to_tensor(image).cuda()])[0]
        ref = {"height": height, "width": width, "detections": [
            {"box": box.tolist(), "score": float(score), "label_id": int(label), "mask": soft >= 0.5}
            for box, score, label, soft in zip(out["boxes"].cpu().numpy(), out["scores"].cpu().numpy(),
                                               out["labels"].cpu().numpy(),
                                               out["masks"][:, 0].cpu().numpy())]}
        guarded(checks, path.stem, compare_final, ref, eng, LIMITS["fp32"],
                model.roi_heads.score_thresh, model.roi_heads.detections_per_img,
                sides=("torch", "CUDA"))


def sanitizer_runs(checks, detect, image_path, models_by_variant, kernels, jobs):
    """compute-sanitizer's memcheck and racecheck over a batch of two frames
    (the image twice), then the image alone (the last call's one frame), of
    each variant and precision, jobs at a time: any report fails.  kernels: the
    names of the kernels to instrument (none: all)."""
    tool = shutil.which("compute-sanitizer") or "/usr/local/cuda/bin/compute-sanitizer"
    if not pathlib.Path(tool).exists():
        print("skipped: compute-sanitizer not found")
        sys.exit(77)
    print(subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.strip(), flush=True)
    filters = [arg for name in kernels for arg in ("--kernel-name", f"kns={name}")]
    runs = [(variant, model_path, precision, check) for variant, model_path in models_by_variant.items()
            for precision in ("fp32", "fp16") for check in ("memcheck", "racecheck")]

    def sanitize(run):
        """The run's CompletedProcess (None past the time limit) and seconds."""
        _, model_path, precision, check = run
        # all processes: detect may be a script that execs the program
        command = [tool, "--tool", check, "--error-exitcode", "3", "--leak-check",
                   "full" if check == "memcheck" else "no", "--target-processes", "all", *filters,
                   str(detect), "--model", str(model_path), "--backend", "cuda", "--precision",
                   precision, "--batch", "2", *[str(image_path)] * 3]
        started = time.monotonic()
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            result = None
        return result, time.monotonic() - started

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for (variant, _, precision, check), (result, seconds) in zip(runs, pool.map(sanitize, runs)):
            if result is None:
                checks.check(f"{check} {variant} {precision}", False, "ran past 900 s")
                continue
            report = result.stdout.splitlines() + result.stderr.splitlines()
            summary = [line for line in report if "ERROR SUMMARY" in line or "RACECHECK SUMMARY" in line]
            if not checks.check(f"{check} {variant} {precision}", result.returncode == 0,
                                f"exit {result.returncode}; {'; '.join(summary) or result.stderr[-400:]}; "
                                f"{seconds:.0f} s"):
                print("\n".join([line for line in report if line.startswith("=========")][:60]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detect", required=True, help="the mrcnn-detect executable")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--sanitizer", action="store_true",
                      help="only compute-sanitizer memcheck and racecheck runs")
    mode.add_argument("--full", action="store_true",
                      help="only full-size R50 against torchvision on the GPU")
    mode.add_argument("--prepare", metavar="DIR", type=pathlib.Path,
                      help="only write the narrow models, images and CPU results into DIR")
    parser.add_argument("--pack", metavar="DIR", type=pathlib.Path,
                        help="the narrow models, images and CPU results of --prepare DIR")
    parser.add_argument("--cpu-only", action="store_true",
                        help="with --pack: only the CPU backend against the pack's results")
    parser.add_argument("--kernels", metavar="FILE", type=pathlib.Path,
                        help="--sanitizer: instrument only the kernels named in FILE")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="--sanitizer: runs at a time (default 1)")
    parser.add_argument("--full-images", type=int, default=3, metavar="N",
                        help="--full: how many of its three images (default 3)")
    args = parser.parse_args()
    if args.cpu_only and not args.pack:
        parser.error("--cpu-only needs --pack")
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tools"))

    checks = harness.Checks()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = pathlib.Path(tmp)
        if args.prepare:
            args.prepare.mkdir(parents=True, exist_ok=True)
            for kind in PACKED:
                group = make_group(kind, args.prepare)
                references, unrounded, _ = cpu_references(checks, args.detect, scratch, group)
                counts = [len(result["detections"]) for result in references if result is not None]
                checks.check(f"{kind} CPU references", len(counts) == len(references) and min(counts) >= 3,
                             f"{len(counts)} of {len(references)} images, detections: {counts}")
                write_references(args.prepare, group, references, unrounded)
            checks.finish()
        if args.pack:
            narrow, narrow_v2, matterport = (read_group(args.pack, kind) for kind in PACKED)
        else:
            narrow, narrow_v2, matterport = make_group("narrow", scratch), None, None
        if args.cpu_only:
            for group in (narrow, narrow_v2, matterport):
                cpu_references(checks, args.detect, scratch, group)
            checks.finish()
        why = cuda_unavailable(args.detect, narrow.model, narrow.images[0])
        if why:
            print(f"skipped: {why}")
            sys.exit(77)

        if args.full:
            torchvision_on_gpu(checks, args.detect, scratch, args.full_images)
            checks.finish()
        narrow_v2 = narrow_v2 or make_group("narrow_v2", scratch)
        matterport = matterport or make_group("matterport", scratch)
        if args.sanitizer:
            kernels = args.kernels.read_text().split() if args.kernels else []
            # the narrow model's first image, 240x320
            sanitizer_runs(checks, args.detect, narrow.images[0],
                           {"torchvision": narrow.model, "torchvision v2": narrow_v2.model,
                            "matterport": matterport.model},
                           kernels, args.jobs)
            checks.finish()
        run_group(checks, args.detect, scratch, narrow)
        run_group(checks, args.detect, scratch, narrow_v2)
        for kind in ("r50", "r50_v2"):
            try:
                group = make_group(kind, scratch)
            except Exception as error:  # torch's side: the other models still run
                checks.check(f"{kind} model", False, f"{type(error).__name__}: {error}")
            else:
                run_group(checks, args.detect, scratch, group)
        run_group(checks, args.detect, scratch, matterport)
    checks.finish()


if __name__ == "__main__":
    main()
