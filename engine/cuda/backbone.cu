/* Preprocessing and the ResNet-FPN backbone on the device, mirroring
 * engine/cpu/preprocess.c, engine/cpu/backbone.c and the helpers of
 * engine/cpu/cpu_ops.c they use; activations NHWC in the activation type.
 *
 * The resize taps are computed on the device with the arithmetic of
 * geometry.c (mrcnn_linear_tap) and matterport_geometry.c (mrcnn_zoom_tap),
 * each rounding spelled out (__fmul_rn, __dadd_rn, ...) so that nvcc cannot
 * contract a multiply and an add into an FMA the host code never does:
 * the CUDA input is the CPU backend's, bit for bit, in fp32. */
#include "cuda_backend.h"
#include "cuda_act.cuh"

#include <math.h>
#include <string.h>

#define THREADS 256

static unsigned int
blocks_for (size_t n)
{
  return (unsigned int) CLAMP ((n + THREADS - 1) / THREADS, 1,
      (size_t) 1 << 20);
}

#define GRID_STRIDE_LOOP(i, n) \
  for (size_t i = (size_t) blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
      i += (size_t) gridDim.x * blockDim.x)

/* ---- preprocessing -------------------------------------------------- */

/* mrcnn_linear_tap: the scale in fp32, the source index in double. */
static __device__ void
linear_tap (int in, int out, int d, int *i0, int *i1, float *lambda)
{
  float scale = __fdiv_rn ((float) in, (float) out);
  double src = __dsub_rn (__dmul_rn ((double) scale,
          __dadd_rn ((double) d, 0.5)), 0.5);
  if (src < 0)
    src = 0;
  int i = (int) src;
  *i0 = i;
  *i1 = i + (i < in - 1 ? 1 : 0);
  *lambda = __double2float_rn (__dsub_rn (src, (double) i));
}

/* mrcnn_zoom_tap: scipy's zoom_shift in float64. */
static __device__ void
zoom_tap (int in, int out, int d, int *i0, double *w0, double *w1)
{
  double zoom = __ddiv_rn ((double) in, (double) out);
  double src = __dsub_rn (__dmul_rn (__dadd_rn ((double) d, 0.5), zoom),
      0.5);
  double f = floor (src);
  *i0 = (int) f;
  *w0 = __dsub_rn (1.0, __dsub_rn (src, f));
  *w1 = __dsub_rn (1.0, *w0);
}

/* Taps of the h rows, then of the w columns: one thread each. */
static __global__ void
linear_taps_kernel (int in_h, int in_w, int h, int w, int *i0, int *i1,
    float *lambda)
{
  int d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d < h)
    linear_tap (in_h, h, d, &i0[d], &i1[d], &lambda[d]);
  else if (d < h + w)
    linear_tap (in_w, w, d - h, &i0[d], &i1[d], &lambda[d]);
}

static __global__ void
zoom_taps_kernel (int in_h, int in_w, int h, int w, int *i0, double *w0,
    double *w1)
{
  int d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d < h)
    zoom_tap (in_h, h, d, &i0[d], &w0[d], &w1[d]);
  else if (d < h + w)
    zoom_tap (in_w, w, d - h, &i0[d], &w0[d], &w1[d]);
}

/* range[0] = max(255 - v), range[1] = max(v) over n bytes: skimage's clip
 * range (min and max over all channels) as two max reductions, so a zeroed
 * range is their identity.  One atomic per warp. */
static __global__ void
byte_range_kernel (const uint8_t *data, size_t n, unsigned int *range)
{
  unsigned int inv_lo = 0, hi = 0;
  GRID_STRIDE_LOOP (i, n) {
    unsigned int v = data[i];
    inv_lo = max (inv_lo, 255 - v);
    hi = max (hi, v);
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    inv_lo = max (inv_lo, __shfl_down_sync (0xffffffffu, inv_lo, offset));
    hi = max (hi, __shfl_down_sync (0xffffffffu, hi, offset));
  }
  if ((threadIdx.x & 31) == 0) {
    atomicMax (&range[0], inv_lo);
    atomicMax (&range[1], hi);
  }
}

/* cpu_preprocess: the lut (normalisation) first, then the separable
 * bilinear resize in fp32 in the CPU's order of operations; zero (the
 * normalised mean) right of and below the image, and in the channels past
 * the third.  One thread per pixel of the network input. */
