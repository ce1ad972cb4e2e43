"""matterport Mask R-CNN (Keras, mask_rcnn_coco.h5) inference in NumPy/SciPy.

Written from MODEL_SPEC.md Part A, independently of the C engine, as the
reference its matterport path is compared with.  Section numbers (A.2, ...)
refer to that spec.

Arithmetic follows the original where it matters for discontinuous steps:
- image scale, resized size and window in float64 Python arithmetic with
  round() (half to even), as utils.resize_image does;
- the resize kernel is scipy.ndimage.zoom(order=1, mode='grid-constant',
  grid_mode=True), which is what skimage.transform.resize (>= 0.19) calls,
  followed by skimage's clip rule and, for the image, the cast back to uint8
  (truncation); resize() documents both;
- anchors in float64, normalised, then cast to float32;
- the network and every TF-graph step (box decoding, clipping, NMS IoU,
  level assignment, crop_and_resize coordinates, softmax, thresholds) in
  float32, as Keras/TensorFlow compute them;
- un-molding in NumPy's promotion rules (float32 boxes, float64 products,
  np.around half to even).

Batch norm is applied as batch norm (eps 1e-3), not folded into the convs.

Model(...).detect(image) returns a dict with every checkpoint:
  image_resized (uint8 HWC, before padding), resized_float (float64 HWC,
  the resize output before truncation), molded (float32 HWC, minus mean,
  padded), window, scale, anchors [A,4], backbone [C2..C5] and fpn
  [P2..P6] (each [h,w,C]), rpn_class [A,2] (softmax), rpn_probs [A]
  (foreground), rpn_deltas [A,4] (raw), rpn_rois [POST_NMS,4] (zero rows
  kept), num_proposals, pooled [POST_NMS,7,7,C], mrcnn_class [R,K],
  mrcnn_bbox [R,K,4], detections [n,6]
  (y1,x1,y2,x2,class_id,score; the n real rows), mask_probs [n,28,28]
  (class-selected), detection_rois (the rpn_rois row of each detection),
  mask_pooled [n,14,14,C], and the final rois [N,4] (int, y1,x1,y2,x2
  exclusive, with rois_unrounded), class_ids, scores, masks (bool
  [N,H0,W0]), mask_contours, kept_rows.
"""

import math

import numpy as np
from scipy import ndimage

# Part E: matterport's class names, index = model class id.
COCO_CLASS_NAMES = [
    "BG", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]

# A.1: the configuration of the COCO weights (base Config + CocoConfig +
# the demo's InferenceConfig).
DEFAULT_CONFIG = {
    "IMAGE_MIN_DIM": 800,
    "IMAGE_MAX_DIM": 1024,
    "IMAGE_RESIZE_MODE": "square",
    "IMAGE_MIN_SCALE": 0,
    "MEAN_PIXEL": [123.7, 116.8, 103.9],
    "RPN_ANCHOR_SCALES": [32, 64, 128, 256, 512],
    "RPN_ANCHOR_RATIOS": [0.5, 1, 2],
    "RPN_ANCHOR_STRIDE": 1,
    "BACKBONE_STRIDES": [4, 8, 16, 32, 64],
    "RPN_BBOX_STD_DEV": [0.1, 0.1, 0.2, 0.2],
    "BBOX_STD_DEV": [0.1, 0.1, 0.2, 0.2],
    "PRE_NMS_LIMIT": 6000,
    "RPN_NMS_THRESHOLD": 0.7,
    "POST_NMS_ROIS_INFERENCE": 1000,
    "DETECTION_MIN_CONFIDENCE": 0.7,
    "DETECTION_NMS_THRESHOLD": 0.3,
    "DETECTION_MAX_INSTANCES": 100,
    "NUM_CLASSES": 81,
}

BN_EPS = 1e-3
POOL_SIZE = 7
MASK_POOL_SIZE = 14
F32 = np.float32


# ---------------------------------------------------------------- A.2 input

def compute_scale(height, width, config):
    """utils.resize_image's scale (A.2 steps 1-3), in float64 Python
    arithmetic; 1 for mode 'none'."""
    mode = config["IMAGE_RESIZE_MODE"]
    if mode == "none":
        return 1
    scale = 1
    min_dim, max_dim = config["IMAGE_MIN_DIM"], config["IMAGE_MAX_DIM"]
    if min_dim:
        scale = max(1, min_dim / min(height, width))
    if config["IMAGE_MIN_SCALE"] and scale < config["IMAGE_MIN_SCALE"]:
        scale = config["IMAGE_MIN_SCALE"]
    if max_dim and mode == "square":
        longest = max(height, width)
        if round(longest * scale) > max_dim:  # round(): half to even
            scale = max_dim / longest
    return scale


