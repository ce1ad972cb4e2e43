#!/usr/bin/python3
"""Trains the shapes demo model: a small Mask R-CNN that finds squares,
circles and triangles in synthetic frames, exported for the engine.

    /usr/bin/python3 tools/train_shapes.py OUT.safetensors [--iterations N]

Everything is seeded: the same command on the same torch version gives the
same weights.  As a module it is also the frame generator used by
tools/evaluate_shapes.py and the tests (shapes_frame()).
"""

import argparse
import math
import pathlib
import sys
import time

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNN, MaskRCNNHeads, MaskRCNNPredictor

TOP = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TOP / "tools"))
sys.path.insert(0, str(TOP / "tests" / "python"))
import export_torchvision  # noqa: E402
import models  # noqa: E402

CLASS_NAMES = ["__background__", "square", "circle", "triangle"]
FRAME_WIDTH, FRAME_HEIGHT = 320, 240
MIN_SIZE, MAX_SIZE = 256, 512
# Anchors one octave below torchvision's: the input is about a third of
# the usual 800 pixels, and the shapes are 16 to 100 pixels across.
ANCHOR_SIZES = ((16,), (32,), (64,), (128,), (256,))
SUPERSAMPLE = 4  # edges are drawn antialiased, as cairo draws the demo clip
MIN_CONTRAST = 70.0  # RGB distance between a shape and the background under it


def shape_outline(kind, cx, cy, size):
    """The shape as an ellipse box or polygon in frame coordinates; size is
    the half-extent.  Triangles point up, as in the demo clip."""
    if kind == "circle":
        return ("ellipse", [cx - size, cy - size, cx + size, cy + size])
    if kind == "square":
        return ("polygon", [(cx - size, cy - size), (cx + size, cy - size),
                            (cx + size, cy + size), (cx - size, cy + size)])
    half = size / math.sin(math.radians(60))
    return ("polygon", [(cx, cy - size), (cx + half, cy + size), (cx - half, cy + size)])


def coverage(kind, cx, cy, size, width, height):
    """Fraction of each pixel the shape covers, float32 [H, W]."""
    s = SUPERSAMPLE
    image = Image.new("L", (width * s, height * s), 0)
    draw = ImageDraw.Draw(image)
    how, points = shape_outline(kind, cx * s, cy * s, size * s)
    if how == "ellipse":
        draw.ellipse(points, fill=255)
    else:
        draw.polygon(points, fill=255)
    big = np.asarray(image, dtype=np.float32) / 255.0
    return big.reshape(height, s, width, s).mean(axis=(1, 3))


def background(rng, width, height):
    """A solid colour, a linear gradient or soft blobs, float32 [H, W, 3]."""
    kind = rng.randint(3)
    a, b = rng.uniform(0, 255, size=(2, 3))
    if kind == 0:
        return np.broadcast_to(a, (height, width, 3)).astype(np.float32).copy()
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == 1:
        angle = rng.uniform(0, 2 * math.pi)
        t = (xs * math.cos(angle) + ys * math.sin(angle))
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    else:
        coarse = rng.uniform(0, 1, size=(4, 5)).astype(np.float32)
        t = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))
        t = np.clip(t, 0, 1)
    return (a + t[..., None] * (b - a)).astype(np.float32)