template <typename T>
static __global__ void
preprocess_torchvision_kernel (const uint8_t *image, int in_w, int h, int w,
    int ph, int pw, int channels, const int *i0, const int *i1,
    const float *lambda, const float *lut, T *out)
{
  GRID_STRIDE_LOOP (p, (size_t) ph * pw) {
    int y = (int) (p / pw), x = (int) (p % pw);
    size_t base = p * channels;
    for (int c = 3; c < channels; c++)
      act_store (out, base + c, 0.0f);
    if (y >= h || x >= w) {
      for (int c = 0; c < 3; c++)
        act_store (out, base + c, 0.0f);
      continue;
    }
    const uint8_t *row0 = image + (size_t) i0[y] * in_w * 3;
    const uint8_t *row1 = image + (size_t) i1[y] * in_w * 3;
    int a = 3 * i0[h + x], b = 3 * i1[h + x];
    float h1 = lambda[y], h0 = __fsub_rn (1.0f, h1);
    float w1 = lambda[h + x], w0 = __fsub_rn (1.0f, w1);
    for (int c = 0; c < 3; c++) {
      const float *l = lut + 256 * c;
      float top = __fadd_rn (__fmul_rn (l[row0[a + c]], w0),
          __fmul_rn (l[row0[b + c]], w1));
      float bottom = __fadd_rn (__fmul_rn (l[row1[a + c]], w0),
          __fmul_rn (l[row1[b + c]], w1));
      act_store (out, base + c, __fadd_rn (__fmul_rn (top, h0),
              __fmul_rn (bottom, h1)));
    }
  }
}

/* cpu_preprocess_matterport: skimage's resize (zero outside the image,
 * float64, terms in scipy's order, clipped to the image's range) truncated
 * back to uint8, then the lut (minus MEAN_PIXEL); the centred padding is
 * zero pixels, so it reads lut[0] = -MEAN_PIXEL. */
template <typename T>
static __global__ void
preprocess_matterport_kernel (const uint8_t *image, int in_h, int in_w,
    int h, int w, int ph, int pw, int top, int left, int channels,
    int resize, const int *i0, const double *w0, const double *w1,
    const unsigned int *range, const float *lut, T *out)
{
  GRID_STRIDE_LOOP (p, (size_t) ph * pw) {
    int y = (int) (p / pw) - top, x = (int) (p % pw) - left;
    size_t base = p * channels;
    for (int c = 3; c < channels; c++)
      act_store (out, base + c, 0.0f);
    if (y < 0 || y >= h || x < 0 || x >= w) {
      for (int c = 0; c < 3; c++)
        act_store (out, base + c, lut[256 * c]);
      continue;
    }
    if (!resize) {
      const uint8_t *pixel = image + ((size_t) y * in_w + x) * 3;
      for (int c = 0; c < 3; c++)
        act_store (out, base + c, lut[256 * c + pixel[c]]);
      continue;
    }
    double lo = (double) (255 - range[0]), hi = (double) range[1];
    int y0 = i0[y], x0 = i0[h + x];
    /* rows y0 and y0 + 1, NULL where outside the image */
    const uint8_t *r0 = y0 >= 0 ? image + (size_t) y0 * in_w * 3 : NULL;
    const uint8_t *r1 = y0 + 1 < in_h ? image + (size_t) (y0 + 1) * in_w * 3
        : NULL;
    bool left_in = x0 >= 0, right_in = x0 + 1 < in_w;
    double wy0 = w0[y], wy1 = w1[y], wx0 = w0[h + x], wx1 = w1[h + x];
    for (int c = 0; c < 3; c++) {
      /* (pixel * wy) * wx, summed row-major */
      double v = 0.0;
      if (r0 && left_in)
        v = __dadd_rn (v, __dmul_rn (__dmul_rn ((double) r0[3 * x0 + c],
                    wy0), wx0));
      if (r0 && right_in)
        v = __dadd_rn (v, __dmul_rn (__dmul_rn ((double) r0[3 * (x0 + 1)
                        + c], wy0), wx1));
      if (r1 && left_in)
        v = __dadd_rn (v, __dmul_rn (__dmul_rn ((double) r1[3 * x0 + c],
                    wy1), wx0));
      if (r1 && right_in)
        v = __dadd_rn (v, __dmul_rn (__dmul_rn ((double) r1[3 * (x0 + 1)
                        + c], wy1), wx1));
      v = v > hi ? hi : (v < lo ? lo : v);
      act_store (out, base + c, lut[256 * c + (int) v]);
    }
  }
}

