#!/usr/bin/python3
"""Writes the fuzzers' seed corpora: the smallest valid inputs of each
loader, so that mutations start from files the engine accepts.

  safetensors/  a tiny torchvision Mask R-CNN (stem 1, FPN 2, 2 classes),
                float32 and float16, with and without metadata
  keras_h5/     the same shape in matterport's Keras layout: root layout,
                model_weights layout in float16 with variable-length
                names, chunked gzip
  sidecar/      JSON and KEY = VALUE configurations of both variants
  rle/          two bytes of width and height (0-63), then a COCO RLE string
  detect/       frames of both variants, some with NaN, infinite or huge
                weights patched in (layout in fuzz_detect.c)

usage: make_seeds.py OUTDIR
"""
import json
import os
import pathlib
import struct
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))
sys.path.insert(0, str(HERE.parent.parent / "tools"))


def safetensors_seeds(out):
    import torch
    from safetensors.torch import save_file

    import export_torchvision
    from models import build_narrow

    torch.manual_seed(0)
    model = build_narrow(num_classes=2, stem=1, fpn_channels=2, representation_size=2,
                         mask_channels=(2,), min_size=32, max_size=64).eval()
    tensors = export_torchvision.model_tensors(model)
    metadata = export_torchvision.model_metadata(model, ["__background__", "thing"])
    save_file(tensors, str(out / "tiny.safetensors"), metadata)
    save_file({k: v.half() for k, v in tensors.items()}, str(out / "tiny-f16.safetensors"))


def h5_seeds(out):
    import functools

    import h5py

    import matterport_fixtures as fx

    # compact groups (HDF5 1.8 format) keep the files small
    h5py.File = functools.partial(h5py.File, libver="latest")
    fx.ARCHS["tiny"] = dict(blocks=[1, 1, 1, 1], stem=1, f1=[1, 1, 1, 1], fpn=2, rpn=2, fc=2,
                            mask=2, classes=2)
    rng = np.random.default_rng(0)
    convs, bns = fx.conv_layers("tiny")
    weights = {}
    for layer, shape in convs:
        weights[f"{layer}/kernel"] = rng.standard_normal(shape).astype(np.float32)
        weights[f"{layer}/bias"] = rng.standard_normal(shape[-1]).astype(np.float32)
    for layer, channels in bns:
        for var in fx.BN_VARS:
            value = rng.uniform(0.5, 1.5, channels) if var in ("gamma", "moving_variance") \
                else rng.standard_normal(channels)
            weights[f"{layer}/{var}"] = value.astype(np.float32)
    # without matterport's weightless layers (activations, inputs, losses)
    # the files are a third of the size
    weightless = [name for name, names in fx.model_layers("tiny") if not names]
    fx.write_h5(out / "tiny-root.h5", weights, "tiny", drop_layers=weightless)
    # variable-length names live in a global heap, which libhdf5 1.10 reads
    # without end when damaged unless the loader's check refuses it first
    fx.write_h5(out / "tiny-model-weights.h5", weights, "tiny", layout="model_weights",
                dtype=np.float16, drop_layers=weightless, vlen_names=True)
    fx.write_h5(out / "tiny-chunked.h5", weights, "tiny", chunked=True, split_names=True,
                drop_layers=weightless)


