/* Backend-independent arithmetic: input geometry, anchors, box coding, NMS
 * and ROI level assignment.  The torchvision rules (geometry.c) reproduce
 * torchvision's fp32 arithmetic (MODEL_SPEC Part B), the matterport ones
 * (matterport_geometry.c) matterport's NumPy and TensorFlow arithmetic
 * (Part A). */
#ifndef MRCNN_GEOMETRY_H
#define MRCNN_GEOMETRY_H

#include "model.h"

G_BEGIN_DECLS

typedef struct {
  int orig_width, orig_height;
  int width, height;               /* resized, before padding */
  int padded_width, padded_height; /* network input */
  int pad_top, pad_left;           /* where the resized image starts in it */
  double scale;                    /* matterport's resize scale */
} MrcnnGeometry;

/* Either variant's sizes (dispatches on config->variant). */
gboolean mrcnn_geometry_compute (const MrcnnConfig *config, int orig_width,
    int orig_height, MrcnnGeometry *geometry, GError **error);

/* Largest padded input area any image can produce with this config. */
size_t mrcnn_geometry_max_padded_area (const MrcnnConfig *config, int *max_h,
    int *max_w);

/* The next frames of a batch whose backbone runs together (one network
 * input size): the first of frames 0..limit-1 not yet taken and the next
 * ones with its padded size, up to max, in order.  Marks them taken (one
 * byte per frame) and writes their indices to group; returns how many, 0
 * when every frame below limit is taken. */
int mrcnn_geometry_next_group (const MrcnnGeometry *geometry, uint8_t *taken,
    int limit, int max, int *group);

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

/* ---- matterport (matterport_geometry.c) ------------------------------- */

/* utils.resize_image's scale, resized size and centred padding (A.2). */
gboolean mrcnn_geometry_compute_matterport (const MrcnnConfig *config,
    int orig_width, int orig_height, MrcnnGeometry *geometry,
    GError **error);

/* One output index of skimage's resize (scipy zoom, order 1, grid mode):
 * out[d] = w0 * in[i0] + w1 * in[i0 + 1], where neighbours outside
 * [0, in) read as 0. */
void mrcnn_zoom_tap (int in, int out, int d, int *i0, double *w0,
    double *w1);

/* Number of anchors of a padded_h x padded_w input, and the anchors
 * themselves, normalised (y1, x1, y2, x2), level-major (A.5). */
size_t mrcnn_matterport_anchor_count (const MrcnnConfig *config,
    int padded_h, int padded_w);
void mrcnn_matterport_anchors (const MrcnnConfig *config, int padded_h,
    int padded_w, float *out);

/* A window (y1, x1, y2, x2 in pixels, y2 x2 exclusive) normalised as
 * norm_boxes_graph does, in fp32. */
void mrcnn_norm_window (const MrcnnGeometry *geometry, float *out);

/* apply_box_deltas_graph: deltas (dy, dx, log dh, log dw) times std_dev
 * on a (y1, x1, y2, x2) box, no clamp, y2 = y1 + h. */
void mrcnn_decode_box_matterport (const float *box, const float *deltas,
    const float *std_dev, float *out);

/* clip_boxes_graph: each coordinate into window (y1, x1, y2, x2). */
void mrcnn_clip_box_window (float *box, const float *window);

/* tf.image.non_max_suppression's IoU: coordinates sorted, no +1, 0 when
 * either area is <= 0. */
float mrcnn_tf_iou (const float *a, const float *b);

/* tf.image.non_max_suppression over boxes visited in `order` (highest
 * score first, ties by lower index): a box is dropped when its IoU with a
 * kept one is > threshold; stops after max_output.  Writes kept indices to
 * keep, returns their count; removed is scratch of n bytes. */
int mrcnn_tf_nms (const float *boxes, const int *order, int n,
    float threshold, int max_output, uint8_t *removed, int *keep);

/* PyramidROIAlign's level (2..5) of a normalised box on a padded_h x
 * padded_w input: 4 + round-half-even(log2(sqrt(area) / 224)); zero
 * boxes go to 2 (A.7). */
int mrcnn_matterport_roi_level (const float *box, int padded_h,
    int padded_w);

G_END_DECLS

#endif
