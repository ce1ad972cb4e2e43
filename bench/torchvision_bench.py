#!/usr/bin/python3
"""Times torchvision's Mask R-CNN, run eagerly by torch, the way mrcnn-bench
times the engine, and prints one JSON line with mrcnn-bench's keys.

  torchvision_bench.py [--shape torchvision-r50|matterport-r101] [--size WxH]
                       [--batch N] [--iterations N] [--warmup N]
                       [--device cuda|cpu] [--precision fp32|fp16]
                       [--worst-case] [--seed N] [--export PATH]

Models, random weights from a fixed seed (the arithmetic cost of a network
does not depend on its weights):
- torchvision-r50: maskrcnn_resnet50_fpn (weights=None,
  weights_backbone=None), 91 classes, resize to 800 / 1333.
- matterport-r101: the closest eager equivalent of matterport's
  mask_rcnn_coco.h5, since matterport itself needs TensorFlow: a
  torchvision MaskRCNN on resnet_fpn_backbone('resnet101'), 81 classes, a
  512-channel RPN convolution as matterport's, min_size = max_size = 1024
  and padding to a 1024x1024 square, so the network always sees 1024x1024
  as in matterport (which scales frames other than 1024x1024 slightly
  differently), matterport's inference thresholds (score 0.7, class NMS
  0.3).  1000 proposals and at most 100 detections, as in matterport's
  COCO configuration.
The last batch norm of each residual branch is scaled by 0.3, as in trained
ResNets: a random ResNet-101 otherwise overflows fp16 in its third stage.

Each call starts from uint8 RGB frames in host memory, as the engine's do:
upload, conversion to float, the model's own resize and normalisation,
inference, and its paste of the masks at frame size.  The timing stops when
the results are ready on the device (they are not copied back, which
favours torch a little).  On the GPU, torch.cuda.synchronize() brackets
every call; fp32 runs with TF32 off (so it is true fp32, like the engine's),
fp16 under torch.autocast; cuDNN picks its fastest algorithms
(cudnn.benchmark).  --worst-case sets box_score_thresh 0 and
detections_per_img 100, so every frame carries 100 detections through the
mask head and the paste.

--export PATH also saves the weights being timed (before timing) with
tools/export_torchvision.py, so that mrcnn-bench --model PATH runs the very
same network (torchvision-r50 only: the engine runs matterport-r101 from
its own --shape, which has the same arithmetic cost).
"""

import argparse
import contextlib
import json
import pathlib
import sys
import time

import numpy as np
import torch
from torch import nn
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.mask_rcnn import MaskRCNN
from torchvision.models.resnet import Bottleneck

REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_SIZES = {"torchvision-r50": (1216, 800), "matterport-r101": (1024, 1024)}
RESIDUAL_GAIN = 0.3


class WideRPNHead(nn.Module):
    """matterport's RPN head: a 3x3 convolution to 512 channels shared by
    the levels, then 1x1 objectness and box-delta convolutions."""

    def __init__(self, in_channels, num_anchors, channels=512):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(channels, 4 * num_anchors, 1)

    def forward(self, features):
        hidden = [torch.relu(self.conv(level)) for level in features]
        return [self.cls_logits(h) for h in hidden], [self.bbox_pred(h) for h in hidden]


def build_model(shape, seed):
    torch.manual_seed(seed)
    if shape == "torchvision-r50":
        model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    else:
        backbone = resnet_fpn_backbone(backbone_name="resnet101", weights=None)
        model = MaskRCNN(backbone, num_classes=81, min_size=1024, max_size=1024,
                         rpn_head=WideRPNHead(backbone.out_channels, 3),
                         box_score_thresh=0.7, box_nms_thresh=0.3)
        # a resized frame fits in 1024x1024, so this pads it to that square
        model.transform.size_divisible = 1024
    with torch.no_grad():
        for block in model.backbone.body.modules():
            if isinstance(block, Bottleneck):
                block.bn3.weight.mul_(RESIDUAL_GAIN)
    return model.eval()