def sidecar_seeds(out):
    (out / "torchvision.json").write_text(json.dumps({
        "min_size": 64, "max_size": 96, "box_score_thresh": 0.3,
        "anchor_sizes": [[32], [64], [128], [256], [512]],
        "aspect_ratios": [[0.5, 1.0, 2.0]] * 5, "image_mean": [0.5, 0.5, 0.5],
        "class_names": ["__background__", "thing"]}))
    (out / "matterport.json").write_text(json.dumps({
        "IMAGE_MIN_DIM": 64, "IMAGE_MAX_DIM": 128, "IMAGE_RESIZE_MODE": "square",
        "RPN_ANCHOR_SCALES": [8, 16, 32, 64, 128], "RPN_ANCHOR_RATIOS": [0.5, 1, 2],
        "MEAN_PIXEL": [123.7, 116.8, 103.9], "NUM_CLASSES": 2, "CLASS_NAMES": ["BG", "thing"]}))
    (out / "matterport.cfg").write_text(
        "# matterport Config attributes\n"
        "IMAGE_MIN_DIM = 64\nIMAGE_MAX_DIM = 128\nIMAGE_RESIZE_MODE = 'pad64'\n"
        "IMAGE_MIN_SCALE = None\nRPN_ANCHOR_RATIOS = (0.5, 1, 2,)\n"
        "BBOX_STD_DEV = [0.1, 0.1, 0.2, 0.2]  # comment\n"
        "CLASS_NAMES = ['BG', \"it's\"]\nDETECTION_MIN_CONFIDENCE = 0.7\n")
    (out / "torchvision.cfg").write_text(
        "min_size = 64\nmax_size = 96\nbox_nms_thresh = 0.5\n"
        "aspect_ratios = ((0.5, 1.0, 2.0),)\nbackbone_bn_eps = 1e-5\nclass_names = ['__background__', 'thing']\n")


def rle_seeds(out):
    # pycocotools' strings for random masks (width, height, counts)
    from pycocotools import mask as coco_mask
    rng = np.random.default_rng(0)
    cases = []
    for width, height, density in ((4, 3, 0.5), (3, 3, 0.9), (16, 12, 0.1), (33, 17, 0.5),
                                   (64, 48, 0.02), (1, 1, 1.0), (63, 63, 0.5)):
        mask = np.asfortranarray(rng.random((height, width)) < density, dtype=np.uint8)
        cases.append((width, height, coco_mask.encode(mask)["counts"].decode()))
    cases.append((64, 48, coco_mask.encode(np.asfortranarray(
        np.pad(np.ones((20, 30), np.uint8), ((10, 18), (20, 14)))))["counts"].decode()))
    for i, (width, height, counts) in enumerate(cases):
        (out / f"case{i}").write_bytes(struct.pack("BB", width, height) + counts.encode())


def detect_seeds(out):
    """fuzz_detect inputs: flags, width, height, patch count, patches
    (array, element, float32 value), pixels."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, 64 * 48 * 3, dtype=np.uint8).tobytes()
    nan, inf, huge = float("nan"), float("inf"), 3e38
    cases = {
        "torchvision": (0, 64, 48, []),
        "matterport": (1, 48, 64, []),
        "all-candidates": (2, 64, 48, []),
        "matterport-all-candidates": (3, 64, 48, []),
        "thin-frame": (2, 95, 3, []),
        "nan-weight": (2, 64, 48, [(0, 5, nan)]),
        "huge-weights": (2, 64, 48, [(200, 3, huge), (201, 0, -huge)]),
        "inf-weights": (3, 64, 48, [(230, 1, inf), (231, 2, -inf), (240, 7, nan)]),
        # arrays by index of mrcnn_model_foreach_weights on the tiny models:
        # 63 the box head's delta bias (4: class 1's dx), 69 and 75 the
        # mask logits bias of torchvision's and matterport's (1: class 1)
        "nan-box-deltas": (2, 64, 48, [(63, 4, nan)]),
        "nan-mask-logits": (2, 64, 48, [(69, 1, nan)]),
        "matterport-nan-box-deltas": (3, 64, 48, [(63, 4, nan)]),
        "matterport-nan-mask-logits": (3, 64, 48, [(75, 1, nan)]),
    }
    for name, (flags, width, height, patches) in cases.items():
        data = struct.pack("BBBB", flags, width - 1, height - 1, len(patches))
        for array, element, value in patches:
            data += struct.pack("<BIf", array, element, value)
        (out / name).write_bytes(data + pixels)


def main():
    out = pathlib.Path(sys.argv[1])
    for name, make in (("safetensors", safetensors_seeds), ("keras_h5", h5_seeds),
                       ("sidecar", sidecar_seeds), ("rle", rle_seeds),
                       ("detect", detect_seeds)):
        os.makedirs(out / name, exist_ok=True)
        make(out / name)


if __name__ == "__main__":
    main()
