#!/usr/bin/python3
"""Checks how mrcnn-detect reads matterport Keras .h5 files and sidecars.

  test_matterport_files.py --detect PATH

- --info describes the narrow ResNet-50 and a narrow ResNet-101 file
  (backbone, blocks, widths and class count taken from the weights);
- the same weights stored under /model_weights with layer_names split into
  layer_names0/1 and chunked, gzip-compressed datasets, stored as float64,
  or with variable-length UTF-8 name lists, give output identical to the
  plain float32 file; float16 files
  and files whose backbone convs have no bias:0 match the reference run on
  the weights as stored (a missing bias reads as 0);
- damaged or inconsistent inputs (a file that is not HDF5, an empty or
  truncated one, an HDF5 file that is not Keras weights, a ResNet-101 with a
  layer missing, a weight of the wrong shape, a head whose class count
  disagrees with the sidecar's NUM_CLASSES or CLASS_NAMES, an unknown or
  malformed sidecar key, values matterport's inference cannot take (crop
  mode, pad64 with IMAGE_MIN_DIM not a multiple of 64, a 2-value
  MEAN_PIXEL, a confidence above 1, 4 anchor scales), a missing file) are refused with a non-zero exit
  and a one-line message naming the file and the cause, never a crash.
"""

import argparse
import json
import pathlib
import re
import struct
import sys
import tempfile

try:
    import numpy as np
    import scipy  # noqa: F401
    import h5py
except ImportError as missing:
    print(f"skipped: {missing}")
    sys.exit(77)

import harness
import matterport_fixtures as fx
import matterport_reference as ref
import test_matterport as tm
from models import synthetic_image

IMAGE = (200, 300, 1)  # (height, width, seed), upscaled to 683x1024


def check_info(checks, detect, name, path, expected):
    try:
        info = harness.detect_json(detect, ["--model", path, "--info"])[0]
    except (RuntimeError, ValueError, IndexError) as error:
        return checks.check(name, False, f"--info failed: {error}")
    wrong = [f"{key}: {info.get(key, '<absent>')!r}, expected {value!r}"
             for key, value in expected.items() if info.get(key) != value]
    return checks.check(name, not wrong, f"{len(expected)} keys compared"
                        + (f"; wrong: {'; '.join(wrong)}" if wrong else ""))


def run_json(checks, detect, name, args):
    try:
        lines = harness.detect_json(detect, args)
    except (RuntimeError, ValueError) as error:
        checks.check(name, False, str(error))
        return None
    return lines[0] if len(lines) == 1 else None


