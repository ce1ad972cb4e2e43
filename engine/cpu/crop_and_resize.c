/* tf.image.crop_and_resize, bilinear, as PyramidROIAlign calls it: the
 * normalised box maps onto the grid with (size - 1), samples are
 * corner-aligned (the first on y1, the last on y2), one per output cell,
 * and samples outside the map read the extrapolation value 0 (A.7).  The
 * fp32 expressions follow TF's CPU kernel. */
#include "cpu_backend.h"

#include <math.h>
#include <string.h>

void
cpu_crop_and_resize (const float *features, int c, int h, int w,
    const float *box, int crop, float *out)
{
  float y1 = box[0], x1 = box[1], y2 = box[2], x2 = box[3];
  float height_scale = crop > 1 ? (y2 - y1) * (h - 1) / (crop - 1) : 0;
  float width_scale = crop > 1 ? (x2 - x1) * (w - 1) / (crop - 1) : 0;
  size_t plane = (size_t) h * w, cell = (size_t) crop * crop;
  for (int i = 0; i < crop; i++) {
    float in_y = crop > 1 ? y1 * (h - 1) + i * height_scale
        : 0.5f * (y1 + y2) * (h - 1);
    gboolean row_out = !(in_y >= 0 && in_y <= h - 1); /* NaN is out */
    int top = row_out ? 0 : (int) floorf (in_y);
    int bottom = row_out ? 0 : (int) ceilf (in_y);
    float y_lerp = in_y - top;
    for (int j = 0; j < crop; j++) {
      float *dst = out + (size_t) i * crop + j;
      float in_x = crop > 1 ? x1 * (w - 1) + j * width_scale
          : 0.5f * (x1 + x2) * (w - 1);
      if (row_out || !(in_x >= 0 && in_x <= w - 1)) {
        for (int ch = 0; ch < c; ch++)
          dst[ch * cell] = 0.0f;
        continue;
      }
      int left = (int) floorf (in_x), right = (int) ceilf (in_x);
      float x_lerp = in_x - left;
      const float *f = features;
      for (int ch = 0; ch < c; ch++, f += plane) {
        float top_left = f[(size_t) top * w + left];
        float top_right = f[(size_t) top * w + right];
        float bottom_left = f[(size_t) bottom * w + left];
        float bottom_right = f[(size_t) bottom * w + right];
        float t = top_left + (top_right - top_left) * x_lerp;
        float b = bottom_left + (bottom_right - bottom_left) * x_lerp;
        dst[ch * cell] = t + (b - t) * y_lerp;
      }
    }
  }
}