/* Makes a slot's pinned and device image buffers hold `bytes`. */
static gboolean
grow_image_buffers (CudaState *s, int slot, size_t bytes, GError **error)
{
  CudaBackbone *b = &s->backbone;
  /* the old buffers may still feed the last frame's upload */
  if (!cuda_check (cudaStreamSynchronize (s->stream),
          "waiting for the previous image's upload", error))
    return FALSE;
  if (b->image_host[slot])
    cudaFreeHost (b->image_host[slot]);
  cudaFree (b->image_device[slot]);
  b->image_host[slot] = NULL;
  b->image_device[slot] = NULL;
  b->image_capacity[slot] = 0;
  void *host = NULL;
  cudaError_t err = cudaMallocHost (&host, bytes);
  if (err != cudaSuccess) {
    cudaGetLastError (); /* not sticky: keep it from the next launch check */
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
        "out of pinned host memory: the image upload buffer needs %zu MiB "
        "(%s)", bytes >> 20, cudaGetErrorString (err));
    return FALSE;
  }
  b->image_host[slot] = (uint8_t *) host;
  if (!cuda_alloc ((void **) &b->image_device[slot], bytes,
          "the image upload buffer", error))
    return FALSE;
  b->image_capacity[slot] = bytes;
  return TRUE;
}

gboolean
cuda_preprocess (CudaState *s, int slot, const MrcnnImage *image,
    const MrcnnGeometry *geometry, GError **error)
{
  CudaBackbone *b = &s->backbone;
  g_assert (slot >= 0 && slot < s->max_batch);
  s->slot_geometry[slot] = *geometry;
  const MrcnnGeometry *g = geometry;
  int H0 = image->height, W0 = image->width;
  int h = g->height, w = g->width, ph = g->padded_height,
      pw = g->padded_width;
  if (ph > s->max_padded_h || pw > s->max_padded_w
      || (size_t) ph * pw > s->max_padded_area) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
        "a %dx%d network input does not fit the %dx%d the CUDA workspace "
        "was sized for", pw, ph, s->max_padded_w, s->max_padded_h);
    return FALSE;
  }

  size_t row = (size_t) 3 * W0, bytes = row * H0;
  if (bytes > b->image_capacity[slot]
      && !grow_image_buffers (s, slot, bytes, error))
    return FALSE;
  /* The slot's previous upload from its pinned buffer is over: that
   * batch's results were downloaded (cuda_paste_run waits for the
   * stream), or it failed and its results are discarded anyway. */
  uint8_t *host = b->image_host[slot], *image_device = b->image_device[slot];
  for (int y = 0; y < H0; y++)
    memcpy (host + y * row, image->data + (size_t) y * image->stride, row);
  if (!cuda_check (cudaMemcpyAsync (image_device, host, bytes,
              cudaMemcpyHostToDevice, s->stream), "uploading the image",
          error))
    return FALSE;

  /* the slots of a batch share the padded size: one NHWC tensor */
  int C = s->input_channels;
  void *input = (char *) s->inputs + (size_t) slot * ph * pw * C
      * s->act_size;
  unsigned int pixel_blocks = blocks_for ((size_t) ph * pw);
  if (s->model->config.variant != MRCNN_VARIANT_MATTERPORT) {
    linear_taps_kernel<<<blocks_for (h + w), THREADS, 0, s->stream>>> (H0,
        W0, h, w, b->tap_i0, b->tap_i1, b->tap_lambda);
    if (s->half)
      preprocess_torchvision_kernel<<<pixel_blocks, THREADS, 0, s->stream>>> (
          image_device, W0, h, w, ph, pw, C, b->tap_i0, b->tap_i1,
          b->tap_lambda, b->lut, (__half *) input);
    else
      preprocess_torchvision_kernel<<<pixel_blocks, THREADS, 0, s->stream>>> (
          image_device, W0, h, w, ph, pw, C, b->tap_i0, b->tap_i1,
          b->tap_lambda, b->lut, (float *) input);
    return CUDA_CHECK_LAUNCH ("preprocessing the image", error);
  }

  int resize = h != H0 || w != W0;
  if (resize) {
    zoom_taps_kernel<<<blocks_for (h + w), THREADS, 0, s->stream>>> (H0, W0,
        h, w, b->tap_i0, b->tap_w0, b->tap_w1);
    if (!cuda_check (cudaMemsetAsync (b->range, 0, 2 * sizeof (unsigned int),
                s->stream), "clearing the image's value range", error))
      return FALSE;
    byte_range_kernel<<<MIN (blocks_for (bytes), (unsigned int) (8 *
                MAX (s->sm_count, 1))), THREADS, 0, s->stream>>> (
        image_device, bytes, b->range);
  }
  if (s->half)
    preprocess_matterport_kernel<<<pixel_blocks, THREADS, 0, s->stream>>> (
        image_device, H0, W0, h, w, ph, pw, g->pad_top, g->pad_left, C,
        resize, b->tap_i0, b->tap_w0, b->tap_w1, b->range, b->lut,
        (__half *) input);
  else
    preprocess_matterport_kernel<<<pixel_blocks, THREADS, 0, s->stream>>> (
        image_device, H0, W0, h, w, ph, pw, g->pad_top, g->pad_left, C,
        resize, b->tap_i0, b->tap_w0, b->tap_w1, b->range, b->lut,
        (float *) input);
  return CUDA_CHECK_LAUNCH ("preprocessing the image", error);
}