def resize(array, out_height, out_width):
    """skimage.transform.resize(array, (out_height, out_width), order=1,
    mode='constant', cval=0, clip=True, anti_aliasing=False) on a float
    array (HxW or HxWxC; float32 stays float32, as skimage's img_as_float
    leaves it).

    Kernel: scipy.ndimage.zoom(order=1, mode='grid-constant', cval=0,
    grid_mode=True), exactly what skimage 0.19 calls: output pixel d reads
    source coordinate (d + 0.5) * in/out - 0.5, bilinear, neighbours
    outside the array read as 0 (so upscaling darkens the outer rows and
    columns), no anti-aliasing; channels are independent.

    Clip rule (skimage's _clip_warp_output): lo, hi = min, max of the input
    over all channels; if cval 0 lies outside [lo, hi] and inside
    [min(out), max(out)], widen [lo, hi] to include 0; clip the output to
    [lo, hi]."""
    array = np.asarray(array)
    factors = [out_height / array.shape[0], out_width / array.shape[1]] + [1] * (array.ndim - 2)
    out = ndimage.zoom(array, factors, order=1, mode="grid-constant", cval=0.0, grid_mode=True)
    assert out.shape[:2] == (out_height, out_width), (out.shape, out_height, out_width)
    lo, hi = array.min(), array.max()
    if not lo <= 0 <= hi and out.min() <= 0 <= out.max():
        lo, hi = min(lo, 0), max(hi, 0)
    np.clip(out, lo, hi, out=out)
    return out


