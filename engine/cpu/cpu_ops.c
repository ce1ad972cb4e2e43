#include "cpu_backend.h"

#include <oneapi/dnnl/dnnl.h>
#include <math.h>
#include <string.h>

/* floor(a / b) for b > 0 */
static inline int
floor_div (int a, int b)
{
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

/* Columns for output rows [row0, row0 + rows) into col, whose rows are ld
 * floats apart. */
static void
im2col_rows (const float *in, int c, int h, int w, const MrcnnConv *conv,
    int ow, int row0, int rows, float *col, size_t ld)
{
  int k = conv->kernel, s = conv->stride, p = conv->pad;
  for (int ci = 0; ci < c; ci++)
    for (int ky = 0; ky < k; ky++)
      for (int kx = 0; kx < k; kx++) {
        float *dst = col + ((size_t) (ci * k + ky) * k + kx) * ld;
        const float *plane = in + (size_t) ci * h * w;
        for (int r = 0; r < rows; r++) {
          int iy = (row0 + r) * s - p + ky;
          float *d = dst + (size_t) r * ow;
          if (iy < 0 || iy >= h) {
            memset (d, 0, sizeof (float) * ow);
            continue;
          }
          /* outputs whose input column ox * s - p + kx lies in [0, w) */
          const float *src = plane + (size_t) iy * w + kx - p;
          int lo = MIN (MAX (-floor_div (kx - p, s), 0), ow);
          int hi = MAX (MIN (floor_div (w - 1 + p - kx, s) + 1, ow), lo);
          for (int ox = 0; ox < lo; ox++)
            d[ox] = 0.0f;
          if (s == 1)
            memcpy (d + lo, src + lo, sizeof (float) * (hi - lo));
          else
            for (int ox = lo; ox < hi; ox++)
              d[ox] = src[ox * s];
          for (int ox = hi; ox < ow; ox++)
            d[ox] = 0.0f;
        }
      }
}

void
cpu_conv2d_many (const MrcnnConv *conv, const float *in, int n, int h, int w,
    float *out, float *gemm_out, float *col)
{
  int oh = conv_out_size (h, conv), ow = conv_out_size (w, conv);
  int O = conv->out_channels, C = conv->in_channels;
  int K = C * conv->kernel * conv->kernel;
  size_t in_size = (size_t) C * h * w, plane = (size_t) oh * ow;
  size_t ld = (size_t) n * plane;
#pragma omp parallel for
  for (int r = 0; r < n; r++)
    im2col_rows (in + r * in_size, C, h, w, conv, ow, 0, oh, col + r * plane,
        ld);
  dnnl_sgemm ('N', 'N', O, (dnnl_dim_t) ld, K, 1.0f, conv->weight, K, col,
      (dnnl_dim_t) ld, 0.0f, gemm_out, (dnnl_dim_t) ld);
#pragma omp parallel for collapse(2)
  for (int r = 0; r < n; r++)
    for (int o = 0; o < O; o++) {
      const float *src = gemm_out + o * ld + r * plane;
      float *dst = out + ((size_t) r * O + o) * plane;
      for (size_t i = 0; i < plane; i++) {
        float v = src[i] + conv->bias[o];
        dst[i] = v > 0 ? v : 0;
      }
    }
}

void
cpu_linear (const MrcnnLinear *fc, const float *in, int n, float *out,
    gboolean relu)
{
  int O = fc->out_features;
  for (int i = 0; i < n; i++)
    memcpy (out + (size_t) i * O, fc->bias, sizeof (float) * O);
  if (n == 0)
    return;
  dnnl_sgemm ('N', 'T', n, O, fc->in_features, 1.0f, in, fc->in_features,
      fc->weight, fc->in_features, 1.0f, out, O);
  if (relu)
    for (size_t i = 0; i < (size_t) n * O; i++)
      out[i] = out[i] > 0 ? out[i] : 0;
}

void
cpu_upsample_nearest (float *dst, int c, int h, int w, const float *src,
    int sh, int sw, int block)
{
  /* torch "nearest": src index = min(floor(d * in / out), in - 1), fp32 */
  float ry = (float) sh / (float) h, rx = (float) sw / (float) w;
  int blocks = (c + block - 1) / block;
#pragma omp parallel for collapse(2)
  for (int cb = 0; cb < blocks; cb++)
    for (int y = 0; y < h; y++) {
      int yy = MIN ((int) floorf ((float) y * ry), sh - 1);
      const float *srow = src + ((size_t) cb * sh + yy) * sw * block;
      float *drow = dst + ((size_t) cb * h + y) * w * block;
      for (int x = 0; x < w; x++)
        memcpy (drow + (size_t) x * block,
            srow + (size_t) MIN ((int) floorf ((float) x * rx), sw - 1)
            * block, sizeof (float) * block);
    }
}