/* ---- backbone and FPN ------------------------------------------------ */

/* The kernels below take n frames of one size, one after another (NHWC):
 * frame f's pixel (y, x) of an h x w map is pixel f * h + y of a map n * h
 * rows high. */

/* cpu_maxpool_3x3s2: output i covers inputs 2i - pad .. 2i - pad + 2,
 * -inf outside. */
template <typename T>
static __global__ void
maxpool_3x3s2_kernel (const T *in, int n, int c, int h, int w, T *out,
    int oh, int ow, int pad)
{
  GRID_STRIDE_LOOP (i, (size_t) n * oh * ow * c) {
    int ci = (int) (i % c);
    size_t p = i / c;
    int ox = (int) (p % ow);
    size_t row = p / ow;
    int oy = (int) (row % oh);
    size_t frame = row / oh;
    const T *in_frame = in + frame * h * w * c;
    int y0 = 2 * oy - pad, x0 = 2 * ox - pad;
    float m = -INFINITY;
    for (int y = max (y0, 0); y <= min (y0 + 2, h - 1); y++)
      for (int x = max (x0, 0); x <= min (x0 + 2, w - 1); x++) {
        float v = act_load (in_frame, ((size_t) y * w + x) * c + ci);
        m = m > v ? m : v;
      }
    act_store (out, i, m);
  }
}

/* cpu_add_upsampled: dst += torch's "nearest" resize of src, the source
 * index min(floor(d * (in / out)), in - 1) in fp32. */
template <typename T>
static __global__ void
add_upsampled_kernel (T *dst, int n, int c, int h, int w, const T *src,
    int sh, int sw)
{
  float ry = __fdiv_rn ((float) sh, (float) h);
  float rx = __fdiv_rn ((float) sw, (float) w);
  GRID_STRIDE_LOOP (i, (size_t) n * h * w * c) {
    int ci = (int) (i % c);
    size_t p = i / c;
    int x = (int) (p % w);
    size_t row = p / w;
    int y = (int) (row % h);
    size_t frame = row / h;
    int yy = min ((int) floorf (__fmul_rn ((float) y, ry)), sh - 1);
    int xx = min ((int) floorf (__fmul_rn ((float) x, rx)), sw - 1);
    act_store (dst, i, __fadd_rn (act_load (dst, i),
            act_load (src, ((frame * sh + yy) * sw + xx) * c + ci)));
  }
}

/* P6: max_pool2d(P5, kernel 1, stride 2) keeps every other pixel. */
template <typename T>
static __global__ void
subsample2_kernel (const T *in, int n, int c, int h, int w, T *out, int oh,
    int ow)
{
  GRID_STRIDE_LOOP (i, (size_t) n * oh * ow * c) {
    int ci = (int) (i % c);
    size_t p = i / c;
    int x = (int) (p % ow);
    size_t row = p / ow;
    int y = (int) (row % oh);
    size_t frame = row / oh;
    out[i] = in[((frame * h + 2 * y) * w + 2 * x) * c + ci];
  }
}

static gboolean
maxpool (CudaState *s, const void *in, int n, int c, int h, int w, void *out,
    int oh, int ow, int pad, GError **error)
{
  unsigned int blocks = blocks_for ((size_t) n * oh * ow * c);
  if (s->half)
    maxpool_3x3s2_kernel<<<blocks, THREADS, 0, s->stream>>> (
        (const __half *) in, n, c, h, w, (__half *) out, oh, ow, pad);
  else
    maxpool_3x3s2_kernel<<<blocks, THREADS, 0, s->stream>>> (
        (const float *) in, n, c, h, w, (float *) out, oh, ow, pad);
  return CUDA_CHECK_LAUNCH ("the stem's max pool", error);
}