def mold_image(image, config):
    """A.2: uint8 RGB HxWx3 -> (molded float32 HxWx3, window, scale,
    resized uint8 image, resize output before truncation or None)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError("expected a uint8 HxWx3 RGB image")
    height, width = image.shape[:2]
    mode = config["IMAGE_RESIZE_MODE"]
    scale = compute_scale(height, width, config)
    resized_float = None
    if scale != 1:
        new_h, new_w = round(height * scale), round(width * scale)
        resized_float = resize(image.astype(np.float64), new_h, new_w)
        image = resized_float.astype(np.uint8)  # truncation toward zero
    h, w = image.shape[:2]
    if mode == "square":
        size = config["IMAGE_MAX_DIM"]
        top, left = (size - h) // 2, (size - w) // 2
        padded_h, padded_w = size, size
    elif mode == "pad64":
        if config["IMAGE_MIN_DIM"] % 64:
            raise ValueError("pad64 needs IMAGE_MIN_DIM to be a multiple of 64")

        def pad(n):
            if n % 64 == 0:
                return 0, n
            total = n - n % 64 + 64
            return (total - n) // 2, total
        top, padded_h = pad(h)
        left, padded_w = pad(w)
    elif mode == "none":
        top, left, padded_h, padded_w = 0, 0, h, w
    else:
        raise ValueError(f"unsupported IMAGE_RESIZE_MODE {mode!r}")
    canvas = np.zeros((padded_h, padded_w, 3), np.uint8)
    canvas[top:top + h, left:left + w] = image
    window = (top, left, top + h, left + w)
    # NumPy subtracts in float64; Keras then feeds float32.
    molded = (canvas.astype(np.float64) - np.asarray(config["MEAN_PIXEL"], np.float64)).astype(F32)
    return molded, window, scale, image, resized_float


# -------------------------------------------------------------- A.5 anchors

def backbone_shapes(height, width, strides):
    return [(int(math.ceil(height / s)), int(math.ceil(width / s))) for s in strides]


def pixel_anchors(height, width, config):
    """A.5: float64 pixel anchors (y1, x1, y2, x2), level-major, then y, x,
    ratio fastest.  ratio = width/height; no half-stride offset."""
    levels = []
    ratios = np.asarray(config["RPN_ANCHOR_RATIOS"], np.float64)
    stride_a = config["RPN_ANCHOR_STRIDE"]
    for scale, stride, (fh, fw) in zip(config["RPN_ANCHOR_SCALES"], config["BACKBONE_STRIDES"],
                                       backbone_shapes(height, width, config["BACKBONE_STRIDES"])):
        heights = scale / np.sqrt(ratios)
        widths = scale * np.sqrt(ratios)
        cy = np.arange(0, fh, stride_a, dtype=np.float64) * stride
        cx = np.arange(0, fw, stride_a, dtype=np.float64) * stride
        cy = np.broadcast_to(cy[:, None, None], (len(cy), len(cx), len(ratios)))
        cx = np.broadcast_to(cx[None, :, None], cy.shape)
        hh = np.broadcast_to(heights, cy.shape)
        ww = np.broadcast_to(widths, cy.shape)
        boxes = np.stack([cy - 0.5 * hh, cx - 0.5 * ww, cy + 0.5 * hh, cx + 0.5 * ww], axis=-1)
        levels.append(boxes.reshape(-1, 4))
    return np.concatenate(levels)


def norm_boxes(boxes, height, width):
    """utils.norm_boxes: (y1/(H-1), x1/(W-1), (y2-1)/(H-1), (x2-1)/(W-1))
    in float64, cast to float32."""
    scale = np.array([height - 1, width - 1, height - 1, width - 1], np.float64)
    shift = np.array([0, 0, 1, 1], np.float64)
    return ((np.asarray(boxes, np.float64) - shift) / scale).astype(F32)


def anchors(height, width, config):
    return norm_boxes(pixel_anchors(height, width, config), height, width)


# ------------------------------------------------------- box maths (A.6)

def normalised_window(window, height, width):
    """The molded image's window (y1, x1, y2, x2 pixels) in normalised
    coordinates, as the DetectionLayer clips to it (A.8)."""
    wy1, wx1, wy2, wx2 = window
    hm1, wm1 = F32(height) - F32(1), F32(width) - F32(1)
    return ((F32(wy1) - F32(0)) / hm1, (F32(wx1) - F32(0)) / wm1,
            (F32(wy2) - F32(1)) / hm1, (F32(wx2) - F32(1)) / wm1)


def apply_box_deltas(boxes, deltas):
    """A.6 step 3, float32, no clamp; y2 = y1 + h."""
    boxes = boxes.astype(F32)
    deltas = deltas.astype(F32)
    h = boxes[:, 2] - boxes[:, 0]
    w = boxes[:, 3] - boxes[:, 1]
    cy = boxes[:, 0] + F32(0.5) * h
    cx = boxes[:, 1] + F32(0.5) * w
    cy = cy + deltas[:, 0] * h
    cx = cx + deltas[:, 1] * w
    h = h * np.exp(deltas[:, 2])
    w = w * np.exp(deltas[:, 3])
    y1 = cy - F32(0.5) * h
    x1 = cx - F32(0.5) * w
    return np.stack([y1, x1, y1 + h, x1 + w], axis=1)


def clip_boxes(boxes, window):
    """clip_boxes_graph: each coordinate to the window (wy1, wx1, wy2, wx2)."""
    wy1, wx1, wy2, wx2 = [F32(v) for v in window]
    y1 = np.maximum(np.minimum(boxes[:, 0], wy2), wy1)
    x1 = np.maximum(np.minimum(boxes[:, 1], wx2), wx1)
    y2 = np.maximum(np.minimum(boxes[:, 2], wy2), wy1)
    x2 = np.maximum(np.minimum(boxes[:, 3], wx2), wx1)
    return np.stack([y1, x1, y2, x2], axis=1).astype(F32)


def tf_iou(box, boxes):
    """IoU of one box with many, as TF's NMS kernel computes it (float32):
    coordinates sorted per pair, no +1, 0 when either area is <= 0."""
    box = box.astype(F32)
    boxes = boxes.astype(F32)
    ymin_i, ymax_i = min(box[0], box[2]), max(box[0], box[2])
    xmin_i, xmax_i = min(box[1], box[3]), max(box[1], box[3])
    ymin_j, ymax_j = np.minimum(boxes[:, 0], boxes[:, 2]), np.maximum(boxes[:, 0], boxes[:, 2])
    xmin_j, xmax_j = np.minimum(boxes[:, 1], boxes[:, 3]), np.maximum(boxes[:, 1], boxes[:, 3])
    area_i = (ymax_i - ymin_i) * (xmax_i - xmin_i)
    area_j = (ymax_j - ymin_j) * (xmax_j - xmin_j)
    inter_h = np.maximum(np.minimum(ymax_i, ymax_j) - np.maximum(ymin_i, ymin_j), F32(0))
    inter_w = np.maximum(np.minimum(xmax_i, xmax_j) - np.maximum(xmin_i, xmin_j), F32(0))
    inter = inter_h * inter_w
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (area_i + area_j - inter)
    return np.where((area_i <= 0) | (area_j <= 0), F32(0), iou).astype(F32)


def stable_argsort_desc(scores):
    """tf.nn.top_k(sorted=True) order: descending, ties to the lower index."""
    return np.argsort(-np.asarray(scores, F32), kind="stable")


def tf_nms(boxes, scores, max_output, iou_threshold):
    """tf.image.non_max_suppression (A.6 step 6): visit in descending score
    order (ties: lower index first); a candidate is suppressed when its IoU
    with an already selected box is > iou_threshold (strict).  Returns the
    selected indices in selection order."""
    boxes = np.asarray(boxes, F32).reshape(-1, 4)
    order = stable_argsort_desc(scores)
    threshold = F32(iou_threshold)
    alive = np.ones(len(order), bool)
    selected = []
    for position in range(len(order)):
        if len(selected) >= max_output:
            break
        if not alive[position]:
            continue
        index = order[position]
        selected.append(int(index))
        rest = order[position + 1:]
        alive[position + 1:] &= ~(tf_iou(boxes[index], boxes[rest]) > threshold)
    return np.asarray(selected, np.int64)


# ------------------------------------------------- A.7 PyramidROIAlign

def roi_levels(boxes, image_height, image_width):
    """A.7 level assignment in float32: 4 + rne(log2(sqrt(h*w) /
    (224 / sqrt(H*W)))) clamped to [2, 5]; zero-area boxes (log 0 = -inf)
    go to level 2."""
    boxes = boxes.astype(F32)
    h = boxes[:, 2] - boxes[:, 0]
    w = boxes[:, 3] - boxes[:, 1]
    area = F32(image_height) * F32(image_width)
    ratio = np.sqrt(h * w) / (F32(224.0) / np.sqrt(area))
    with np.errstate(divide="ignore", invalid="ignore"):
        level = np.log(ratio) / np.log(F32(2.0))
    level = np.where(np.isfinite(level), level, F32(-1e9))  # -inf -> INT_MIN -> level 2
    rounded = np.rint(level).astype(np.int64)  # np.rint: half to even, like tf.round
    return np.minimum(5, np.maximum(2, 4 + rounded))


def crop_and_resize(feature, boxes, size):
    """tf.image.crop_and_resize(feature[None], boxes, 0, (size, size),
    'bilinear', extrapolation_value=0) in float32: corner-aligned grid
    y = y1*(h-1) + i*(y2-y1)*(h-1)/(size-1), one sample per cell, samples
    outside [0, h-1] (rows) or [0, w-1] (columns) read 0.
    feature [h, w, C] -> [R, size, size, C]."""
    fh, fw, channels = feature.shape
    boxes = boxes.astype(F32)
    steps = np.arange(size, dtype=F32)
    out = np.zeros((len(boxes), size, size, channels), F32)
    if not len(boxes):
        return out

    def coords(c1, c2, n):
        scale = (c2 - c1) * F32(n - 1) / F32(size - 1)
        return c1[:, None] * F32(n - 1) + steps[None, :] * scale[:, None]
    in_y = coords(boxes[:, 0], boxes[:, 2], fh)  # [R, size]
    in_x = coords(boxes[:, 1], boxes[:, 3], fw)
    valid_y = (in_y >= 0) & (in_y <= fh - 1)
    valid_x = (in_x >= 0) & (in_x <= fw - 1)
    y_safe = np.where(valid_y, in_y, F32(0))
    x_safe = np.where(valid_x, in_x, F32(0))
    top, bottom = np.floor(y_safe).astype(np.int64), np.ceil(y_safe).astype(np.int64)
    left, right = np.floor(x_safe).astype(np.int64), np.ceil(x_safe).astype(np.int64)
    ly = (y_safe - top.astype(F32))[:, :, None, None]
    lx = (x_safe - left.astype(F32))[:, None, :, None]

    def gather(ys, xs):
        return feature[ys[:, :, None], xs[:, None, :]]
    top_left, top_right = gather(top, left), gather(top, right)
    bottom_left, bottom_right = gather(bottom, left), gather(bottom, right)
    upper = top_left + (top_right - top_left) * lx
    lower = bottom_left + (bottom_right - bottom_left) * lx
    out = upper + (lower - upper) * ly
    mask = (valid_y[:, :, None] & valid_x[:, None, :])[..., None]
    return np.where(mask, out, F32(0)).astype(F32)


def pyramid_roi_align(features, boxes, size, image_height, image_width):
    """A.7: each box cropped from P_level (features = [P2..P5], each
    [h, w, C]); rows returned in the boxes' order."""
    levels = roi_levels(boxes, image_height, image_width)
    out = np.zeros((len(boxes), size, size, features[0].shape[-1]), F32)
    for level in range(2, 6):
        rows = np.flatnonzero(levels == level)
        if len(rows):
            out[rows] = crop_and_resize(features[level - 2], boxes[rows], size)
    return out


