#!/usr/bin/python3
"""Checks how mrcnn-detect reads model files.

  test_model_files.py --detect PATH

- a state_dict saved without metadata is described (--info) with
  torchvision's v1 constants and the shapes found in its tensors;
- metadata, where present, overrides those constants;
- the same weights under the legacy key names of the original .pth file
  give the same detections;
- v2 files (maskrcnn_resnet50_fpn_v2's layers) are described as such, and
  the export tool writes them from random weights or a .pth;
- F16 and BF16 files load, and match an F32 file of the same rounded weights;
- damaged or inconsistent files, and unreadable images, are refused with a
  one-line message naming the file and the problem, never a crash.
"""

import argparse
import json
import math
import pathlib
import struct
import subprocess
import sys
import tempfile

try:
    import torch
    import torchvision  # noqa: F401
    from safetensors import safe_open
    from safetensors.torch import save_file
except ImportError as missing:
    print(f"skipped: {missing}")
    sys.exit(77)

import numpy as np

import harness
import models

EXPORT_TOOL = pathlib.Path(__file__).resolve().parents[2] / "tools" / "export_torchvision.py"
sys.path.insert(0, str(EXPORT_TOOL.parent))
import export_torchvision  # noqa: E402

# torchvision's maskrcnn_resnet50_fpn (COCO_V1) constants (spec B.1).
V1_CONSTANTS = {
    "variant": "torchvision",
    "min_size": 800,
    "max_size": 1333,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "size_divisible": 32,
    "backbone_bn_eps": 0.0,
    "rpn_pre_nms_top_n": 1000,
    "rpn_post_nms_top_n": 1000,
    "rpn_nms_thresh": 0.7,
    "box_score_thresh": 0.05,
    "box_nms_thresh": 0.5,
    "box_detections_per_img": 100,
    "anchor_sizes": [[32], [64], [128], [256], [512]],
    "aspect_ratios": [[0.5, 1.0, 2.0]] * 5,
}

# torchvision's COCO category names, index = category id (spec part E).
COCO_CLASS_NAMES = [
    "__background__", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train",
    "truck", "boat", "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter",
    "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
    "giraffe", "N/A", "backpack", "umbrella", "N/A", "N/A", "handbag", "tie", "suitcase",
    "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork",
    "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot",
    "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "N/A",
    "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
]

NARROW_SHAPE = {"num_classes": 5, "blocks": [1, 1, 1, 1], "stem_channels": 16, "fpn_channels": 64,
                "representation_size": 256, "mask_channels": [64, 64],
                "architecture": "ResNet-14-FPN Mask R-CNN, torchvision v1 heads", "rpn_convs": 1,
                "box_head_channels": [], "box_head_features": [256, 256]}
R50_SHAPE = {"num_classes": 91, "blocks": [3, 4, 6, 3], "stem_channels": 64, "fpn_channels": 256,
             "representation_size": 1024, "mask_channels": [256, 256, 256, 256],
             "architecture": "maskrcnn_resnet50_fpn", "rpn_convs": 1, "box_head_channels": [],
             "box_head_features": [1024, 1024]}
# maskrcnn_resnet50_fpn_v2: batch norm (eps 1e-5) in the FPN and the heads,
# two RPN convs, a box head of four convs and one fully connected layer.
R50_V2_INFO = {**V1_CONSTANTS, **R50_SHAPE, "architecture": "maskrcnn_resnet50_fpn_v2",
               "backbone_bn_eps": 1e-5, "head_bn_eps": 1e-5, "rpn_convs": 2,
               "box_head_channels": [256] * 4, "box_head_features": [1024]}
NARROW_V2_SHAPE = {**NARROW_SHAPE, "architecture": "ResNet-14-FPN Mask R-CNN, torchvision v2 heads",
                   "rpn_convs": 2, "box_head_channels": [64] * 4, "box_head_features": [256]}

IMAGE = (240, 320, 2)  # (height, width, seed): 29 detections with the narrow model


