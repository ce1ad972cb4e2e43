#include "geometry.h"

#include <math.h>
#include <string.h>

gboolean
mrcnn_geometry_compute (const MrcnnConfig *c, int W0, int H0,
    MrcnnGeometry *g, GError **error)
{
  if (W0 < 1 || H0 < 1) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT,
        "image size %dx%d is empty", W0, H0);
    return FALSE;
  }
  if (c->variant == MRCNN_VARIANT_MATTERPORT)
    return mrcnn_geometry_compute_matterport (c, W0, H0, g, error);
  /* torch computes scalar / tensor as reciprocal(tensor) * scalar in fp32 */
  float short_side = (float) MIN (W0, H0), long_side = (float) MAX (W0, H0);
  float s_short = (1.0f / short_side) * (float) c->min_size;
  float s_long = (1.0f / long_side) * (float) c->max_size;
  double scale = MIN (s_short, s_long);
  g->orig_width = W0;
  g->orig_height = H0;
  g->pad_top = g->pad_left = 0;
  g->scale = scale;
  g->width = (int) floor (W0 * scale);
  g->height = (int) floor (H0 * scale);
  if (g->width < 1 || g->height < 1) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT,
        "image size %dx%d is too elongated: it resizes to %dx%d", W0, H0,
        g->width, g->height);
    return FALSE;
  }
  int d = c->size_divisible;
  g->padded_width = (g->width + d - 1) / d * d;
  g->padded_height = (g->height + d - 1) / d * d;
  return TRUE;
}

size_t
mrcnn_geometry_max_padded_area (const MrcnnConfig *c, int *max_h, int *max_w)
{
  /* matterport: every mode is held to IMAGE_MAX_DIM squared */
  if (c->variant == MRCNN_VARIANT_MATTERPORT) {
    if (max_h)
      *max_h = c->max_size;
    if (max_w)
      *max_w = c->max_size;
    return (size_t) c->max_size * c->max_size;
  }
  /* the short side never exceeds min_size and the long side max_size */
  int d = c->size_divisible;
  int a = (MIN (c->min_size, c->max_size) + d - 1) / d * d;
  int b = (c->max_size + d - 1) / d * d;
  if (max_h)
    *max_h = b;
  if (max_w)
    *max_w = b;
  return (size_t) a * b;
}

void
mrcnn_linear_tap (int in, int out, int d, int *i0, int *i1, float *lambda)
{
  /* torch's CPU kernel: the scale in fp32, the source index in double */
  float scale = (float) in / (float) out;
  double src = scale * (d + 0.5) - 0.5;
  if (src < 0)
    src = 0;
  int i = (int) src;
  *i0 = i;
  *i1 = i + (i < in - 1 ? 1 : 0);
  *lambda = (float) (src - i);
}

void
mrcnn_linear_taps (int in, int out, int *i0, int *i1, float *lambda)
{
  for (int d = 0; d < out; d++)
    mrcnn_linear_tap (in, out, d, &i0[d], &i1[d], &lambda[d]);
}

void
mrcnn_base_anchors (const MrcnnConfig *c, int level, float *out)
{
  int k = 0;
  for (int r = 0; r < c->n_aspect_ratios; r++) {
    float h_ratio = sqrtf (c->aspect_ratios[r]);
    float w_ratio = 1.0f / h_ratio;
    for (int s = 0; s < c->n_anchor_sizes; s++, k++) {
      float ws = w_ratio * c->anchor_sizes[level][s];
      float hs = h_ratio * c->anchor_sizes[level][s];
      out[4 * k + 0] = rintf (-ws / 2);
      out[4 * k + 1] = rintf (-hs / 2);
      out[4 * k + 2] = rintf (ws / 2);
      out[4 * k + 3] = rintf (hs / 2);
    }
  }
}

void
mrcnn_level_anchor (const float *base, int num_anchors, int grid_w,
    int stride_x, int stride_y, int index, float *out)
{
  int a = index % num_anchors, cell = index / num_anchors;
  float sx = (float) ((cell % grid_w) * stride_x);
  float sy = (float) ((cell / grid_w) * stride_y);
  out[0] = sx + base[4 * a + 0];
  out[1] = sy + base[4 * a + 1];
  out[2] = sx + base[4 * a + 2];
  out[3] = sy + base[4 * a + 3];
}