# ------------------------------------------------------------ weights (D.1)

def _names(attribute):
    """A string-array HDF5 attribute as a list of str (an empty non-string
    array, as Keras writes for layers without weights, is [])."""
    values = np.asarray(attribute).reshape(-1)
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values
            if isinstance(v, (bytes, str, np.bytes_, np.str_))]


def layer_names(group):
    if "layer_names" in group.attrs:
        return _names(group.attrs["layer_names"])
    names, k = [], 0
    while f"layer_names{k}" in group.attrs:
        names += _names(group.attrs[f"layer_names{k}"])
        k += 1
    return names if k else None


def load_h5_weights(path):
    """Reads Keras weights as D.1 describes: the root, or the group
    'model_weights' when the root has no layer_names; per layer group the
    weight_names attribute lists '<scope>/<var>:0' datasets.  Returns
    {'<scope>/<var>': float32 array} (Keras layouts)."""
    import h5py
    weights = {}
    with h5py.File(path, "r") as f:
        root = f
        if layer_names(f) is None and "model_weights" in f:
            root = f["model_weights"]
        names = layer_names(root)
        if names is None:
            raise ValueError(f"{path}: no layer_names attribute")
        for name in names:
            group = root[name]
            for weight in _names(group.attrs.get("weight_names", [])):
                key = weight[:-2] if weight.endswith(":0") else weight
                weights[key] = np.asarray(group[weight]).astype(F32)
    return weights


# ------------------------------------------------------------- the network

