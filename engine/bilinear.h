/* One bilinear sample of torchvision's roi_align (aligned=False): the four
 * taps of a point on an h x w map and their weights, all zero when the point
 * falls outside it.  Shared by the CPU and CUDA backends, so that both take
 * the same taps with the same weights. */
#ifndef MRCNN_BILINEAR_H
#define MRCNN_BILINEAR_H

#ifdef __CUDACC__
#define MRCNN_HOST_DEVICE __host__ __device__
#else
#define MRCNN_HOST_DEVICE
#endif

typedef struct {
  int pos[4];      /* y * w + x of the taps (y0 x0, y0 x1, y1 x0, y1 x1) */
  float weight[4];
} MrcnnBilinearSample;

static inline MRCNN_HOST_DEVICE MrcnnBilinearSample
mrcnn_bilinear_sample (float y, float x, int h, int w)
{
  MrcnnBilinearSample smp = { { 0, 0, 0, 0 }, { 0, 0, 0, 0 } };
  /* written so that a NaN coordinate is outside too */
  if (!(y >= -1.0f && y <= (float) h && x >= -1.0f && x <= (float) w))
    return smp;
  if (y <= 0)
    y = 0;
  if (x <= 0)
    x = 0;
  int y0 = (int) y, x0 = (int) x, y1, x1;
  if (y0 >= h - 1) {
    y1 = y0 = h - 1;
    y = (float) y0;
  } else {
    y1 = y0 + 1;
  }
  if (x0 >= w - 1) {
    x1 = x0 = w - 1;
    x = (float) x0;
  } else {
    x1 = x0 + 1;
  }
  float ly = y - (float) y0, lx = x - (float) x0;
  float hy = 1.0f - ly, hx = 1.0f - lx;
  smp.pos[0] = y0 * w + x0;
  smp.pos[1] = y0 * w + x1;
  smp.pos[2] = y1 * w + x0;
  smp.pos[3] = y1 * w + x1;
  smp.weight[0] = hy * hx;
  smp.weight[1] = hy * lx;
  smp.weight[2] = ly * hx;
  smp.weight[3] = ly * lx;
  return smp;
}

#endif