static gboolean
add_upsampled (CudaState *s, void *dst, int n, int c, int h, int w,
    const void *src, int sh, int sw, GError **error)
{
  unsigned int blocks = blocks_for ((size_t) n * h * w * c);
  if (s->half)
    add_upsampled_kernel<<<blocks, THREADS, 0, s->stream>>> ((__half *) dst,
        n, c, h, w, (const __half *) src, sh, sw);
  else
    add_upsampled_kernel<<<blocks, THREADS, 0, s->stream>>> ((float *) dst,
        n, c, h, w, (const float *) src, sh, sw);
  return CUDA_CHECK_LAUNCH ("the FPN's top-down addition", error);
}

static gboolean
subsample2 (CudaState *s, const void *in, int n, int c, int h, int w,
    void *out, int oh, int ow, GError **error)
{
  unsigned int blocks = blocks_for ((size_t) n * oh * ow * c);
  if (s->half)
    subsample2_kernel<<<blocks, THREADS, 0, s->stream>>> (
        (const __half *) in, n, c, h, w, (__half *) out, oh, ow);
  else
    subsample2_kernel<<<blocks, THREADS, 0, s->stream>>> (
        (const float *) in, n, c, h, w, (float *) out, oh, ow);
  return CUDA_CHECK_LAUNCH ("the FPN's P6", error);
}

/* relu(conv3(relu(conv2(relu(conv1(x))))) + shortcut(x)) into out, the
 * residual add and ReLU fused into conv3; n frames. */
static gboolean
bottleneck (CudaState *s, CudaBottleneck *blk, const void *x, int n, int h,
    int w, void *out, void *t1, void *t2, void *shortcut, int *oh, int *ow,
    GError **error)
{
  int h1 = cuda_conv_out_size (h, &blk->conv1);
  int w1 = cuda_conv_out_size (w, &blk->conv1);
  int h2 = cuda_conv_out_size (h1, &blk->conv2);
  int w2 = cuda_conv_out_size (w1, &blk->conv2);
  const void *residual = blk->has_downsample ? shortcut : x;
  if (!cuda_conv_forward (s, &blk->conv1, x, n, h, w, t1, NULL, error)
      || !cuda_conv_forward (s, &blk->conv2, t1, n, h1, w1, t2, NULL, error)
      || (blk->has_downsample && !cuda_conv_forward (s, &blk->downsample, x,
              n, h, w, shortcut, NULL, error))
      || !cuda_conv_forward (s, &blk->conv3, t2, n, h2, w2, out, residual,
          error))
    return FALSE;
  *oh = h2;
  *ow = w2;
  return TRUE;
}

/* The stem and the four stages of slots 0..n-1 into stage_out[] (cpu
 * backbone.c resnet). */
static gboolean
resnet (CudaState *s, int n, GError **error)
{
  CudaBackbone *b = &s->backbone;
  const MrcnnGeometry *g = &s->slot_geometry[0];
  void **t = b->scratch;
  int h = cuda_conv_out_size (g->padded_height, &b->stem);
  int w = cuda_conv_out_size (g->padded_width, &b->stem);
  if (!cuda_conv_forward (s, &b->stem, s->inputs, n, g->padded_height,
          g->padded_width, t[0], NULL, error))
    return FALSE;
  int ph = (h - 1) / 2 + 1, pw = (w - 1) / 2 + 1;
  /* TF SAME pads max(2 (out - 1) + 3 - n, 0) / 2 before: 0 here, as
   * matterport inputs are multiples of 32 and the stem output is even */
  int pad = s->model->config.variant == MRCNN_VARIANT_MATTERPORT
      ? MAX (2 * (ph - 1) + 3 - h, 0) / 2 : 1;
  if (!maxpool (s, t[0], n, b->stem.out_channels, h, w, t[1], ph, pw, pad,
          error))
    return FALSE;
  h = ph;
  w = pw;

  /* x lives in one scratch buffer; the other three take t1, t2, the
   * shortcut, and the block output goes to whichever is free */
  void *x = t[1];
  for (int L = 0; L < 4; L++) {
    for (int i = 0; i < b->n_blocks[L]; i++) {
      void *free_bufs[3];
      int k = 0;
      for (int j = 0; j < 4 && k < 3; j++)
        if (t[j] != x)
          free_bufs[k++] = t[j];
      gboolean last = i == b->n_blocks[L] - 1;
      void *out = last ? b->stage_out[L] : free_bufs[0];
      if (!bottleneck (s, &b->blocks[L][i], x, n, h, w, out, free_bufs[0],
              free_bufs[1], free_bufs[2], &h, &w, error))
        return FALSE;
      if (!last)
        x = out;
    }
    b->stage_h[L] = h;
    b->stage_w[L] = w;
    x = b->stage_out[L];
  }
  return TRUE;
}