def conv2d(x, kernel, bias, stride=1, padding="same"):
    """Keras Conv2D on NHWC float32; kernel HWIO; TF 'same' / 'valid'."""
    n, h, w, cin = x.shape
    kh, kw, kcin, cout = kernel.shape
    assert kcin == cin, (kernel.shape, x.shape)
    if padding == "same":
        oh, ow = -(-h // stride), -(-w // stride)
        ph = max((oh - 1) * stride + kh - h, 0)
        pw = max((ow - 1) * stride + kw - w, 0)
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    else:
        oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    kernel = kernel.astype(F32)
    out = None
    if cin * kh * kw <= 256 and kh * kw > 1:
        # im2col for thin inputs (the stem): one matmul, in row chunks
        out = np.empty((n, oh, ow, cout), F32)
        flat = kernel.reshape(kh * kw * cin, cout)
        for start in range(0, oh, 64):
            stop = min(oh, start + 64)
            taps = [x[:, i + start * stride:i + (stop - 1) * stride + 1:stride,
                      j:j + (ow - 1) * stride + 1:stride, :] for i in range(kh) for j in range(kw)]
            out[:, start:stop] = np.concatenate(taps, axis=-1) @ flat
    else:
        for i in range(kh):
            for j in range(kw):
                tap = x[:, i:i + (oh - 1) * stride + 1:stride, j:j + (ow - 1) * stride + 1:stride, :]
                part = tap @ kernel[i, j]
                out = part if out is None else out + part
    if bias is not None:
        out += bias.astype(F32)
    return out


def batch_norm(x, gamma, beta, mean, variance, eps=BN_EPS):
    """Keras BatchNormalization, inference mode."""
    inv = (gamma.astype(F32) / np.sqrt(variance.astype(F32) + F32(eps))).astype(F32)
    return (x - mean.astype(F32)) * inv + beta.astype(F32)


def relu(x):
    return np.maximum(x, F32(0))


def max_pool_same_3x3_s2(x):
    """MaxPooling2D(3, strides 2, padding 'same'): TF SAME padding with the
    padded positions ignored."""
    n, h, w, c = x.shape
    oh, ow = -(-h // 2), -(-w // 2)
    ph, pw = max((oh - 1) * 2 + 3 - h, 0), max((ow - 1) * 2 + 3 - w, 0)
    xp = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)),
                constant_values=-np.inf)
    out = None
    for i in range(3):
        for j in range(3):
            tap = xp[:, i:i + (oh - 1) * 2 + 1:2, j:j + (ow - 1) * 2 + 1:2]
            out = tap if out is None else np.maximum(out, tap)
    return out


def softmax(x, axis=-1):
    x = x.astype(F32)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(F32)


def sigmoid(x):
    x = x.astype(F32)
    with np.errstate(over="ignore"):  # exp(-x) = inf gives 0, as it should
        return (F32(1) / (F32(1) + np.exp(-x))).astype(F32)


def block_letters(count):
    return [chr(97 + i) for i in range(count)]