def shapes_frame(seed, width=FRAME_WIDTH, height=FRAME_HEIGHT, max_shapes=6):
    """One synthetic frame and its objects.

    Returns (image uint8 [H, W, 3], objects): each object a dict with
    "label" (index into CLASS_NAMES), "mask" (bool [H, W], the visible part)
    and "box" (x1, y1, x2, y2 of the visible part, pixel edges).
    Shapes may overlap, but never so much that the visible part of the
    lower one becomes unrecognisable.
    """
    rng = np.random.RandomState(seed)
    image = background(rng, width, height)
    short = min(width, height)
    placed = []  # (kind, box, coverage)
    for _ in range(rng.randint(1, max_shapes + 1)):
        for _attempt in range(20):
            kind = CLASS_NAMES[1 + rng.randint(3)]
            size = rng.uniform(0.04, 0.21) * short
            cx = rng.uniform(size, width - size)
            cy = rng.uniform(size, height - size)
            box = (cx - size * 1.2, cy - size, cx + size * 1.2, cy + size)
            if all(_overlap(box, other) < 0.3 for _, other, _ in placed):
                break
        else:
            continue
        alpha = coverage(kind, cx, cy, size, width, height)
        under = image[alpha > 0.5].mean(axis=0)
        for _attempt in range(20):
            colour = rng.uniform(0, 255, size=3)
            if np.linalg.norm(colour - under) >= MIN_CONTRAST:
                break
        image = image * (1 - alpha[..., None]) + colour * alpha[..., None]
        placed.append((kind, box, alpha))
    noise = rng.uniform(0, 12)
    image = image + rng.normal(0, noise, size=image.shape)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    objects = []
    covered = np.zeros((height, width), dtype=bool)
    for kind, _, alpha in reversed(placed):
        mask = (alpha >= 0.5) & ~covered
        covered |= alpha >= 0.5
        ys, xs = np.nonzero(mask)
        if len(xs) < 20:
            continue
        objects.append({"label": CLASS_NAMES.index(kind), "mask": mask,
                        "box": (float(xs.min()), float(ys.min()),
                                float(xs.max() + 1), float(ys.max() + 1))})
    objects.reverse()
    return image, objects


def _overlap(a, b):
    """Intersection over the smaller box's area."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller


def build_model():
    """models.build_narrow's network with trainable batch norms (they
    export as the frozen ones the engine applies) and inference settings
    for a few objects per frame."""
    stem = 16
    body = models.NarrowResNet(stem, [1, 1, 1, 1], norm_layer=nn.BatchNorm2d)
    backbone = BackboneWithFPN(
        body, return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        in_channels_list=[4 * stem, 8 * stem, 16 * stem, 32 * stem], out_channels=64)
    num_classes = len(CLASS_NAMES)
    return MaskRCNN(
        backbone, min_size=MIN_SIZE, max_size=MAX_SIZE,
        rpn_anchor_generator=AnchorGenerator(ANCHOR_SIZES, ((0.5, 1.0, 2.0),) * 5),
        rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=500, rpn_post_nms_top_n_test=100,
        box_batch_size_per_image=128, box_detections_per_img=20,
        box_score_thresh=0.5,
        box_head=TwoMLPHead(64 * 7 * 7, 256),
        box_predictor=FastRCNNPredictor(256, num_classes),
        mask_head=MaskRCNNHeads(64, (64, 64), 1),
        mask_predictor=MaskRCNNPredictor(64, 64, num_classes))


def training_batch(iteration, batch_size, seed):
    images, targets = [], []
    for i in range(batch_size):
        frame_seed = seed * 10_000_000 + iteration * batch_size + i
        image, objects = shapes_frame(frame_seed)
        if not objects:  # every frame has at least one shape; guard anyway
            continue
        images.append(models.to_tensor(image))
        targets.append({
            "boxes": torch.tensor([o["box"] for o in objects], dtype=torch.float32),
            "labels": torch.tensor([o["label"] for o in objects], dtype=torch.int64),
            "masks": torch.from_numpy(np.stack([o["mask"] for o in objects])).to(torch.uint8),
        })
    return images, targets


def learning_rate(iteration, iterations, peak, warmup):
    if iteration < warmup:
        return peak * (iteration + 1) / warmup
    progress = (iteration - warmup) / max(1, iterations - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", metavar="OUT.safetensors")
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=1, help="weights and data seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fp16", action="store_true", help="store the weights as float16")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = build_model()
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 1e-4},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    warmup = min(100, args.iterations // 10)
    start = time.monotonic()
    smoothed = None
    for iteration in range(args.iterations):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(iteration, args.iterations, args.lr, warmup)
        images, targets = training_batch(iteration, args.batch_size, args.seed)
        losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        smoothed = loss.item() if smoothed is None else 0.95 * smoothed + 0.05 * loss.item()
        if iteration % 50 == 0 or iteration == args.iterations - 1:
            parts = " ".join(f"{k.replace('loss_', '')}={v.item():.3f}" for k, v in losses.items())
            elapsed = time.monotonic() - start
            print(f"iter {iteration} loss {smoothed:.3f} ({parts}) "
                  f"{elapsed / (iteration + 1):.2f} s/iter, {elapsed / 60:.1f} min", flush=True)

    model.eval()
    if args.fp16:
        model.half()
    export_torchvision.export(model, args.output, CLASS_NAMES)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