/* Lateral 1x1s, top-down additions, 3x3 outputs and P6 of n frames (cpu
 * backbone.c fpn). */
static gboolean
fpn (CudaState *s, int n, GError **error)
{
  CudaBackbone *b = &s->backbone;
  int C = s->model->fpn_channels;
  void *last = b->scratch[0], *next = b->scratch[1];
  int lh = b->stage_h[3], lw = b->stage_w[3];
  if (!cuda_conv_forward (s, &b->fpn_inner[3], b->stage_out[3], n, lh, lw,
          last, NULL, error)
      || !cuda_conv_forward (s, &b->fpn_layer[3], last, n, lh, lw,
          s->fpn_slots[3], NULL, error))
    return FALSE;
  s->fpn_h[3] = lh;
  s->fpn_w[3] = lw;
  for (int i = 2; i >= 0; i--) {
    int h = b->stage_h[i], w = b->stage_w[i];
    if (!cuda_conv_forward (s, &b->fpn_inner[i], b->stage_out[i], n, h, w,
            next, NULL, error)
        || !add_upsampled (s, next, n, C, h, w, last, lh, lw, error)
        || !cuda_conv_forward (s, &b->fpn_layer[i], next, n, h, w,
            s->fpn_slots[i], NULL, error))
      return FALSE;
    s->fpn_h[i] = h;
    s->fpn_w[i] = w;
    void *tmp = last;
    last = next;
    next = tmp;
    lh = h;
    lw = w;
  }

  int h5 = s->fpn_h[3], w5 = s->fpn_w[3];
  int h6 = (h5 + 1) / 2, w6 = (w5 + 1) / 2;
  if (!subsample2 (s, s->fpn_slots[3], n, C, h5, w5, s->fpn_slots[4], h6,
          w6, error))
    return FALSE;
  s->fpn_h[4] = h6;
  s->fpn_w[4] = w6;
  return TRUE;
}

gboolean
cuda_backbone_run (CudaState *s, int n, GError **error)
{
  g_assert (n >= 1 && n <= s->max_batch);
  return resnet (s, n, error) && fpn (s, n, error);
}

void
cuda_select_slot (CudaState *s, int slot)
{
  g_assert (slot >= 0 && slot < s->max_batch);
  const MrcnnGeometry *g = &s->slot_geometry[slot];
  size_t act = s->act_size, C = s->model->fpn_channels;
  s->slot = slot;
  s->geometry = *g;
  s->input = (char *) s->inputs + (size_t) slot * g->padded_height
      * g->padded_width * s->input_channels * act;
  for (int l = 0; l < MRCNN_FPN_LEVELS; l++)
    s->fpn[l] = (char *) s->fpn_slots[l] + (size_t) slot * s->fpn_h[l]
        * s->fpn_w[l] * C * act;
}

/* ---- creation -------------------------------------------------------- */

/* A layer's input as the planner follows it through the network: the
 * largest sides (h, w) any input gives there, in either orientation (what
 * convolution algorithms and workspaces are chosen for), and the sides
 * (ah, aw) of the largest area (what buffers are sized by, as
 * cpu_backend.c's plan()). */
typedef struct {
  int h, w;
  int ah, aw;
} Extent;

static gboolean
init_conv (CudaState *s, CudaConv *conv, const MrcnnConv *src,
    const char *name, int in_channels, CudaConvEpilogue epilogue, Extent *e,
    size_t *largest, GError **error)
{
  if (!cuda_conv_init (s, conv, src, name, in_channels, epilogue,
          s->max_batch, e->h, e->w, error))
    return FALSE;
  e->h = cuda_conv_out_size (e->h, conv);
  e->w = cuda_conv_out_size (e->w, conv);
  e->ah = cuda_conv_out_size (e->ah, conv);
  e->aw = cuda_conv_out_size (e->aw, conv);
  *largest = MAX (*largest, (size_t) conv->out_channels * e->ah * e->aw);
  return TRUE;
}