class Model:
    """matterport's inference graph over a dict of Keras-layout weights
    {'<layer>/<var>': array}.  Conv biases that are absent read as 0.

    The layer helpers (conv, bn, dense, deconv) go through self.param, so
    a subclass can create weights on first use (the fixtures calibrate
    random weights that way)."""

    def __init__(self, weights, config=None):
        self.weights = weights
        self.config = dict(DEFAULT_CONFIG)
        if config:
            self.config.update(config)

    # -- parameters and layers
    def param(self, layer, var, x=None, kind=None):
        key = f"{layer}/{var}"
        if key in self.weights:
            return self.weights[key]
        if var == "bias":
            return None
        raise KeyError(f"weight {key} missing")

    def conv(self, x, layer, stride=1, padding="same", kind="plain"):
        kernel = self.param(layer, "kernel", x, kind)
        return conv2d(x, kernel, self.param(layer, "bias", x, kind), stride, padding)

    def bn(self, x, layer, kind="plain"):
        gamma = self.param(layer, "gamma", x, kind)
        return batch_norm(x, gamma, self.param(layer, "beta"), self.param(layer, "moving_mean"),
                          self.param(layer, "moving_variance"))

    def dense(self, x, layer, kind="plain"):
        kernel = self.param(layer, "kernel", x, kind)
        bias = self.param(layer, "bias", x, kind)
        out = x.astype(F32) @ kernel.astype(F32)
        return out + bias.astype(F32) if bias is not None else out

    def deconv(self, x, layer, kind="plain"):
        """Conv2DTranspose 2x2 stride 2 'valid', kernel [kh, kw, out, in]:
        out[2i+a, 2j+b, o] = bias[o] + sum_c x[i, j, c] K[a, b, o, c]."""
        kernel = self.param(layer, "kernel", x, kind).astype(F32)
        bias = self.param(layer, "bias", x, kind)
        n, h, w, _ = x.shape
        cout = kernel.shape[2]
        out = np.empty((n, h, 2, w, 2, cout), F32)
        for a in range(2):
            for b in range(2):
                out[:, :, a, :, b, :] = x @ kernel[a, b].T
        out = out.reshape(n, 2 * h, 2 * w, cout)
        return out + bias.astype(F32) if bias is not None else out

    # -- architecture
    def stage_blocks(self):
        """[blocks per stage 2..5], from the weight names (R50: 3,4,6,3;
        R101: 3,4,23,3)."""
        counts = []
        for stage in range(2, 6):
            count = 0
            while f"res{stage}{chr(97 + count)}_branch2a/kernel" in self.weights:
                count += 1
            counts.append(count)
        return counts

    def bottleneck(self, x, stage, block, stride, conv_block):
        base = f"{stage}{block}_branch"
        y = relu(self.bn(self.conv(x, f"res{base}2a", stride, "valid", "bn"), f"bn{base}2a"))
        y = relu(self.bn(self.conv(y, f"res{base}2b", 1, "same", "bn"), f"bn{base}2b"))
        y = self.bn(self.conv(y, f"res{base}2c", 1, "valid", "bn"), f"bn{base}2c", "residual")
        if conv_block:
            shortcut = self.bn(self.conv(x, f"res{base}1", stride, "valid", "bn"), f"bn{base}1")
        else:
            shortcut = x
        return relu(y + shortcut)

    def backbone(self, x, blocks=None):
        """A.3: NHWC molded batch -> [C2, C3, C4, C5]."""
        blocks = blocks or self.stage_blocks()
        x = np.pad(x.astype(F32), ((0, 0), (3, 3), (3, 3), (0, 0)))
        x = relu(self.bn(self.conv(x, "conv1", 2, "valid", "bn"), "bn_conv1"))
        x = max_pool_same_3x3_s2(x)
        outputs = []
        for stage, count in zip(range(2, 6), blocks):
            for index, letter in enumerate(block_letters(count)):
                stride = 1 if stage == 2 or index else 2
                x = self.bottleneck(x, stage, letter, stride, index == 0)
            outputs.append(x)
        return outputs

    def fpn(self, c):
        """A.4: [C2..C5] -> [P2, P3, P4, P5, P6]."""
        def up2(t):
            return np.repeat(np.repeat(t, 2, axis=1), 2, axis=2)
        p5 = self.conv(c[3], "fpn_c5p5", 1, "valid")
        tops = [p5]
        for level, name in ((2, "fpn_c4p4"), (1, "fpn_c3p3"), (0, "fpn_c2p2")):
            lateral = self.conv(c[level], name, 1, "valid")
            upper = up2(tops[-1])
            if upper.shape != lateral.shape:
                raise ValueError(f"FPN shapes {upper.shape} and {lateral.shape} differ: "
                                 "the molded sides must be multiples of 32")
            tops.append(upper + lateral)
        p5, p4, p3, p2 = tops
        out = [self.conv(p, f"fpn_p{k}", 1, "same") for k, p in zip((2, 3, 4, 5), (p2, p3, p4, p5))]
        out.append(out[3][:, ::2, ::2])  # P6: 1x1 max pool, stride 2
        return out

    def rpn(self, p):
        """A.6 head on one level [N,h,w,C] -> (probs [N,h*w*3,2], deltas [N,h*w*3,4])."""
        shared = relu(self.conv(p, "rpn_conv_shared", 1, "same", "rpn_shared"))
        logits = self.conv(shared, "rpn_class_raw", 1, "valid", "rpn_class")
        deltas = self.conv(shared, "rpn_bbox_pred", 1, "valid", "rpn_bbox")
        n = p.shape[0]
        return softmax(logits.reshape(n, -1, 2)), deltas.reshape(n, -1, 4)

    def proposals(self, fg, deltas, anchor_boxes):
        """A.6 ProposalLayer for one image: -> ([POST_NMS, 4] zero padded,
        number of real rows)."""
        cfg = self.config
        deltas = deltas.astype(F32) * np.asarray(cfg["RPN_BBOX_STD_DEV"], F32)
        limit = min(cfg["PRE_NMS_LIMIT"], len(fg))
        top = stable_argsort_desc(fg)[:limit]
        boxes = apply_box_deltas(anchor_boxes[top], deltas[top])
        boxes = clip_boxes(boxes, (0, 0, 1, 1))
        keep = tf_nms(boxes, fg[top], cfg["POST_NMS_ROIS_INFERENCE"], cfg["RPN_NMS_THRESHOLD"])
        rois = np.zeros((cfg["POST_NMS_ROIS_INFERENCE"], 4), F32)
        rois[:len(keep)] = boxes[keep]
        return rois, len(keep)

    def box_head(self, pooled):
        """A.8 head: [R,7,7,C] -> (probs [R,K], deltas [R,K,4])."""
        x = relu(self.bn(self.conv(pooled, "mrcnn_class_conv1", 1, "valid", "head"), "mrcnn_class_bn1"))
        x = relu(self.bn(self.conv(x, "mrcnn_class_conv2", 1, "valid", "head"), "mrcnn_class_bn2"))
        x = x.reshape(len(x), -1)
        probs = softmax(self.dense(x, "mrcnn_class_logits", "class_logits"))
        deltas = self.dense(x, "mrcnn_bbox_fc", "bbox_fc")
        return probs, deltas.reshape(len(x), -1, 4)

    def mask_head(self, pooled):
        """A.9: [R,14,14,C] -> sigmoid probabilities [R,28,28,K]."""
        x = pooled
        for k in range(1, 5):
            x = relu(self.bn(self.conv(x, f"mrcnn_mask_conv{k}", 1, "same", "head"), f"mrcnn_mask_bn{k}"))
        x = relu(self.deconv(x, "mrcnn_mask_deconv", "head"))
        return sigmoid(self.conv(x, "mrcnn_mask", 1, "valid", "mask_logits"))

    def detection_layer(self, rois, probs, deltas, window, height, width):
        """A.8 DetectionLayer for one image -> [n, 6] real rows (y1, x1, y2,
        x2, class_id, score), normalised, in output order."""
        cfg = self.config
        nwin = normalised_window(window, height, width)
        class_ids = np.argmax(probs, axis=1)  # first maximum on ties
        rows = np.arange(len(probs))
        scores = probs[rows, class_ids].astype(F32)
        specific = deltas[rows, class_ids].astype(F32) * np.asarray(cfg["BBOX_STD_DEV"], F32)
        refined = clip_boxes(apply_box_deltas(rois, specific), nwin)
        keep = class_ids > 0
        if cfg["DETECTION_MIN_CONFIDENCE"]:  # 0 switches the filter off
            keep &= scores >= F32(cfg["DETECTION_MIN_CONFIDENCE"])
        keep = np.flatnonzero(keep)
        survivors = []
        for class_id in np.unique(class_ids[keep]):
            members = keep[class_ids[keep] == class_id]
            chosen = tf_nms(refined[members], scores[members], cfg["DETECTION_MAX_INSTANCES"],
                            cfg["DETECTION_NMS_THRESHOLD"])
            survivors.extend(members[chosen])
        keep = np.sort(np.asarray(survivors, np.int64))
        top = stable_argsort_desc(scores[keep])[:cfg["DETECTION_MAX_INSTANCES"]]
        keep = keep[top]
        self.last_detection_rois = keep
        return np.concatenate([refined[keep], class_ids[keep, None].astype(F32),
                               scores[keep, None]], axis=1).astype(F32)

    # -- whole pipeline
    def detect(self, image):
        cfg = self.config
        molded, window, scale, resized, resized_float = mold_image(image, cfg)
        height, width = molded.shape[:2]
        c = self.backbone(molded[None])
        p = self.fpn(c)
        heads = [self.rpn(level) for level in p]
        probs = np.concatenate([h[0] for h in heads], axis=1)[0]
        deltas = np.concatenate([h[1] for h in heads], axis=1)[0]
        anchor_boxes = anchors(height, width, cfg)
        if len(anchor_boxes) != len(probs):
            raise ValueError(f"{len(anchor_boxes)} anchors for {len(probs)} RPN outputs")
        rois, count = self.proposals(probs[:, 1], deltas, anchor_boxes)
        features = [level[0] for level in p[:4]]
        pooled = pyramid_roi_align(features, rois, POOL_SIZE, height, width)
        class_probs, class_deltas = self.box_head(pooled)
        detections = self.detection_layer(rois, class_probs, class_deltas, window, height, width)
        class_ids = detections[:, 4].astype(np.int64)
        if len(detections):
            mask_pooled = pyramid_roi_align(features, detections[:, :4], MASK_POOL_SIZE, height, width)
            masks = self.mask_head(mask_pooled)
            mask_probs = masks[np.arange(len(detections)), :, :, class_ids]
        else:
            mask_probs = np.zeros((0, 28, 28), F32)
            mask_pooled = None
        out = {
            "image_resized": resized, "resized_float": resized_float, "molded": molded,
            "window": window, "scale": scale, "anchors": anchor_boxes,
            "fpn": [level[0] for level in p], "rpn_probs": probs[:, 1], "rpn_deltas": deltas,
            "rpn_rois": rois, "num_proposals": count, "mrcnn_class": class_probs,
            "mrcnn_bbox": class_deltas, "detections": detections, "mask_probs": mask_probs,
            "detection_rois": self.last_detection_rois, "original_shape": image.shape[:2],
            "backbone": [level[0] for level in c], "rpn_class": probs,
            "pooled": pooled, "mask_pooled": mask_pooled if len(detections) else None,
        }
        out.update(unmold(detections, mask_probs, image.shape[:2], (height, width), window))
        return out


    def mask_probs_for(self, out, boxes, class_ids):
        """Class-selected mask probabilities of given normalised boxes on the
        features of a finished detect() (out)."""
        height, width = out["molded"].shape[:2]
        pooled = pyramid_roi_align(out["fpn"][:4], np.asarray(boxes, F32).reshape(-1, 4),
                                   MASK_POOL_SIZE, height, width)
        masks = self.mask_head(pooled)
        return masks[np.arange(len(pooled)), :, :, np.asarray(class_ids, np.int64)]