def legacy_name(name):
    """The key the original maskrcnn_resnet50_fpn .pth used (spec D.2)."""
    parts = name.split(".")
    if name.startswith(("backbone.fpn.inner_blocks.", "backbone.fpn.layer_blocks.")):
        del parts[4]  # backbone.fpn.inner_blocks.{k}.0.weight
    elif name.startswith("rpn.head.conv.0.0."):
        parts[3:5] = []  # rpn.head.conv.0.0.weight
    elif name.startswith("roi_heads.mask_head."):
        parts[2:4] = [f"mask_fcn{int(parts[2]) + 1}"]  # roi_heads.mask_head.{j}.0.weight
    return ".".join(parts)


def same_value(expected, actual):
    """Equality with float32 tolerance (the engine may keep constants in fp32)."""
    if isinstance(expected, list):
        return (isinstance(actual, list) and len(actual) == len(expected)
                and all(same_value(e, a) for e, a in zip(expected, actual)))
    if isinstance(expected, float) and isinstance(actual, (int, float)):
        return math.isclose(expected, actual, rel_tol=1e-6, abs_tol=1e-12)
    return expected == actual


def check_info(checks, detect, name, model_path, expected):
    try:
        lines = harness.detect_json(detect, ["--model", model_path, "--info"])
        info = lines[0]
    except (RuntimeError, ValueError, IndexError) as error:
        return checks.check(name, False, f"--info failed: {error}")
    wrong = [f"{key}: {info.get(key, '<absent>')!r}, expected {value!r}"
             for key, value in expected.items() if not same_value(value, info.get(key))]
    return checks.check(name, not wrong, f"{len(expected)} keys compared"
                        + (f"; wrong: {'; '.join(wrong)}" if wrong else ""))


def pack(entries, metadata=None, header_text=None):
    """A safetensors file as bytes: 8-byte little-endian header length, JSON
    header, then the tensor data.  entries: (name, dtype, shape, raw bytes)."""
    header, offset = {}, 0
    for name, dtype, shape, data in entries:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    text = (header_text if header_text is not None else json.dumps(header)).encode()
    text += b" " * (-len(text) % 8)  # the format aligns the data to 8 bytes
    return struct.pack("<Q", len(text)) + text + b"".join(data for *_, data in entries)


def f32_entries(state):
    return [(name, "F32", tuple(tensor.shape), tensor.float().contiguous().numpy().tobytes())
            for name, tensor in state.items()]


def run_image(checks, detect, name, model_path, image_path):
    """Runs one image; returns its detections, or None (a failed check)."""
    try:
        return harness.detect_json(detect, ["--model", model_path, image_path])[0]["detections"]
    except (RuntimeError, ValueError, IndexError) as error:
        checks.check(name, False, str(error))
        return None


def compare_runs(checks, name, expected, actual, score_thresh, cap):
    """Two engine runs that should agree: set-wise, at fp32 tolerances."""
    if expected is None or actual is None:
        return
    exact = expected == actual
    print(f"     {name}: {len(actual)} detections, {'bit-identical' if exact else 'not bit-identical'}"
          f" to the {len(expected)} of the reference run")

    def columns(dets):
        return (np.array([d["box"] for d in dets], dtype=np.float64).reshape(-1, 4),
                np.array([d["score"] for d in dets]), np.array([d["label_id"] for d in dets]))
    harness.compare_detections(checks, name, *columns(expected), *columns(actual), score_thresh, cap)


