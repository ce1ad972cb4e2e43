/* GeneralizedRCNNTransform: normalise, bilinear resize (half-pixel, edge
 * clamp, no antialiasing), zero-pad bottom/right to the padded size. */
#include "cpu_backend.h"

#include <string.h>

void
cpu_preprocess (CpuState *s, const MrcnnImage *image)
{
  const MrcnnGeometry *g = &s->geometry;
  int h = g->height, w = g->width, ph = g->padded_height,
      pw = g->padded_width;
  int *ry0 = s->taps_i0, *ry1 = s->taps_i1;
  int *rx0 = s->taps_i0 + h, *rx1 = s->taps_i1 + h;
  float *ly = s->taps_lambda, *lx = s->taps_lambda + h;
  mrcnn_linear_taps (image->height, h, ry0, ry1, ly);
  mrcnn_linear_taps (image->width, w, rx0, rx1, lx);

  memset (s->input, 0, sizeof (float) * 3 * ph * pw);
  for (int c = 0; c < 3; c++) {
    const float *lut = s->lut[c];
    float *plane = s->input + (size_t) c * ph * pw;
    for (int y = 0; y < h; y++) {
      const uint8_t *row0 = image->data + (size_t) ry0[y] * image->stride + c;
      const uint8_t *row1 = image->data + (size_t) ry1[y] * image->stride + c;
      float h1 = ly[y], h0 = 1.0f - h1;
      float *dst = plane + (size_t) y * pw;
      for (int x = 0; x < w; x++) {
        int a = 3 * rx0[x], b = 3 * rx1[x];
        float w1 = lx[x], w0 = 1.0f - w1;
        float top = lut[row0[a]] * w0 + lut[row0[b]] * w1;
        float bottom = lut[row1[a]] * w0 + lut[row1[b]] * w1;
        dst[x] = top * h0 + bottom * h1;
      }
    }
  }
}