def check_refused(checks, detect, name, args, must_name, patterns=()):
    """mrcnn-detect must exit non-zero (not by a signal) with one line on
    stderr naming must_name (a path) and matching every regex in patterns."""
    result = harness.run_detect(detect, args)
    message = result.stderr.strip()
    crashed = result.returncode < 0 or result.returncode >= 128
    missing = [p for p in patterns if not re.search(p, message)]
    ok = (result.returncode != 0 and not crashed and "\n" not in message and message
          and str(must_name) in message and not missing and not result.stdout.strip())
    return checks.check(name, ok, f"exit {result.returncode}: {message[:300]!r}"
                        + (f"; does not name {str(must_name)!r}" if str(must_name) not in message else "")
                        + (f"; does not match {missing}" if missing else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detect", required=True, help="the mrcnn-detect executable")
    args = parser.parse_args()
    detect = args.detect
    checks = harness.Checks()
    with tempfile.TemporaryDirectory(prefix="matterport-files-") as scratch:
        scratch = pathlib.Path(scratch)
        weights = fx.calibrated_weights("narrow")
        plain = scratch / "narrow.h5"
        fx.write_h5(plain, weights, "narrow")
        narrow101 = fx.calibrated_weights("narrow101")
        r101_path = scratch / "narrow101.h5"
        fx.write_h5(r101_path, narrow101, "narrow101")

        a = fx.ARCHS["narrow"]
        check_info(checks, detect, "info narrow R50", plain, {
            "variant": "matterport", "BACKBONE": "resnet50", "NUM_CLASSES": 5, "blocks": [3, 4, 6, 3],
            "stem_channels": a["stem"], "fpn_channels": a["fpn"], "rpn_channels": a["rpn"],
            "representation_size": a["fc"], "IMAGE_MIN_DIM": 800, "IMAGE_MAX_DIM": 1024,
            "IMAGE_RESIZE_MODE": "square"})
        check_info(checks, detect, "info narrow R101", r101_path, {
            "variant": "matterport", "BACKBONE": "resnet101", "NUM_CLASSES": 81, "blocks": [3, 4, 23, 3],
            "fpn_channels": fx.ARCHS["narrow101"]["fpn"]})

        h, w, seed = IMAGE
        image = synthetic_image(h, w, seed)
        image_path = scratch / "image.png"
        harness.save_png(image, image_path)
        baseline = run_json(checks, detect, "plain float32 file", ["--model", plain, image_path])
        if baseline is not None:
            model = ref.Model(weights)
            out = model.detect(image)
            tm.compare_final(checks, "plain float32 file", out, baseline, image_path, h, w, model.config,
                             None, 5, tm.knife_edges(out, model))

        # lossless variants: the output must be identical
        variants = {
            "model_weights layout, layer_names0/1, chunked gzip": dict(layout="model_weights",
                                                                      split_names=True, chunked=True),
            "float64 datasets": dict(dtype=np.float64),
            "variable-length UTF-8 name lists": dict(vlen_names=True),
        }
        for name, options in variants.items():
            path = scratch / f"variant-{name.split()[0].strip(',')}.h5"
            fx.write_h5(path, weights, "narrow", **options)
            result = run_json(checks, detect, name, ["--model", path, image_path])
            if result is not None and baseline is not None:
                checks.check(name, result == baseline,
                             f"{len(result['detections'])} detections, "
                             f"{'identical to' if result == baseline else 'DIFFERENT from'} the float32 file's")

        # lossy variants: against the reference on the weights as stored
        for name, options in {"float16 datasets": dict(dtype=np.float16),
                              "backbone convs without bias": dict(backbone_bias=False)}.items():
            path = scratch / f"variant-{name.split()[0]}.h5"
            fx.write_h5(path, weights, "narrow", **options)
            stored = ref.load_h5_weights(path)
            if options.get("backbone_bias") is False:
                absent = [k for k in stored if fx._is_backbone_conv(k.split("/")[0]) and k.endswith("/bias")]
                checks.check(f"{name}: file", not absent and "fpn_p2/bias" in stored,
                             f"{len(absent)} backbone biases stored; FPN bias kept")
            result = run_json(checks, detect, name, ["--model", path, image_path])
            if result is not None:
                model = ref.Model(stored)
                out = model.detect(image)
                tm.compare_final(checks, name, out, result, image_path, h, w, model.config, None, 5,
                                 tm.knife_edges(out, model))

        # bad inputs
        text = scratch / "text.h5"
        text.write_text("this is not an HDF5 file\n" * 20)
        check_refused(checks, detect, "not HDF5", ["--model", text, image_path], text)
        empty = scratch / "empty.h5"
        empty.write_bytes(b"")
        check_refused(checks, detect, "empty file", ["--model", empty, image_path], empty)
        truncated = scratch / "truncated.h5"
        truncated.write_bytes(plain.read_bytes()[:plain.stat().st_size // 2])
        check_refused(checks, detect, "truncated file", ["--model", truncated, image_path], truncated)
        other = scratch / "other.h5"
        with h5py.File(other, "w") as f:
            f.create_dataset("data", data=np.arange(10, dtype=np.float32))
            f.attrs["title"] = np.bytes_(b"not weights")
        check_refused(checks, detect, "HDF5, not Keras weights", ["--model", other, image_path], other,
                      [r"(?i)keras|layer_names"])
        missing_file = scratch / "absent.h5"
        check_refused(checks, detect, "missing file", ["--model", missing_file, image_path], missing_file)
        for layer in ("res4v_branch2b", "bn5c_branch2c", "mrcnn_mask_deconv", "rpn_model"):
            path = scratch / f"without-{layer}.h5"
            fx.write_h5(path, narrow101, "narrow101", drop_layers=(layer,))
            names = [layer] if layer != "rpn_model" else []
            check_refused(checks, detect, f"R101 without {layer}", ["--model", path, image_path], path,
                          [re.escape(n) for n in names] or [r"rpn_conv_shared|rpn_class_raw|rpn_bbox_pred|rpn_model"])
        fpn = fx.ARCHS["narrow101"]["fpn"]
        wrong = scratch / "wrong-shape.h5"
        fx.write_h5(wrong, narrow101, "narrow101",
                    replace={"fpn_p3/kernel": np.zeros((3, 3, fpn, fpn // 2), np.float32)})
        check_refused(checks, detect, "misshapen fpn_p3 kernel", ["--model", wrong, image_path], wrong,
                      [r"fpn_p3", rf"3\D+3\D+{fpn}\D+{fpn}\b"])
        nan_kernel = weights["mrcnn_class_logits/kernel"].copy()
        nan_kernel[0, 1] = np.nan
        nan_file = scratch / "nan-weight.h5"
        fx.write_h5(nan_file, weights, "narrow", replace={"mrcnn_class_logits/kernel": nan_kernel})
        check_refused(checks, detect, "NaN in the class logits kernel", ["--model", nan_file, image_path],
                      nan_file, [r"box head class scores weight", r"NaN"])
        # a global heap (where variable-length names live) whose free-space
        # object has size 0: libhdf5 1.10 would walk it without end
        heap_file = scratch / "damaged-heap.h5"
        fx.write_h5(heap_file, weights, "narrow", vlen_names=True)
        data = bytearray(heap_file.read_bytes())
        start = data.find(b"GCOL")
        p, end = start + 16, start + struct.unpack_from("<Q", data, start + 8)[0]
        while p + 16 <= end:
            idx, size = struct.unpack_from("<H", data, p)[0], struct.unpack_from("<Q", data, p + 8)[0]
            if idx == 0:
                struct.pack_into("<Q", data, p + 8, 0)
                break
            p += 16 + (size + 7) // 8 * 8
        assert start >= 0 and p + 16 <= end, "no free-space object in the file's global heap"
        heap_file.write_bytes(bytes(data))
        check_refused(checks, detect, "damaged global heap", ["--model", heap_file, image_path], heap_file,
                      [r"global heap at byte \d+"])
        wrong_bias = scratch / "wrong-bias.h5"
        fx.write_h5(wrong_bias, weights, "narrow", replace={"mrcnn_class_logits/bias": np.zeros(7, np.float32)})
        check_refused(checks, detect, "misshapen class logits bias", ["--model", wrong_bias, image_path],
                      wrong_bias, [r"mrcnn_class_logits", r"\b5\b"])

        def sidecar(name, body):
            path = scratch / name
            path.write_text(body)
            return path
        count = sidecar("count.json", json.dumps({"NUM_CLASSES": 81}))
        check_refused(checks, detect, "NUM_CLASSES 81 for 5 classes", ["--model", plain, "--config", count,
                                                                       image_path], count, [r"\b81\b", r"\b5\b"])
        names = sidecar("names.cfg", "CLASS_NAMES = ['BG', 'a', 'b', 'c']\n")
        check_refused(checks, detect, "4 CLASS_NAMES for 5 classes", ["--model", plain, "--config", names,
                                                                      image_path], names, [r"\b4\b", r"\b5\b"])
        unknown = sidecar("unknown.cfg", "# typo\nDETECTION_MIN_CONFIDANCE = 0.5\n")
        check_refused(checks, detect, "unknown sidecar key", ["--model", plain, "--config", unknown, image_path],
                      unknown, [r"DETECTION_MIN_CONFIDANCE"])
        malformed = sidecar("malformed.cfg", "IMAGE_MIN_DIM 800\n")
        check_refused(checks, detect, "malformed sidecar line", ["--model", plain, "--config", malformed,
                                                                 image_path], malformed)
        for number, (key, body, pattern) in enumerate((
                ("crop mode", 'IMAGE_RESIZE_MODE = "crop"\n', r"IMAGE_RESIZE_MODE"),
                ("pad64 with IMAGE_MIN_DIM 100", 'IMAGE_RESIZE_MODE = "pad64"\nIMAGE_MIN_DIM = 100\n',
                 r"IMAGE_MIN_DIM"),
                ("MEAN_PIXEL of 2 values", "MEAN_PIXEL = [1, 2]\n", r"MEAN_PIXEL"),
                ("DETECTION_MIN_CONFIDENCE 1.5", "DETECTION_MIN_CONFIDENCE = 1.5\n", r"DETECTION_MIN_CONFIDENCE"),
                ("4 anchor scales", "RPN_ANCHOR_SCALES = [32, 64, 128, 256]\n", r"RPN_ANCHOR_SCALES"))):
            path = sidecar(f"value-{number}.cfg", body)
            check_refused(checks, detect, f"sidecar: {key}", ["--model", plain, "--config", path, image_path],
                          path, [pattern])
        bad_json = sidecar("bad.json", '{"IMAGE_MIN_DIM": 800,')
        check_refused(checks, detect, "malformed JSON sidecar", ["--model", plain, "--config", bad_json,
                                                                 image_path], bad_json)
    checks.finish()


if __name__ == "__main__":
    main()
