/* matterport's arithmetic outside the network: mold_inputs sizes, the
 * skimage resize taps, anchors, box coding, TF NMS and the pyramid level
 * (MODEL_SPEC A.2, A.5 to A.8).  NumPy steps run in float64, graph steps
 * in fp32, as matterport does. */
#include "geometry.h"

#include <math.h>
#include <string.h>

static const int backbone_strides[MRCNN_FPN_LEVELS] = { 4, 8, 16, 32, 64 };

/* pad64: pad an axis to the next multiple of 64, centred */
static void
pad64 (int n, int *padded, int *before)
{
  *padded = n % 64 ? n - n % 64 + 64 : n;
  *before = (*padded - n) / 2;
}

gboolean
mrcnn_geometry_compute_matterport (const MrcnnConfig *c, int W0, int H0,
    MrcnnGeometry *g, GError **error)
{
  /* Python arithmetic: float64, round() half to even */
  double scale = 1;
  int h = H0, w = W0;
  if (c->resize_mode != MRCNN_RESIZE_NONE) {
    if (c->min_size)
      scale = MAX (1.0, (double) c->min_size / MIN (H0, W0));
    if (c->min_scale && scale < c->min_scale)
      scale = c->min_scale;
    if (c->resize_mode == MRCNN_RESIZE_SQUARE
        && rint (MAX (H0, W0) * scale) > c->max_size)
      scale = (double) c->max_size / MAX (H0, W0);
    if (scale != 1) {
      h = (int) rint (H0 * scale);
      w = (int) rint (W0 * scale);
    }
  }
  *g = (MrcnnGeometry) {
    .orig_width = W0, .orig_height = H0, .width = w, .height = h,
    .padded_width = w, .padded_height = h, .scale = scale,
  };
  /* unmold_detections divides by the window's size in normalised
   * coordinates, (side - 1) / (padded - 1): zero for a 1-pixel side */
  if (h < 2 || w < 2) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT,
        "image size %dx%d is too elongated: it resizes to %dx%d, and "
        "matterport's models need at least 2 pixels a side", W0, H0, w, h);
    return FALSE;
  }
  switch (c->resize_mode) {
    case MRCNN_RESIZE_SQUARE:
      g->padded_width = g->padded_height = c->max_size;
      g->pad_top = (c->max_size - h) / 2;
      g->pad_left = (c->max_size - w) / 2;
      break;
    case MRCNN_RESIZE_PAD64:
      pad64 (h, &g->padded_height, &g->pad_top);
      pad64 (w, &g->padded_width, &g->pad_left);
      break;
    case MRCNN_RESIZE_NONE:
      /* the FPN's top-down additions need sides divisible by 32 */
      if (h % 32 || w % 32) {
        g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT,
            "image size %dx%d: IMAGE_RESIZE_MODE \"none\" needs width and "
            "height divisible by 32", W0, H0);
        return FALSE;
      }
      break;
  }
  /* the workspace was sized for IMAGE_MAX_DIM squared */
  if (g->padded_width > c->max_size || g->padded_height > c->max_size) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT,
        "image size %dx%d molds to %dx%d, larger than IMAGE_MAX_DIM (%d) "
        "allows; raise IMAGE_MAX_DIM in the sidecar", W0, H0,
        g->padded_width, g->padded_height, c->max_size);
    return FALSE;
  }
  return TRUE;
}

void
mrcnn_zoom_tap (int in, int out, int d, int *i0, double *w0, double *w1)
{
  /* scipy's zoom_shift: zoom = in / out in float64, the source coordinate
   * and the weights as its spline code computes them (w1 = 1 - w0) */
  double zoom = (double) in / out;
  double s = (d + 0.5) * zoom - 0.5;
  double f = floor (s);
  *i0 = (int) f;
  *w0 = 1.0 - (s - f);
  *w1 = 1.0 - *w0;
}

size_t
mrcnn_matterport_anchor_count (const MrcnnConfig *c, int H, int W)
{
  size_t n = 0;
  for (int l = 0; l < MRCNN_FPN_LEVELS; l++) {
    int s = backbone_strides[l];
    n += (size_t) ((H + s - 1) / s) * ((W + s - 1) / s) * c->n_aspect_ratios;
  }
  return n;
}

