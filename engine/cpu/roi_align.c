/* MultiScaleRoIAlign: torchvision roi_align with aligned=False; matterport
 * models pool with crop_and_resize.c instead. */
#include "cpu_backend.h"
#include "bilinear.h"

#include <math.h>

void
cpu_roi_align (const float *features, int c, int h, int w, float scale,
    const float *box, int pooled, int sampling_ratio, float *out)
{
  float x_start = (float) ((double) box[0] * scale);
  float y_start = (float) ((double) box[1] * scale);
  float x_end = (float) ((double) box[2] * scale);
  float y_end = (float) ((double) box[3] * scale);
  float roi_w = MAX (x_end - x_start, 1.0f);
  float roi_h = MAX (y_end - y_start, 1.0f);
  float bin_w = roi_w / (float) pooled, bin_h = roi_h / (float) pooled;
  int grid_h = sampling_ratio > 0 ? sampling_ratio : (int) ceilf (bin_h);
  int grid_w = sampling_ratio > 0 ? sampling_ratio : (int) ceilf (bin_w);
  float count = (float) MAX (grid_h * grid_w, 1);
  size_t plane = (size_t) h * w;

  for (int py = 0; py < pooled; py++)
    for (int px = 0; px < pooled; px++) {
      float *dst = out + py * pooled + px;
      for (int ch = 0; ch < c; ch++)
        dst[(size_t) ch * pooled * pooled] = 0;
      for (int iy = 0; iy < grid_h; iy++) {
        float y = y_start + (float) py * bin_h
            + ((float) iy + 0.5f) * bin_h / (float) grid_h;
        for (int ix = 0; ix < grid_w; ix++) {
          float x = x_start + (float) px * bin_w
              + ((float) ix + 0.5f) * bin_w / (float) grid_w;
          MrcnnBilinearSample smp = mrcnn_bilinear_sample (y, x, h, w);
          for (int ch = 0; ch < c; ch++) {
            const float *f = features + ch * plane;
            dst[(size_t) ch * pooled * pooled] += smp.weight[0] * f[smp.pos[0]]
                + smp.weight[1] * f[smp.pos[1]]
                + smp.weight[2] * f[smp.pos[2]]
                + smp.weight[3] * f[smp.pos[3]];
          }
        }
      }
      for (int ch = 0; ch < c; ch++)
        dst[(size_t) ch * pooled * pooled] /= count;
    }
}

void
cpu_roi_setup (CpuState *s)
{
  /* scale of each level from its height and the resized image height,
   * rounded to a power of two (MultiScaleRoIAlign._infer_scale) */
  for (int l = 0; l < MRCNN_ROI_LEVELS; l++) {
    float approx = (float) s->plan->fpn_h[l] / (float) s->geometry.height;
    s->roi_scale[l] = exp2f (rintf (log2f (approx)));
  }
  s->roi_k_min = (int) -log2f (s->roi_scale[0]);
  s->roi_k_max = (int) -log2f (s->roi_scale[MRCNN_ROI_LEVELS - 1]);
}

void
cpu_roi_pool (CpuState *s, const float *box, int pooled, float *out)
{
  if (s->model->config.variant == MRCNN_VARIANT_MATTERPORT) {
    int l = mrcnn_matterport_roi_level (box, s->geometry.padded_height,
        s->geometry.padded_width) - 2;
    cpu_crop_and_resize (s->fpn[l], s->model->fpn_channels,
        s->plan->fpn_h[l], s->plan->fpn_w[l], box, pooled, out);
    return;
  }
  int level = mrcnn_roi_level (box, s->roi_k_min, s->roi_k_max);
  cpu_roi_align (s->fpn[level], s->model->fpn_channels,
      s->plan->fpn_h[level], s->plan->fpn_w[level], s->roi_scale[level], box,
      pooled, s->model->config.sampling_ratio, out);
}