def check_export_tool(checks, scratch, arch, model, state, metadata, classes):
    """The export tool's command line for arch: its calibrated random
    weights are model's (the recipe being deterministic), and --from-pth of
    model's state_dict gives the same file."""
    pth = scratch / f"{arch}.pth"
    torch.save(model.state_dict(), pth)
    for name, source in ((f"export tool {arch}, random weights", []),
                         (f"export tool {arch}, --from-pth", ["--from-pth", pth])):
        exported = scratch / "exported.safetensors"
        result = subprocess.run([sys.executable, EXPORT_TOOL, "--arch", arch, "--classes", classes,
                                 *source, exported], capture_output=True, text=True)
        if not checks.check(f"{name}: exit status", result.returncode == 0,
                            f"{result.returncode} {result.stderr.strip()[-300:]}"):
            continue
        with safe_open(str(exported), "pt") as file:
            same_metadata = file.metadata() == metadata
            keys = set(file.keys())
            worst = max((float((file.get_tensor(key) - state[key]).abs().max()) for key in keys & state.keys()),
                        default=0.0)
        checks.check(f"{name}: content", same_metadata and keys == set(state) and worst <= 1e-5,
                     f"metadata {'identical' if same_metadata else 'DIFFERENT'}, {len(keys)} tensors "
                     f"(expected {len(state)}), max weight difference {worst:.3g}")