void
mrcnn_matterport_anchors (const MrcnnConfig *c, int H, int W, float *out)
{
  /* pixel boxes in float64, then norm_boxes: (y1, x1, y2 - 1, x2 - 1)
   * divided by (H - 1, W - 1), cast to float32 */
  double sy = H - 1, sx = W - 1;
  for (int l = 0; l < MRCNN_FPN_LEVELS; l++) {
    int s = backbone_strides[l];
    int gh = (H + s - 1) / s, gw = (W + s - 1) / s;
    double heights[MRCNN_MAX_ANCHOR_SHAPES], widths[MRCNN_MAX_ANCHOR_SHAPES];
    for (int r = 0; r < c->n_aspect_ratios; r++) {
      double root = sqrt ((double) c->aspect_ratios[r]);
      heights[r] = c->anchor_sizes[l][0] / root;
      widths[r] = c->anchor_sizes[l][0] * root;
    }
    for (int y = 0; y < gh; y++)
      for (int x = 0; x < gw; x++)
        for (int r = 0; r < c->n_aspect_ratios; r++, out += 4) {
          double cy = (double) y * s, cx = (double) x * s;
          out[0] = (float) ((cy - 0.5 * heights[r]) / sy);
          out[1] = (float) ((cx - 0.5 * widths[r]) / sx);
          out[2] = (float) ((cy + 0.5 * heights[r] - 1) / sy);
          out[3] = (float) ((cx + 0.5 * widths[r] - 1) / sx);
        }
  }
}

void
mrcnn_norm_window (const MrcnnGeometry *g, float *out)
{
  float sy = (float) (g->padded_height - 1), sx = (float) (g->padded_width
      - 1);
  out[0] = (float) g->pad_top / sy;
  out[1] = (float) g->pad_left / sx;
  out[2] = (float) (g->pad_top + g->height - 1) / sy;
  out[3] = (float) (g->pad_left + g->width - 1) / sx;
}

void
mrcnn_decode_box_matterport (const float *box, const float *d,
    const float *std_dev, float *out)
{
  float h = box[2] - box[0];
  float w = box[3] - box[1];
  float cy = box[0] + 0.5f * h;
  float cx = box[1] + 0.5f * w;
  cy += d[0] * std_dev[0] * h;
  cx += d[1] * std_dev[1] * w;
  h *= expf (d[2] * std_dev[2]);
  w *= expf (d[3] * std_dev[3]);
  out[0] = cy - 0.5f * h;
  out[1] = cx - 0.5f * w;
  out[2] = out[0] + h;
  out[3] = out[1] + w;
}

void
mrcnn_clip_box_window (float *box, const float *window)
{
  for (int k = 0; k < 4; k++)
    box[k] = MAX (MIN (box[k], window[2 + k % 2]), window[k % 2]);
}

float
mrcnn_tf_iou (const float *a, const float *b)
{
  float ay1 = MIN (a[0], a[2]), ax1 = MIN (a[1], a[3]);
  float ay2 = MAX (a[0], a[2]), ax2 = MAX (a[1], a[3]);
  float by1 = MIN (b[0], b[2]), bx1 = MIN (b[1], b[3]);
  float by2 = MAX (b[0], b[2]), bx2 = MAX (b[1], b[3]);
  float area_a = (ay2 - ay1) * (ax2 - ax1);
  float area_b = (by2 - by1) * (bx2 - bx1);
  if (area_a <= 0 || area_b <= 0)
    return 0.0f;
  float iy1 = MAX (ay1, by1), ix1 = MAX (ax1, bx1);
  float iy2 = MIN (ay2, by2), ix2 = MIN (ax2, bx2);
  float inter = MAX (iy2 - iy1, 0.0f) * MAX (ix2 - ix1, 0.0f);
  return inter / (area_a + area_b - inter);
}

int
mrcnn_tf_nms (const float *boxes, const int *order, int n, float threshold,
    int max_output, uint8_t *removed, int *keep)
{
  int n_keep = 0;
  memset (removed, 0, (size_t) n);
  for (int a = 0; a < n && n_keep < max_output; a++) {
    if (removed[a])
      continue;
    const float *bi = boxes + 4 * (size_t) order[a];
    keep[n_keep++] = order[a];
    for (int b = a + 1; b < n; b++)
      if (!removed[b]
          && mrcnn_tf_iou (bi, boxes + 4 * (size_t) order[b]) > threshold)
        removed[b] = 1;
  }
  return n_keep;
}

int
mrcnn_matterport_roi_level (const float *box, int H, int W)
{
  /* fp32 as in the graph: log2 is ln(x) / ln(2), tf.round is half to
   * even; log(0) = -inf casts to INT_MIN, which clamps to level 2 */
  float h = box[2] - box[0], w = box[3] - box[1];
  float area = (float) H * (float) W;
  float level = logf (sqrtf (h * w) / (224.0f / sqrtf (area))) / logf (2.0f);
  level = rintf (level);
  if (!(level > -100.0f))
    return 2;
  return CLAMP (4 + (int) MIN (level, 100.0f), 2, 5);
}
