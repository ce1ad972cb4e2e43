/* transform.postprocess: boxes back to the original image, and
 * paste_masks_in_image (1-pixel zero border, box expanded by 30/28). */
#include "cpu_backend.h"

#include <math.h>

static PasteBox
paste_box (const float *box, int padded, int m, int W0, int H0)
{
  float scale = (float) ((double) (m + 2 * padded) / m);
  float w_half = (box[2] - box[0]) * 0.5f * scale;
  float h_half = (box[3] - box[1]) * 0.5f * scale;
  float xc = (box[2] + box[0]) * 0.5f;
  float yc = (box[3] + box[1]) * 0.5f;
  PasteBox p;
  p.x1 = (int64_t) (xc - w_half);
  p.y1 = (int64_t) (yc - h_half);
  p.x2 = (int64_t) (xc + w_half);
  p.y2 = (int64_t) (yc + h_half);
  p.x0 = (int) MAX (p.x1, 0);
  p.y0 = (int) MAX (p.y1, 0);
  p.x_end = (int) MIN (p.x2 + 1, W0);
  p.y_end = (int) MIN (p.y2 + 1, H0);
  return p;
}

void
cpu_paste (CpuState *s, const MrcnnThresholds *t, MrcnnResult *result)
{
  const MrcnnGeometry *g = &s->geometry;
  int W0 = g->orig_width, H0 = g->orig_height;
  int M = 2 * s->model->config.mask_roi_size, Mp = M + 2;
  float ratio_w = (float) W0 / (float) g->width;
  float ratio_h = (float) H0 / (float) g->height;
  int n = s->n_detections;

  /* boxes in original pixels, their mask rectangles, and the room the
   * masks need */
  mrcnn_result_reserve (result, n, 0);
  size_t pixels = 0;
  for (int d = 0; d < n; d++) {
    MrcnnDetection *det = &result->detections[d];
    const float *b = s->det_boxes + 4 * d;
    det->box[0] = b[0] * ratio_w;
    det->box[1] = b[1] * ratio_h;
    det->box[2] = b[2] * ratio_w;
    det->box[3] = b[3] * ratio_h;
    det->score = s->det_scores[d];
    det->label_id = s->det_labels[d];
    PasteBox p = s->paste[d] = paste_box (det->box, 1, M, W0, H0);
    det->mask_x = p.x0;
    det->mask_y = p.y0;
    det->mask_width = MAX (p.x_end - p.x0, 0);
    det->mask_height = MAX (p.y_end - p.y0, 0);
    pixels += (size_t) det->mask_width * det->mask_height;
  }
  mrcnn_result_reserve (result, n, pixels);

  size_t offset = 0;
  for (int d = 0; d < n; d++) {
    MrcnnDetection *det = &result->detections[d];
    PasteBox p = s->paste[d];
    det->mask = result->mask_storage + offset;
    det->mask_binary = result->binary_storage + offset;
    offset += (size_t) det->mask_width * det->mask_height;

    /* the mask padded to (M+2)^2 with zeros, resized to the integer box */
    const float *probs = s->mask_probs + (size_t) d * M * M;
    int bw = (int) MAX (p.x2 - p.x1 + 1, 1), bh = (int) MAX (p.y2 - p.y1 + 1,
        1);
#define PADDED(yy, xx) (((yy) == 0 || (xx) == 0 || (yy) == Mp - 1 \
        || (xx) == Mp - 1) ? 0.0f : probs[((yy) - 1) * M + (xx) - 1])
    for (int y = 0; y < det->mask_height; y++) {
      int y0, y1;
      float ly;
      mrcnn_linear_tap (Mp, bh, (int) (p.y0 + y - p.y1), &y0, &y1, &ly);
      for (int x = 0; x < det->mask_width; x++) {
        int x0, x1;
        float lx;
        mrcnn_linear_tap (Mp, bw, (int) (p.x0 + x - p.x1), &x0, &x1, &lx);
        float top = PADDED (y0, x0) * (1.0f - lx) + PADDED (y0, x1) * lx;
        float bottom = PADDED (y1, x0) * (1.0f - lx) + PADDED (y1, x1) * lx;
        float v = top * (1.0f - ly) + bottom * ly;
        size_t i = (size_t) y * det->mask_width + x;
        det->mask[i] = v;
        det->mask_binary[i] = v >= t->mask;
      }
    }
#undef PADDED
  }
  result->n_detections = n;
}
