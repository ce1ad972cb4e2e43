#!/usr/bin/python3
"""Saves a torchvision Mask R-CNN model as a .safetensors file for mrcnn-detect.

The tensors are the model's state_dict (without BatchNorm's
num_batches_tracked counters).  The header's __metadata__ records the
inference constants read from the model object, every value a JSON-encoded
string, so that the engine reproduces this particular model rather than
torchvision's defaults.

As a module:  export(model, path, class_names=None)
As a tool:    export_torchvision.py --arch narrow OUT.safetensors
              export_torchvision.py --arch maskrcnn_resnet50_fpn --from-pth FILE.pth OUT.safetensors
              export_torchvision.py --arch maskrcnn_resnet50_fpn_v2 --from-pth FILE.pth OUT.safetensors
Architectures: maskrcnn_resnet50_fpn (v1: FrozenBatchNorm2d in the ResNet),
maskrcnn_resnet50_fpn_v2 (v2: BatchNorm2d in the ResNet, the FPN and the box
and mask heads, two RPN convs, a four-conv-one-FC box head), and narrow and
narrow_v2, small models of the same two shapes for tests.  The metadata
gives the backbone's batch-norm eps (ResNet and FPN) as backbone_bn_eps and,
for v2 models, the heads' as head_bn_eps.
Without --from-pth the weights are random, calibrated to give confident
detections (see tests/python/models.py); they are meant for testing and
benchmarking, not for real detection.
"""

import argparse
import json
import pathlib
import sys

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

try:
    from safetensors.torch import save_file
except ImportError:  # machines with torch alone (tools/gpu-check.sh run)
    SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}

    def save_file(tensors, filename, metadata=None):
        """safetensors' save_file, for the float tensors of a state_dict: a
        little-endian u64 header size, the JSON header padded with spaces to
        a multiple of 8 bytes, then the tensors' bytes."""
        header, data, offset = {"__metadata__": metadata or {}}, [], 0
        for name, tensor in tensors.items():
            raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            header[name] = {"dtype": SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape),
                            "data_offsets": [offset, offset + len(raw)]}
            data.append(raw)
            offset += len(raw)
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        with open(filename, "wb") as out:
            out.write(len(text).to_bytes(8, "little") + text)
            out.writelines(data)

# The engine implements torchvision's fixed box coding and ROI pooling
# choices; a model that departs from them cannot be described by the file.
BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
ROI_FEATURE_MAPS = ["0", "1", "2", "3"]


BATCH_NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)


def _shared_bn_eps(module, what):
    """The eps shared by all the batch norms in module, or None if it has none."""
    values = {child.eps for child in module.modules() if isinstance(child, BATCH_NORMS)}
    if len(values) > 1:
        raise ValueError(f"{what} batch norms must share one eps, found {sorted(values)}")
    return values.pop() if values else None


def backbone_bn_eps(model):
    """The eps shared by all the backbone's batch norms (the ResNet's, and
    the FPN's in v2 models)."""
    eps = _shared_bn_eps(model.backbone, "backbone")
    if eps is None:
        raise ValueError("the backbone has no batch norms")
    return eps


def head_bn_eps(model):
    """The eps shared by all the batch norms of the box and mask heads (v2
    models), or None where they have none (v1)."""
    return _shared_bn_eps(model.roi_heads, "head")


def _square_size(pool):
    height, width = pool.output_size
    if height != width:
        raise ValueError(f"ROI pooling output must be square, got {pool.output_size}")
    return height