def make_frame(width, height, seed=7):
    """Gradients, a texture and blocks of colour, like mrcnn-bench's frame."""
    rng = np.random.RandomState(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    frame = np.stack([255 * xs // width, 255 * ys // height, (xs ^ ys) & 0xFF], axis=-1)
    for _ in range(12):
        w = rng.randint(width // 16, width // 3)
        h = rng.randint(height // 16, height // 3)
        x0, y0 = rng.randint(0, width - w), rng.randint(0, height - h)
        frame[y0:y0 + h, x0:x0 + w] = rng.randint(0, 256, size=3)
    return np.ascontiguousarray(frame.astype(np.uint8))


def percentile(sorted_values, p):
    """Nearest rank, as mrcnn-bench computes it."""
    rank = int(p / 100.0 * len(sorted_values) + 0.999999)
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def parse_size(text):
    try:
        width, height = (int(part) for part in text.split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError("must be WIDTHxHEIGHT") from None
    if not (16 <= width <= 8192 and 16 <= height <= 8192):
        raise argparse.ArgumentTypeError("each side must be 16 to 8192")
    return width, height


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Models and method: see the head of this file.")
    parser.add_argument("--shape", choices=sorted(DEFAULT_SIZES), default="torchvision-r50")
    parser.add_argument("--size", type=parse_size, metavar="WxH",
                        help="frame size (default: 1216x800 for torchvision-r50, "
                             "1024x1024 for matterport-r101, as mrcnn-bench)")
    parser.add_argument("--batch", type=int, default=1, metavar="N")
    parser.add_argument("--iterations", type=int, default=20, metavar="N", help="timed calls")
    parser.add_argument("--warmup", type=int, default=3, metavar="N", help="untimed calls first")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--precision", choices=["fp32", "fp16"], default="fp32")
    parser.add_argument("--worst-case", action="store_true",
                        help="score threshold 0 and 100 detections per frame")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the weights")
    parser.add_argument("--export", metavar="PATH",
                        help="also save the timed weights as .safetensors (torchvision-r50)")
    args = parser.parse_args()
    if args.batch < 1 or args.iterations < 1 or args.warmup < 0:
        parser.error("--batch and --iterations must be at least 1, --warmup at least 0")
    if args.export and args.shape != "torchvision-r50":
        parser.error("--export needs --shape torchvision-r50; the engine runs "
                     "matterport-r101 as its own --shape matterport-r101")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("torchvision_bench: CUDA is not available to torch here; use --device cpu")
    if args.device == "cpu" and args.precision == "fp16":
        sys.exit("torchvision_bench: fp16 needs --device cuda (torch's CPU autocast is bfloat16)")

    model = build_model(args.shape, args.seed)
    if args.export:
        sys.path.insert(0, str(REPO / "tools"))
        from export_torchvision import export
        try:
            export(model, args.export)
        except ValueError as error:
            sys.exit(f"torchvision_bench: {args.export}: {error}")
    if args.worst_case:
        model.roi_heads.score_thresh = 0.0
        model.roi_heads.detections_per_img = 100

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if gpu:
        if args.precision == "fp32":
            # true fp32, as the engine's fp32
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    model.to(device)
    width, height = args.size or DEFAULT_SIZES[args.shape]
    frame = torch.from_numpy(make_frame(width, height))

    def sync():
        if gpu:
            torch.cuda.synchronize()

    def call():
        with torch.inference_mode(), (torch.autocast("cuda", dtype=torch.float16)
                                      if args.precision == "fp16" else contextlib.nullcontext()):
            images = [frame.to(device).permute(2, 0, 1).float().div_(255) for _ in range(args.batch)]
            outputs = model(images)
        return sum(len(found["scores"]) for found in outputs)

    for _ in range(args.warmup):
        call()
    latency, detections = [], 0
    sync()
    started = time.perf_counter()
    for _ in range(args.iterations):
        t0 = time.perf_counter()
        detections += call()
        sync()
        latency.append((time.perf_counter() - t0) * 1000)
    seconds = time.perf_counter() - started

    latency.sort()
    memory = torch.cuda.max_memory_allocated(device) / 1048576 if gpu else 0.0
    print(json.dumps({
        "model": args.shape,
        "backend": f"torch-{device.type}",
        "precision": args.precision,
        "width": width,
        "height": height,
        "batch": args.batch,
        "iterations": args.iterations,
        "worst_case": args.worst_case,
        "latency_ms": {f"p{p}": round(percentile(latency, p), 3) for p in (50, 90, 99)},
        "frames_per_second": round(args.batch * args.iterations / seconds, 3),
        "detections_per_frame": round(detections / (args.batch * args.iterations), 3),
        "device_memory_mib": round(memory, 3),
    }))


if __name__ == "__main__":
    main()