/* Uploads every convolution; returns the largest activation in values,
 * each stage's largest output area in stage_area[] and P6's in p6_area. */
static gboolean
init_convs (CudaState *s, size_t *largest, size_t *stage_area,
    size_t *p6_area, GError **error)
{
  CudaBackbone *b = &s->backbone;
  const MrcnnModel *m = s->model;
  Extent e = { s->max_padded_h, s->max_padded_w,
    (int) (s->max_padded_area / s->max_padded_w), s->max_padded_w };
  *largest = 0;
  if (!init_conv (s, &b->stem, &m->stem, "the backbone's stem",
          s->input_channels, CUDA_CONV_BIAS_RELU, &e, largest, error))
    return FALSE;
  e.h = (e.h - 1) / 2 + 1;
  e.w = (e.w - 1) / 2 + 1;
  e.ah = (e.ah - 1) / 2 + 1;
  e.aw = (e.aw - 1) / 2 + 1;
  for (int L = 0; L < 4; L++) {
    b->blocks[L] = g_new0 (CudaBottleneck, MAX (m->n_blocks[L], 1));
    b->n_blocks[L] = m->n_blocks[L];
    for (int i = 0; i < m->n_blocks[L]; i++) {
      const MrcnnBottleneck *src = &m->blocks[L][i];
      CudaBottleneck *blk = &b->blocks[L][i];
      Extent in = e;
      blk->has_downsample = src->has_downsample;
      char name[4][64];
      static const char *const convs[4] = { "conv1", "conv2", "conv3",
        "downsample" };
      for (int j = 0; j < 4; j++)
        g_snprintf (name[j], sizeof name[j], "backbone stage %d block %d %s",
            L + 1, i, convs[j]);
      if (!init_conv (s, &blk->conv1, &src->conv1, name[0],
              src->conv1.in_channels, CUDA_CONV_BIAS_RELU, &e, largest,
              error)
          || !init_conv (s, &blk->conv2, &src->conv2, name[1],
              src->conv2.in_channels, CUDA_CONV_BIAS_RELU, &e, largest,
              error)
          || (src->has_downsample && !init_conv (s, &blk->downsample,
                  &src->downsample, name[3], src->downsample.in_channels,
                  CUDA_CONV_BIAS, &in, largest, error))
          || !init_conv (s, &blk->conv3, &src->conv3, name[2],
              src->conv3.in_channels, CUDA_CONV_BIAS_ADD_RELU, &e, largest,
              error))
        return FALSE;
    }
    stage_area[L] = (size_t) e.ah * e.aw;
    Extent lateral = e;
    char inner_name[64], layer_name[64];
    g_snprintf (inner_name, sizeof inner_name, "FPN lateral %d", L);
    g_snprintf (layer_name, sizeof layer_name, "FPN output %d", L);
    if (!init_conv (s, &b->fpn_inner[L], &m->fpn_inner[L], inner_name,
            m->fpn_inner[L].in_channels, CUDA_CONV_BIAS, &lateral, largest,
            error)
        || !init_conv (s, &b->fpn_layer[L], &m->fpn_layer[L], layer_name,
            m->fpn_layer[L].in_channels, CUDA_CONV_BIAS, &lateral, largest,
            error))
      return FALSE;
    if (L == 3)
      *p6_area = (size_t) ((e.ah + 1) / 2) * ((e.aw + 1) / 2);
  }
  return TRUE;
}

/* Copies bytes of host memory into a new device buffer (creation time). */
static gboolean
upload (CudaState *s, void **dst, const void *src, size_t bytes,
    const char *what, GError **error)
{
  return cuda_alloc (dst, bytes, what, error)
      && cuda_check (cudaMemcpyAsync (*dst, src, bytes,
          cudaMemcpyHostToDevice, s->stream), what, error)
      && cuda_check (cudaStreamSynchronize (s->stream), what, error);
}