void
mrcnn_decode_box (const float *box, const float *d, const float *weights,
    float clip, float *out)
{
  float w = box[2] - box[0];
  float h = box[3] - box[1];
  float cx = box[0] + 0.5f * w;
  float cy = box[1] + 0.5f * h;
  float dx = d[0] / weights[0];
  float dy = d[1] / weights[1];
  float dw = MIN (d[2] / weights[2], clip);
  float dh = MIN (d[3] / weights[3], clip);
  float pcx = dx * w + cx;
  float pcy = dy * h + cy;
  float pw = expf (dw) * w;
  float ph = expf (dh) * h;
  out[0] = pcx - 0.5f * pw;
  out[1] = pcy - 0.5f * ph;
  out[2] = pcx + 0.5f * pw;
  out[3] = pcy + 0.5f * ph;
}

void
mrcnn_clip_box (float *box, float width, float height)
{
  box[0] = CLAMP (box[0], 0.0f, width);
  box[1] = CLAMP (box[1], 0.0f, height);
  box[2] = CLAMP (box[2], 0.0f, width);
  box[3] = CLAMP (box[3], 0.0f, height);
}

int
mrcnn_nms (const float *boxes, const int *order, int n, float threshold,
    uint8_t *removed, int *keep)
{
  int n_keep = 0;
  memset (removed, 0, (size_t) n);
  for (int a = 0; a < n; a++) {
    if (removed[a])
      continue;
    const float *bi = boxes + 4 * (size_t) order[a];
    keep[n_keep++] = order[a];
    float area_i = (bi[2] - bi[0]) * (bi[3] - bi[1]);
    for (int b = a + 1; b < n; b++) {
      if (removed[b])
        continue;
      const float *bj = boxes + 4 * (size_t) order[b];
      float w = MAX (0.0f, MIN (bi[2], bj[2]) - MAX (bi[0], bj[0]));
      float h = MAX (0.0f, MIN (bi[3], bj[3]) - MAX (bi[1], bj[1]));
      float inter = w * h;
      float area_j = (bj[2] - bj[0]) * (bj[3] - bj[1]);
      if (inter / (area_i + area_j - inter) > threshold)
        removed[b] = 1;
    }
  }
  return n_keep;
}

void
mrcnn_argsort_desc (const float *scores, int n, int *order, int *scratch)
{
  /* bottom-up merge sort: stable, and no allocation */
  for (int i = 0; i < n; i++)
    order[i] = i;
  int *src = order, *dst = scratch;
  for (int width = 1; width < n; width *= 2) {
    for (int lo = 0; lo < n; lo += 2 * width) {
      int mid = MIN (lo + width, n), hi = MIN (lo + 2 * width, n);
      int i = lo, j = mid, k = lo;
      while (i < mid && j < hi)
        dst[k++] = scores[src[j]] > scores[src[i]] ? src[j++] : src[i++];
      while (i < mid)
        dst[k++] = src[i++];
      while (j < hi)
        dst[k++] = src[j++];
    }
    int *tmp = src;
    src = dst;
    dst = tmp;
  }
  if (src != order)
    memcpy (order, src, sizeof (int) * n);
}

int
mrcnn_roi_level (const float *box, int k_min, int k_max)
{
  float area = (box[2] - box[0]) * (box[3] - box[1]);
  float k = floorf (4.0f + log2f (sqrtf (area) / 224.0f) + 1e-6f);
  if (isnan (k))
    return 0;
  return (int) CLAMP (k, (float) k_min, (float) k_max) - k_min;
}

int
mrcnn_geometry_next_group (const MrcnnGeometry *geometry, uint8_t *taken,
    int limit, int max, int *group)
{
  int k = 0;
  for (int i = 0; i < limit && k < max; i++) {
    if (taken[i])
      continue;
    if (k > 0 && (geometry[i].padded_height
            != geometry[group[0]].padded_height
            || geometry[i].padded_width != geometry[group[0]].padded_width))
      continue;
    taken[i] = 1;
    group[k++] = i;
  }
  return k;
}
