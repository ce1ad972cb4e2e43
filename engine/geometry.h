/* Backend-independent arithmetic of the torchvision pipeline: input
 * geometry, anchors, box coding, NMS and ROI level assignment.  Each rule
 * reproduces torchvision's fp32 arithmetic (MODEL_SPEC Part B). */
#ifndef MRCNN_GEOMETRY_H
#define MRCNN_GEOMETRY_H

#include "model.h"

typedef struct {
  int orig_width, orig_height;
  int width, height;               /* resized, before padding */
  int padded_width, padded_height; /* network input */
} MrcnnGeometry;

gboolean mrcnn_geometry_compute (const MrcnnConfig *config, int orig_width,
    int orig_height, MrcnnGeometry *geometry, GError **error);

/* Largest padded input area any image can produce with this config. */
size_t mrcnn_geometry_max_padded_area (const MrcnnConfig *config, int *max_h,
    int *max_w);

/* Half-pixel bilinear taps (align_corners=False, edge clamp) for resizing
 * an axis of `in` samples to `out`: out[d] = (1-l)*in[i0] + l*in[i1]. */
void mrcnn_linear_taps (int in, int out, int *i0, int *i1, float *lambda);
/* The same for one output index. */
void mrcnn_linear_tap (int in, int out, int d, int *i0, int *i1,
    float *lambda);

/* Base anchors of one level, (x1, y1, x2, y2) centred on 0, ratio-major:
 * num_anchors x 4 floats. */
void mrcnn_base_anchors (const MrcnnConfig *config, int level, float *out);

/* Anchor `index` ((y * grid_w + x) * num_anchors + a) of a level whose
 * cells are stride_x by stride_y pixels. */
void mrcnn_level_anchor (const float *base, int num_anchors, int grid_w,
    int stride_x, int stride_y, int index, float *out);

/* Decodes deltas (dx, dy, dw, dh) against a box with torchvision's
 * BoxCoder; weights are (wx, wy, ww, wh). */
void mrcnn_decode_box (const float *box, const float *deltas,
    const float *weights, float clip, float *out);

/* Clamps x to [0, width] and y to [0, height] (clip_boxes_to_image). */
void mrcnn_clip_box (float *box, float width, float height);

/* Greedy NMS over boxes visited in `order` (n entries, highest score
 * first); a box is dropped when its IoU with a kept one is > threshold.
 * Writes kept indices to keep (in visit order), returns their count.
 * `removed` is scratch of at least n bytes. */
int mrcnn_nms (const float *boxes, const int *order, int n, float threshold,
    uint8_t *removed, int *keep);

/* Indices 0..n-1 sorted by score, descending; ties keep index order.
 * scratch holds n ints. */
void mrcnn_argsort_desc (const float *scores, int n, int *order,
    int *scratch);

/* MultiScaleRoIAlign's level of a box in resized pixels, as an index from
 * the finest level k_min (the pyramid level of P2) up to k_max. */
int mrcnn_roi_level (const float *box, int k_min, int k_max);

#endif