def model_metadata(model, class_names=None):
    """The __metadata__ dictionary (str -> JSON string) describing model."""
    transform, rpn, heads = model.transform, model.rpn, model.roi_heads
    if transform.fixed_size is not None:
        raise ValueError("transform.fixed_size is not supported")
    if tuple(heads.box_coder.weights) != BOX_CODER_WEIGHTS:
        raise ValueError(f"box coder weights must be {BOX_CODER_WEIGHTS}")
    for pool in (heads.box_roi_pool, heads.mask_roi_pool):
        if list(pool.featmap_names) != ROI_FEATURE_MAPS:
            raise ValueError(f"ROI pooling must read feature maps {ROI_FEATURE_MAPS}")
    if heads.box_roi_pool.sampling_ratio != heads.mask_roi_pool.sampling_ratio:
        raise ValueError("box and mask ROI pooling must use the same sampling ratio")
    num_classes = heads.box_predictor.cls_score.out_features
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")

    anchors = rpn.anchor_generator
    metadata = {
        "min_size": transform.min_size[-1],
        "max_size": transform.max_size,
        "image_mean": list(transform.image_mean),
        "image_std": list(transform.image_std),
        "size_divisible": transform.size_divisible,
        "anchor_sizes": [list(sizes) for sizes in anchors.sizes],
        "aspect_ratios": [list(ratios) for ratios in anchors.aspect_ratios],
        "rpn_pre_nms_top_n_test": rpn._pre_nms_top_n["testing"],
        "rpn_post_nms_top_n_test": rpn._post_nms_top_n["testing"],
        "rpn_nms_thresh": rpn.nms_thresh,
        "rpn_score_thresh": rpn.score_thresh,
        "box_score_thresh": heads.score_thresh,
        "box_nms_thresh": heads.nms_thresh,
        "box_detections_per_img": heads.detections_per_img,
        "backbone_bn_eps": backbone_bn_eps(model),
        "box_roi_output_size": _square_size(heads.box_roi_pool),
        "mask_roi_output_size": _square_size(heads.mask_roi_pool),
        "sampling_ratio": heads.box_roi_pool.sampling_ratio,
    }
    head_eps = head_bn_eps(model)
    if head_eps is not None:
        metadata["head_bn_eps"] = head_eps
    if class_names is not None:
        metadata["class_names"] = list(class_names)
    return {key: json.dumps(value) for key, value in metadata.items()}


def model_tensors(model):
    """The state_dict as contiguous tensors, less the BatchNorm counters
    (training bookkeeping the engine has no use for)."""
    return {name: tensor.detach().contiguous()
            for name, tensor in model.state_dict().items()
            if not name.endswith("num_batches_tracked")}


def export(model, path, class_names=None):
    save_file(model_tensors(model), str(path), model_metadata(model, class_names))


def _load_pth(path):
    state = torch.load(path, map_location="cpu")
    if not isinstance(state, dict) or "roi_heads.box_predictor.cls_score.weight" not in state:
        raise SystemExit(f"{path}: not a Mask R-CNN state_dict")
    return state


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", required=True,
                        choices=["maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2", "narrow", "narrow_v2"],
                        help="maskrcnn_resnet50_fpn or maskrcnn_resnet50_fpn_v2, or a small "
                             "ResNet-FPN of the same shape for tests (narrow, narrow_v2)")
    parser.add_argument("--from-pth", metavar="FILE",
                        help="load this state_dict (.pth) instead of making random weights")
    parser.add_argument("--random-seed", type=int, default=0, metavar="N",
                        help="seed of the random weights (default 0)")
    parser.add_argument("--min-size", type=int, default=800, metavar="N")
    parser.add_argument("--max-size", type=int, default=1333, metavar="N")
    parser.add_argument("--bn-eps", type=float, metavar="X",
                        help="backbone batch-norm eps (default: 0.0 for maskrcnn_resnet50_fpn, "
                             "as its COCO weights use; 1e-5, BatchNorm2d's default, for the others)")
    parser.add_argument("--classes", metavar="FILE",
                        help="class names, one per line, background first")
    parser.add_argument("output", metavar="OUT.safetensors")
    args = parser.parse_args()

    # The architectures and the weight calibration live with the tests.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "python"))
    import models

    class_names = None
    if args.classes:
        class_names = [line.strip() for line in open(args.classes, encoding="utf-8") if line.strip()]
        if len(class_names) < 2:
            raise SystemExit(f"{args.classes}: needs the background and at least one class")
    options = {"min_size": args.min_size, "max_size": args.max_size}
    if args.bn_eps is not None:
        options["bn_eps"] = args.bn_eps

    if args.from_pth:
        state = _load_pth(args.from_pth)
        options["num_classes"] = state["roi_heads.box_predictor.cls_score.weight"].shape[0]
        model = models.BUILDERS[args.arch](**options)
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            message = str(error)
            if len(message) > 600:
                message = message[:600] + " ..."
            raise SystemExit(f"{args.from_pth}: not a {args.arch} state_dict: {message}")
        model.eval()
    else:
        if class_names is None and args.arch in ("narrow", "narrow_v2"):
            class_names = models.NARROW_CLASS_NAMES
        if class_names is not None:
            options["num_classes"] = len(class_names)
        model = models.calibrated_model(args.arch, seed=args.random_seed, **options)
    try:
        export(model, args.output, class_names)
    except ValueError as error:
        raise SystemExit(f"{args.output}: {error}")


if __name__ == "__main__":
    main()