gboolean
cuda_backbone_create (CudaState *s, GError **error)
{
  CudaBackbone *b = &s->backbone;
  const MrcnnModel *m = s->model;
  const MrcnnConfig *c = &m->config;
  gboolean matterport = c->variant == MRCNN_VARIANT_MATTERPORT;
  /* fp16: 8 channels, so the stem runs on tensor cores */
  s->input_channels = s->half ? 8 : 3;

  size_t largest, stage_area[4], p6_area = 0;
  if (!init_convs (s, &largest, stage_area, &p6_area, error))
    return FALSE;
  /* the buffer the batch's largest layers were tried on goes before the
   * activations take their room (the heads' trials may grow one again) */
  cudaFree (s->conv_trial);
  s->conv_trial = NULL;
  s->conv_trial_size = 0;

  /* every activation buffer holds max_batch frames */
  size_t act = s->act_size * s->max_batch, C = m->fpn_channels;
  if (!cuda_alloc (&s->inputs, s->max_padded_area * s->input_channels * act,
          "the network input", error))
    return FALSE;
  for (int i = 0; i < 4; i++)
    if (!cuda_alloc (&b->scratch[i], largest * act,
            "the backbone's activations", error))
      return FALSE;
  for (int L = 0; L < 4; L++)
    b->fpn_size[L] = stage_area[L] * C;
  b->fpn_size[4] = p6_area * C;
  for (int L = 0; L < 4; L++)
    if (!cuda_alloc (&b->stage_out[L], stage_area[L] * m->stage_channels[L]
            * act, "the backbone's stage outputs", error))
      return FALSE;
  for (int l = 0; l < MRCNN_FPN_LEVELS; l++)
    if (!cuda_alloc (&s->fpn_slots[l], b->fpn_size[l] * act,
            "the FPN's levels", error))
      return FALSE;

  /* the CPU backend's lut (cpu_create), uint8 -> input value */
  float lut[3][256];
  for (int ch = 0; ch < 3; ch++)
    for (int v = 0; v < 256; v++)
      lut[ch][v] = matterport ? (float) (v - c->mean_pixel[ch])
          : ((float) v / 255.0f - c->image_mean[ch]) / c->image_std[ch];
  if (!upload (s, (void **) &b->lut, lut, sizeof lut,
          "the preprocessing table", error))
    return FALSE;

  size_t taps = (size_t) s->max_padded_h + s->max_padded_w;
  if (!cuda_alloc ((void **) &b->tap_i0, taps * sizeof (int),
          "the resize taps", error))
    return FALSE;
  if (matterport)
    return cuda_alloc ((void **) &b->tap_w0, taps * sizeof (double),
        "the resize taps", error)
        && cuda_alloc ((void **) &b->tap_w1, taps * sizeof (double),
        "the resize taps", error)
        && cuda_alloc ((void **) &b->range, 2 * sizeof (unsigned int),
        "the image's value range", error);
  return cuda_alloc ((void **) &b->tap_i1, taps * sizeof (int),
      "the resize taps", error)
      && cuda_alloc ((void **) &b->tap_lambda, taps * sizeof (float),
      "the resize taps", error);
}

void
cuda_backbone_destroy (CudaState *s)
{
  CudaBackbone *b = &s->backbone;
  cuda_conv_clear (&b->stem);
  for (int L = 0; L < 4; L++) {
    for (int i = 0; b->blocks[L] && i < b->n_blocks[L]; i++) {
      CudaBottleneck *blk = &b->blocks[L][i];
      cuda_conv_clear (&blk->conv1);
      cuda_conv_clear (&blk->conv2);
      cuda_conv_clear (&blk->conv3);
      cuda_conv_clear (&blk->downsample);
    }
    g_free (b->blocks[L]);
    cuda_conv_clear (&b->fpn_inner[L]);
    cuda_conv_clear (&b->fpn_layer[L]);
    cudaFree (b->scratch[L]);
    cudaFree (b->stage_out[L]);
  }
  for (int l = 0; l < MRCNN_FPN_LEVELS; l++) {
    cudaFree (s->fpn_slots[l]);
    s->fpn_slots[l] = NULL;
    s->fpn[l] = NULL;
  }
  cudaFree (s->inputs);
  s->inputs = NULL;
  s->input = NULL;
  cudaFree (b->lut);
  for (int i = 0; i < MRCNN_MAX_BATCH; i++) {
    if (b->image_host[i])
      cudaFreeHost (b->image_host[i]);
    cudaFree (b->image_device[i]);
  }
  cudaFree (b->tap_i0);
  cudaFree (b->tap_i1);
  cudaFree (b->tap_lambda);
  cudaFree (b->tap_w0);
  cudaFree (b->tap_w1);
  cudaFree (b->range);
  memset (b, 0, sizeof *b);
}