def check_refused(checks, detect, name, model_path, image_path, culprit, keywords, options=()):
    """The run must fail cleanly: exit status 1..127 (not a signal), nothing
    on stdout, one line on stderr naming the culprit and the problem."""
    result = harness.run_detect(detect, [*options, "--model", model_path, image_path])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    message = lines[0] if lines else ""
    missing = [word for word in [str(culprit), *keywords] if word.lower() not in message.lower()]
    ok = checks.check(
        name, 0 < result.returncode < 128 and len(lines) == 1 and not result.stdout.strip() and not missing,
        f"exit status {result.returncode}, {len(lines)} stderr line(s), message {message!r}"
        + (f"; lacks {missing}" if missing else ""))
    if not ok:
        print(result.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detect", required=True, help="the mrcnn-detect executable")
    args = parser.parse_args()
    detect = args.detect
    torch.set_grad_enabled(False)
    checks = harness.Checks()

    with tempfile.TemporaryDirectory(prefix="model-files-") as scratch:
        scratch = pathlib.Path(scratch)
        height, width, seed = IMAGE
        image_path = scratch / "image.png"
        harness.save_png(models.synthetic_image(height, width, seed), image_path)

        # Plain state_dicts, no metadata: torchvision v1 constants.
        narrow = models.calibrated_model("narrow")
        state = export_torchvision.model_tensors(narrow)
        plain = scratch / "narrow-plain.safetensors"
        save_file(state, str(plain))
        check_info(checks, detect, "narrow without metadata: --info", plain, {**V1_CONSTANTS, **NARROW_SHAPE})

        r50_plain = scratch / "r50-plain.safetensors"
        save_file(export_torchvision.model_tensors(models.build_r50()), str(r50_plain))
        check_info(checks, detect, "maskrcnn_resnet50_fpn without metadata: --info", r50_plain,
                   {**V1_CONSTANTS, **R50_SHAPE, "class_names": COCO_CLASS_NAMES})

        # Metadata overrides every constant it carries.
        custom = models.build_narrow(min_size=600, max_size=1000, bn_eps=1e-3)
        custom.transform.image_mean = [0.5, 0.4, 0.3]
        custom.transform.image_std = [0.2, 0.25, 0.3]
        custom.rpn._pre_nms_top_n["testing"] = 500
        custom.rpn._post_nms_top_n["testing"] = 300
        custom.rpn.nms_thresh = 0.6
        custom.roi_heads.score_thresh = 0.2
        custom.roi_heads.nms_thresh = 0.4
        custom.roi_heads.detections_per_img = 50
        custom_path = scratch / "narrow-custom.safetensors"
        export_torchvision.export(custom, custom_path, class_names=models.NARROW_CLASS_NAMES)
        check_info(checks, detect, "narrow with metadata: --info", custom_path, {
            "min_size": 600, "max_size": 1000, "image_mean": [0.5, 0.4, 0.3],
            "image_std": [0.2, 0.25, 0.3], "backbone_bn_eps": 1e-3, "rpn_pre_nms_top_n": 500,
            "rpn_post_nms_top_n": 300, "rpn_nms_thresh": 0.6, "box_score_thresh": 0.2,
            "box_nms_thresh": 0.4, "box_detections_per_img": 50,
            "class_names": models.NARROW_CLASS_NAMES, **NARROW_SHAPE})

        # Legacy key names: the same detections as the current names.
        score_thresh = narrow.roi_heads.score_thresh
        cap = narrow.roi_heads.detections_per_img
        metadata = export_torchvision.model_metadata(narrow, models.NARROW_CLASS_NAMES)
        current = scratch / "narrow.safetensors"
        save_file(state, str(current), metadata)
        legacy = scratch / "narrow-legacy.safetensors"
        legacy_state = {legacy_name(name): tensor for name, tensor in state.items()}
        renamed = sum(name != legacy_name(name) for name in state)
        save_file(legacy_state, str(legacy), metadata)
        print(f"     legacy file: {renamed} of {len(state)} keys renamed")
        baseline = run_image(checks, detect, "current key names", current, image_path)
        checks.check("current key names: detections", baseline is not None and len(baseline) >= 5,
                     f"{len(baseline) if baseline is not None else 'no'} detections")
        compare_runs(checks, "legacy key names", baseline,
                     run_image(checks, detect, "legacy key names", legacy, image_path), score_thresh, cap)
        # one CPU thread: the same detections as OpenMP's own count
        one_thread = harness.detect_json(detect, ["--threads", "1", "--model", current,
                                                  image_path])[0]["detections"]
        checks.check("--threads 1: the default run's detections", one_thread == baseline,
                     f"{len(one_thread)} detections, identical: {one_thread == baseline}")
        # frames of five padded sizes through one engine, two rounds (the CPU
        # backend keeps the primitives of four sizes): each frame's results
        # are those of a process that saw only it
        sizes = [(240, 320), (320, 240), (200, 400), (400, 200), (300, 300)]
        paths = []
        for k, (h, w) in enumerate(sizes):
            paths.append(scratch / f"size-{h}x{w}.png")
            harness.save_png(models.synthetic_image(h, w, 20 + k), paths[-1])
        order = paths + paths[:3]
        together = harness.detect_json(detect, ["--model", current, *order])
        alone = {path: harness.detect_json(detect, ["--model", current, path])[0]["detections"]
                 for path in paths}
        differing = [path.stem for path, out in zip(order, together) if out["detections"] != alone[path]]
        checks.check("frames of five sizes on one engine: each as alone", len(together) == len(order)
                     and not differing and all(len(d) >= 1 for d in alone.values()),
                     f"{len(together)} results, {sum(len(d) for d in alone.values())} detections alone, "
                     f"differing: {differing or 'none'}")
        # the same frames three to a call (mrcnn_engine_detect_batch): the
        # same output; an image that does not load ends the run after the
        # images before it, in its batch too
        batched = harness.detect_json(detect, ["--batch", "3", "--model", current, *order])
        checks.check("--batch 3: the output of one frame at a time", batched == together,
                     f"{len(batched)} results, identical: {batched == together}")
        missing = scratch / "missing.png"
        broken = harness.run_detect(detect, ["--batch", "3", "--model", current, paths[0], paths[1],
                                             missing, paths[2]])
        printed = [json.loads(line) for line in broken.stdout.splitlines() if line.strip()]
        checks.check("--batch 3 with a missing third image: the two before it, then its error",
                     broken.returncode == 1 and printed == together[:2] and str(missing) in broken.stderr,
                     f"exit {broken.returncode}, {len(printed)} results, {broken.stderr.strip()}")

        # Half-precision files: converted on load, so they must match an F32
        # file holding the same rounded values.
        for dtype, tag in ((torch.float16, "F16"), (torch.bfloat16, "BF16")):
            rounded = {name: tensor.to(dtype) for name, tensor in state.items()}
            half_path = scratch / f"narrow-{tag}.safetensors"
            save_file(rounded, str(half_path), metadata)
            widened_path = scratch / f"narrow-{tag}-as-F32.safetensors"
            save_file({name: tensor.float() for name, tensor in rounded.items()}, str(widened_path), metadata)
            compare_runs(checks, f"{tag} file", run_image(checks, detect, f"{tag} rounded F32 file",
                                                           widened_path, image_path),
                         run_image(checks, detect, f"{tag} file", half_path, image_path), score_thresh, cap)

        # The export tool's command line: calibrated random weights (the same
        # as those built here, the recipe being deterministic), and a .pth.
        classes = scratch / "classes.txt"
        classes.write_text("\n".join(models.NARROW_CLASS_NAMES) + "\n")
        check_export_tool(checks, scratch, "narrow", narrow, state, metadata, classes)

        # torchvision v2: without metadata, a v2 file is read as
        # maskrcnn_resnet50_fpn_v2 (its batch norms' eps 1e-5)
        r50_v2_plain = scratch / "r50-v2-plain.safetensors"
        save_file(export_torchvision.model_tensors(models.build_r50_v2()), str(r50_v2_plain))
        check_info(checks, detect, "maskrcnn_resnet50_fpn_v2 without metadata: --info", r50_v2_plain,
                   {**R50_V2_INFO, "class_names": COCO_CLASS_NAMES})
        r50_v2_plain.unlink()
        narrow_v2 = models.calibrated_model("narrow_v2")
        v2_state = export_torchvision.model_tensors(narrow_v2)
        v2_metadata = export_torchvision.model_metadata(narrow_v2, models.NARROW_CLASS_NAMES)
        check_export_tool(checks, scratch, "narrow_v2", narrow_v2, v2_state, v2_metadata, classes)
        v2_path = scratch / "narrow-v2.safetensors"
        save_file(v2_state, str(v2_path), v2_metadata)
        check_info(checks, detect, "narrow v2: --info", v2_path,
                   {**NARROW_V2_SHAPE, "backbone_bn_eps": 1e-5, "head_bn_eps": 1e-5})
        v2_dets = run_image(checks, detect, "narrow v2", v2_path, image_path)
        checks.check("narrow v2: detections", v2_dets is not None and len(v2_dets) >= 5,
                     f"{len(v2_dets) if v2_dets is not None else 'no'} detections")

        # v2 files with a layer or a batch-norm tensor missing, or a head of
        # another depth than its fully connected layer's index says
        v2_entries = f32_entries(v2_state)

        def without(*prefixes):
            return pack([entry for entry in v2_entries if not entry[0].startswith(prefixes)], v2_metadata)
        v2_broken = {
            "v2: box-head batch norm without running_var": (
                without("roi_heads.box_head.2.1.running_var"),
                ["missing", "roi_heads.box_head.2.1.running_var"]),
            "v2: FPN batch norm without weight": (
                without("backbone.fpn.layer_blocks.1.1.weight"),
                ["missing", "backbone.fpn.layer_blocks.1.1.weight"]),
            "v2: box head without its second conv": (
                without("roi_heads.box_head.1."), ["missing", "roi_heads.box_head.1.0.weight"]),
            "v2: box head of three convs before its fully connected layer at 5": (
                without("roi_heads.box_head.3."), ["missing", "roi_heads.box_head.4.weight"]),
            "v2: mask head without its first conv": (
                without("roi_heads.mask_head.0."), ["missing", "roi_heads.mask_head.0.0.weight"]),
            "v2: second RPN conv of the wrong width": (pack([
                (name, dtype, (shape[0], shape[1] // 2, *shape[2:]), data[:len(data) // 2])
                if name == "rpn.head.conv.1.0.weight" else (name, dtype, shape, data)
                for name, dtype, shape, data in v2_entries], v2_metadata),
                ["shape", "rpn.head.conv.1.0.weight"]),
        }
        for name, (content, keywords) in v2_broken.items():
            path = scratch / "broken-v2.safetensors"
            path.write_bytes(content)
            check_refused(checks, detect, name, path, image_path, path, keywords)

        # Damaged files, written byte by byte.
        entries = f32_entries(state)
        valid = pack(entries, metadata)
        header_length = struct.unpack("<Q", valid[:8])[0]
        data_length = len(valid) - 8 - header_length
        broken = {
            "missing file": (None, ["no such file"]),
            "empty file": (b"", ["empty"]),
            "truncated data": (valid[:8 + header_length + data_length // 2], ["truncated"]),
            "header length beyond the file": (struct.pack("<Q", len(valid)) + valid[8:], ["header length"]),
            "bad JSON header": (pack(entries, header_text='{"backbone.body.conv1.weight": {'), ["json"]),
            "unknown dtype": (pack([(entries[0][0], "F99", *entries[0][2:]), *entries[1:]], metadata),
                              ["dtype"]),
            "wrong tensor shape": (pack([
                (name, dtype, (shape[0] + 1, *shape[1:]), data + bytes(len(data) // shape[0]))
                if name == "rpn.head.cls_logits.weight" else (name, dtype, shape, data)
                for name, dtype, shape, data in entries], metadata),
                ["shape", "rpn.head.cls_logits.weight"]),
            "missing tensor": (pack([entry for entry in entries
                                     if entry[0] != "roi_heads.box_head.fc6.weight"], metadata),
                               ["missing", "roi_heads.box_head.fc6.weight"]),
        }

        def patched(changes):
            """entries with some values replaced: {name: {index: value}}"""
            out = []
            for name, dtype, shape, data in entries:
                if name in changes:
                    values = np.frombuffer(data, np.float32).copy()
                    for index, value in changes[name].items():
                        values[index] = value
                    data = values.tobytes()
                out.append((name, dtype, shape, data))
            return pack(out, metadata)
        broken["NaN weight"] = (patched({"roi_heads.box_head.fc6.weight": {7: np.nan}}),
                                ["box head fc 1 weight", "NaN"])
        # gamma / sqrt(var + eps) beyond float32 once folded
        broken["batch norm folding to infinity"] = (
            patched({"backbone.body.bn1.weight": {0: 3e38}, "backbone.body.bn1.running_var": {0: 0.0}}),
            ["backbone stem conv weight", "infinite"])
        for name, (content, keywords) in broken.items():
            path = scratch / f"{name.replace(' ', '-')}.safetensors"
            if content is not None:
                path.write_bytes(content)
            check_refused(checks, detect, name, path, image_path, path, keywords)

        no_image = scratch / "no-image.png"
        check_refused(checks, detect, "missing image", current, no_image, no_image, ["no such file"])
        not_an_image = scratch / "not-an-image.png"
        not_an_image.write_bytes(b"this is not a PNG file\n" * 10)
        check_refused(checks, detect, "undecodable image", current, not_an_image, not_an_image, [])

        # options this build or machine cannot serve, or out of range
        gpu = harness.run_detect(detect, ["--backend", "cuda", "--model", current, image_path])
        if gpu.returncode == 0:
            print("ok   cuda backend: a GPU is present, --backend cuda runs")
            check_refused(checks, detect, "missing CUDA device", current, image_path, "CUDA device 7",
                          ["does not exist"], ["--backend", "cuda", "--device", "7"])
        else:
            check_refused(checks, detect, "cuda backend without a GPU", current, image_path, "CUDA",
                          ["not available", "CPU backend"], ["--backend", "cuda"])
            check_refused(checks, detect, "fp16 without a GPU", current, image_path, "fp16", ["CPU"],
                          ["--precision", "fp16"])
        for name, options, culprit, keywords in [
                ("unknown backend", ["--backend", "tpu"], "--backend", ["auto, cpu or cuda"]),
                ("score threshold above 1", ["--score-threshold", "2"], "thresholds", ["[0, 1]"]),
                ("max detections above 1000", ["--max-detections", "5000"], "max detections",
                 ["1000"]),
                ("negative thread count", ["--threads", "-1"], "--threads", ["0"]),
                ("batch of 0", ["--batch", "0"], "--batch", ["1", "64"]),
                ("batch above 64", ["--batch", "65"], "--batch", ["1", "64"]),
                ("batch with dumps", ["--batch", "2", "--dump-dir", scratch / "dumps"],
                 "--dump-dir", ["--batch"])]:
            check_refused(checks, detect, name, current, image_path, culprit, keywords, options)
    checks.finish()


if __name__ == "__main__":
    main()