def near_knife_edge(boxes, image_height, image_width, feature_shapes, size, eps=1e-4):
    """Boxes whose ROI-align result may flip on a last-bit difference of
    their coordinates (documented discontinuities of A.7): the level value
    within eps of a .5 rounding boundary, or a crop_and_resize sample within
    eps feature pixels of 0 or h-1 / w-1, where sampling switches to the
    extrapolation value (a box clipped to x2 = 1.0 puts its last column on
    w-1 exactly, and float32 rounding then decides).  feature_shapes: the
    (h, w) of P2..P5."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    levels = roi_levels(boxes.astype(F32), image_height, image_width)
    h = boxes[:, 2] - boxes[:, 0]
    w = boxes[:, 3] - boxes[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.log2(np.sqrt(h * w) * np.sqrt(image_height * image_width) / 224.0)
        flagged = np.isfinite(value) & (np.abs(value - np.floor(value) - 0.5) < eps)
    steps = np.arange(size, dtype=np.float64)
    for k, level in enumerate(levels):
        fh, fw = feature_shapes[level - 2]
        for c1, c2, n in ((boxes[k, 0], boxes[k, 2], fh), (boxes[k, 1], boxes[k, 3], fw)):
            grid = c1 * (n - 1) + steps * (c2 - c1) * (n - 1) / (size - 1)
            nonzero = grid[grid != 0]  # a sample at exactly 0 (c1 = 0) is exact on any machine
            near_zero = np.abs(nonzero).min() if nonzero.size else np.inf
            if min(near_zero, np.abs(grid - (n - 1)).min()) < eps:
                flagged[k] = True
    return flagged


def paste_mask(probs, roi, original_shape):
    """A.10 step 5 for one detection: (bool full mask, flat indices of the
    pixels whose resized probability is within 1e-3 of 0.5)."""
    h0, w0 = original_shape
    y1, x1, y2, x2 = [int(v) for v in roi]
    soft = resize(np.asarray(probs, F32), y2 - y1, x2 - x1)
    mask = np.zeros((h0, w0), bool)
    mask[y1:y2, x1:x2] = soft >= 0.5
    contour = np.zeros((h0, w0), bool)
    contour[y1:y2, x1:x2] = np.abs(soft.astype(np.float64) - 0.5) <= 1e-3
    return mask, np.flatnonzero(contour)


# ------------------------------------------------------------ A.10 unmold

def unmold(detections, mask_probs, original_shape, molded_shape, window):
    """A.10 for the n real detection rows (the rows before the first
    class_id 0 of the padded table; detections holds only those)."""
    h0, w0 = original_shape
    boxes = detections[:, :4].astype(F32)
    class_ids = detections[:, 4].astype(np.int32)
    scores = detections[:, 5].astype(F32)
    zero = np.flatnonzero(class_ids == 0)
    n = zero[0] if len(zero) else len(detections)
    boxes, class_ids, scores, mask_probs = boxes[:n], class_ids[:n], scores[:n], mask_probs[:n]
    nwin = norm_boxes(np.asarray(window, np.float64), *molded_shape)  # float32
    wy1, wx1, wy2, wx2 = nwin
    shift = np.array([wy1, wx1, wy1, wx1], F32)
    wh, ww = wy2 - wy1, wx2 - wx1
    scale = np.array([wh, ww, wh, ww], F32)
    boxes = (boxes - shift) / scale  # float32
    # denorm_boxes: float32 * int64 array promotes to float64
    unrounded = (boxes * np.array([h0 - 1, w0 - 1, h0 - 1, w0 - 1], np.int64)
                 + np.array([0, 0, 1, 1], np.int64))
    boxes = np.around(unrounded).astype(np.int32)
    keep = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) > 0
    boxes, class_ids, scores, mask_probs = boxes[keep], class_ids[keep], scores[keep], mask_probs[keep]
    unrounded = unrounded[keep]
    masks = np.zeros((len(boxes), h0, w0), bool)
    contours = []
    for i, roi in enumerate(boxes):
        masks[i], contour = paste_mask(mask_probs[i], roi, (h0, w0))
        contours.append(contour)
    return {"rois": boxes, "rois_unrounded": unrounded, "class_ids": class_ids, "scores": scores, "masks": masks,
            "mask_contours": contours, "kept_rows": np.flatnonzero(keep)}


def load_config(path):
    """A sidecar (contract): a JSON object, or key = value lines with Python
    literals, '#' comments and blank lines."""
    import ast
    import json
    text = open(path, encoding="utf8").read()
    if text.lstrip().startswith("{"):
        return json.loads(text)
    config = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, value = line.split("=", 1)
        config[key.strip()] = ast.literal_eval(value.strip())
    return config
