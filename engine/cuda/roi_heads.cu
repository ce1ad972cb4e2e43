/* ROIAlign, the box head and detection post-processing on the device, for
 * both variants, mirroring engine/cpu/roi_align.c, crop_and_resize.c,
 * roi_heads.c (cpu_box_head, cpu_detect) and detect_matterport.c.
 *
 * Box arithmetic is float, written with __fmul_rn / __fadd_rn wherever a
 * product feeds a sum: nvcc would otherwise contract it into an FMA and
 * round differently from the CPU backend, which moves boxes across the
 * level, threshold and NMS decisions.
 *
 * Detection keeps every variable count on the device: candidates live in
 * fixed slots (empty ones score -inf), two stable radix sorts give the
 * score order and its regrouping by class (the CPU's argsort and counting
 * sort), a bitmask kernel and one warp per class run the greedy NMS, and
 * one block gathers the survivors in score order. */
#include "cuda_backend.h"
#include "bilinear.h"

#include <cub/cub.cuh>

#include <limits.h>
#include <math.h>
#include <string.h>

#define THREADS 256
#define NMS_BLOCK 64  /* boxes per mask word */
#define CAND_THREADS 128
#define SELECT_THREADS 256

/* ---- activations ------------------------------------------------------ */

static __device__ __forceinline__ float
act_load (float v)
{
  return v;
}

static __device__ __forceinline__ float
act_load (__half v)
{
  return __half2float (v);
}

template <typename T> static __device__ __forceinline__ T act_store (float v);

template <> __device__ __forceinline__ float
act_store<float> (float v)
{
  return v;
}

template <> __device__ __forceinline__ __half
act_store<__half> (float v)
{
  return __float2half_rn (v);
}

static unsigned int
grid_for (size_t n)
{
  /* grid-stride kernels: enough blocks to fill the GPU, never too many */
  return (unsigned int) MAX ((size_t) 1, MIN ((n + THREADS - 1) / THREADS,
          (size_t) 1 << 20));
}

/* ---- ROIAlign ----------------------------------------------------------- */

/* What one launch needs to pool from P2..P5 of the current image. */
typedef struct {
  const void *feature[MRCNN_ROI_LEVELS];
  int h[MRCNN_ROI_LEVELS], w[MRCNN_ROI_LEVELS];
  int channels;
  gboolean matterport;
  /* torchvision: cpu_roi_setup's scales and levels */
  float scale[MRCNN_ROI_LEVELS];
  int k_min, k_max;
  int sampling_ratio;
  /* matterport: the padded input's area, (float) H * (float) W */
  float image_area;
} RoiLevels;

/* mrcnn_roi_level: box (x1, y1, x2, y2) in resized pixels */
static __device__ int
torchvision_level (float4 box, int k_min, int k_max)
{
  float area = (box.z - box.x) * (box.w - box.y);
  float k = floorf (4.0f + log2f (sqrtf (area) / 224.0f) + 1e-6f);
  if (isnan (k))
    return 0;
  return (int) CLAMP (k, (float) k_min, (float) k_max) - k_min;
}

/* mrcnn_matterport_roi_level, as an index from P2: box (y1, x1, y2, x2) */
static __device__ int
matterport_level (float4 box, float image_area)
{
  float h = box.z - box.x, w = box.w - box.y;
  float level = logf (sqrtf (h * w) / (224.0f / sqrtf (image_area)))
      / logf (2.0f);
  level = rintf (level);
  if (!(level > -100.0f))
    return 0;
  return CLAMP (4 + (int) MIN (level, 100.0f), 2, 5) - 2;
}

/* One bilinear sample of channel ch: cpu_roi_align's taps and the sum of
 * its four products in the CPU's order. */
template <typename T>
static __device__ float
roi_align_tap (const T *f, int h, int w, int channels, int ch, float y,
    float x)
{
  MrcnnBilinearSample smp = mrcnn_bilinear_sample (y, x, h, w);
  float v[4];
  for (int k = 0; k < 4; k++)
    v[k] = act_load (f[(size_t) smp.pos[k] * channels + ch]);
  float sum = __fadd_rn (__fmul_rn (smp.weight[0], v[0]),
      __fmul_rn (smp.weight[1], v[1]));
  sum = __fadd_rn (sum, __fmul_rn (smp.weight[2], v[2]));
  return __fadd_rn (sum, __fmul_rn (smp.weight[3], v[3]));
}

/* cpu_roi_align (aligned=False) of one output cell and channel */
template <typename T>
static __device__ float
roi_align_cell (const RoiLevels &L, float4 box, int pooled, int py, int px,
    int ch)
{
  int l = torchvision_level (box, L.k_min, L.k_max);
  const T *f = (const T *) L.feature[l];
  int h = L.h[l], w = L.w[l];
  float scale = L.scale[l];
  /* the scale is a power of two: these products are exact, as the CPU's
   * double ones rounded to float */
  float x_start = box.x * scale, y_start = box.y * scale;
  float x_end = box.z * scale, y_end = box.w * scale;
  float roi_w = MAX (x_end - x_start, 1.0f);
  float roi_h = MAX (y_end - y_start, 1.0f);
  float bin_w = roi_w / (float) pooled, bin_h = roi_h / (float) pooled;
  int grid_h = L.sampling_ratio > 0 ? L.sampling_ratio : (int) ceilf (bin_h);
  int grid_w = L.sampling_ratio > 0 ? L.sampling_ratio : (int) ceilf (bin_w);
  float count = (float) MAX (grid_h * grid_w, 1);
  float y_cell = __fadd_rn (y_start, __fmul_rn ((float) py, bin_h));
  float x_cell = __fadd_rn (x_start, __fmul_rn ((float) px, bin_w));
  float acc = 0.0f;
  for (int iy = 0; iy < grid_h; iy++) {
    float y = __fadd_rn (y_cell,
        __fmul_rn ((float) iy + 0.5f, bin_h) / (float) grid_h);
    for (int ix = 0; ix < grid_w; ix++) {
      float x = __fadd_rn (x_cell,
          __fmul_rn ((float) ix + 0.5f, bin_w) / (float) grid_w);
      acc = __fadd_rn (acc, roi_align_tap (f, h, w, L.channels, ch, y, x));
    }
  }
  return acc / count;
}

/* cpu_crop_and_resize of one output cell and channel (A.7) */
template <typename T>
static __device__ float
crop_and_resize_cell (const RoiLevels &L, float4 box, int crop, int i, int j,
    int ch)
{
  int l = matterport_level (box, L.image_area);
  const T *f = (const T *) L.feature[l];
  int h = L.h[l], w = L.w[l];
  float y1 = box.x, x1 = box.y, y2 = box.z, x2 = box.w;
  float hm1 = (float) (h - 1), wm1 = (float) (w - 1);
  float in_y, in_x;
  if (crop > 1) {
    float height_scale = (y2 - y1) * hm1 / (float) (crop - 1);
    float width_scale = (x2 - x1) * wm1 / (float) (crop - 1);
    in_y = __fadd_rn (__fmul_rn (y1, hm1), __fmul_rn ((float) i,
            height_scale));
    in_x = __fadd_rn (__fmul_rn (x1, wm1), __fmul_rn ((float) j,
            width_scale));
  } else {
    in_y = 0.5f * (y1 + y2) * hm1;
    in_x = 0.5f * (x1 + x2) * wm1;
  }
  if (in_y < 0 || in_y > hm1 || in_x < 0 || in_x > wm1)
    return 0.0f;
  int top = (int) floorf (in_y), bottom = (int) ceilf (in_y);
  int left = (int) floorf (in_x), right = (int) ceilf (in_x);
  float y_lerp = in_y - (float) top, x_lerp = in_x - (float) left;
  int C = L.channels;
  float top_left = act_load (f[((size_t) top * w + left) * C + ch]);
  float top_right = act_load (f[((size_t) top * w + right) * C + ch]);
  float bottom_left = act_load (f[((size_t) bottom * w + left) * C + ch]);
  float bottom_right = act_load (f[((size_t) bottom * w + right) * C + ch]);
  float t = __fadd_rn (top_left, __fmul_rn (top_right - top_left, x_lerp));
  float b = __fadd_rn (bottom_left, __fmul_rn (bottom_right - bottom_left,
          x_lerp));
  return __fadd_rn (t, __fmul_rn (b - t, y_lerp));
}

/* One thread per (row, cell, channel), channels fastest so that the NHWC
 * feature reads of a warp are contiguous. */
template <typename T, bool NHWC>
static __global__ void
roi_align_kernel (RoiLevels L, const float *boxes, const int *count,
    int rows, int pooled, T *out)
{
  int C = L.channels, cells = pooled * pooled;
  size_t total = (size_t) rows * cells * C;
  int n = count ? *count : rows;
  for (size_t idx = (size_t) blockIdx.x * blockDim.x + threadIdx.x;
      idx < total; idx += (size_t) gridDim.x * blockDim.x) {
    int ch = (int) (idx % C);
    int cell = (int) (idx / C % cells);
    int row = (int) (idx / C / cells);
    float v = 0.0f;
    if (row < n) {
      const float *b = boxes + 4 * (size_t) row;
      float4 box = make_float4 (b[0], b[1], b[2], b[3]);
      int py = cell / pooled, px = cell % pooled;
      v = L.matterport ? crop_and_resize_cell<T> (L, box, pooled, py, px, ch)
          : roi_align_cell<T> (L, box, pooled, py, px, ch);
    }
    size_t dst = NHWC ? idx : ((size_t) row * C + ch) * cells + cell;
    out[dst] = act_store<T> (v);
  }
}

template <typename T>
static void
launch_roi_align (CudaState *s, const RoiLevels &L, const float *boxes,
    const int *count, int rows, int pooled, gboolean nhwc, void *out)
{
  size_t total = (size_t) rows * pooled * pooled * L.channels;
  if (nhwc)
    roi_align_kernel<T, true> <<<grid_for (total), THREADS, 0, s->stream>>>
        (L, boxes, count, rows, pooled, (T *) out);
  else
    roi_align_kernel<T, false> <<<grid_for (total), THREADS, 0, s->stream>>>
        (L, boxes, count, rows, pooled, (T *) out);
}

gboolean
cuda_roi_align (CudaState *s, const float *boxes, const int *count, int rows,
    int pooled, gboolean nhwc, void *out, GError **error)
{
  const MrcnnModel *m = s->model;
  if (rows < 1)
    return TRUE;
  RoiLevels L;
  memset (&L, 0, sizeof L);
  for (int l = 0; l < MRCNN_ROI_LEVELS; l++) {
    L.feature[l] = s->fpn[l];
    L.h[l] = s->fpn_h[l];
    L.w[l] = s->fpn_w[l];
  }
  L.channels = m->fpn_channels;
  L.matterport = m->config.variant == MRCNN_VARIANT_MATTERPORT;
  L.sampling_ratio = m->config.sampling_ratio;
  L.image_area = (float) s->geometry.padded_height
      * (float) s->geometry.padded_width;
  /* cpu_roi_setup: each level's scale from its height and the resized
   * (unpadded) image height, rounded to a power of two */
  for (int l = 0; l < MRCNN_ROI_LEVELS; l++) {
    float approx = (float) s->fpn_h[l] / (float) s->geometry.height;
    L.scale[l] = exp2f (rintf (log2f (approx)));
  }
  L.k_min = (int) -log2f (L.scale[0]);
  L.k_max = (int) -log2f (L.scale[MRCNN_ROI_LEVELS - 1]);

  if (s->half)
    launch_roi_align<__half> (s, L, boxes, count, rows, pooled, nhwc, out);
  else
    launch_roi_align<float> (s, L, boxes, count, rows, pooled, nhwc, out);
  return CUDA_CHECK_LAUNCH ("ROIAlign", error);
}

/* ---- box head ----------------------------------------------------------- */

static gboolean
linear_create (CudaState *s, CudaLinear *fc, const float *weight,
    const float *bias, int in, int out, const char *what, GError **error)
{
  fc->in_features = in;
  fc->out_features = out;
  /* the bias on s->stream, which does not wait for the legacy default
   * stream cudaMemcpy uses; waiting lets the caller free the host copy */
  return cuda_upload_act (s, &fc->weight, weight, (size_t) in * out, what,
      error)
      && cuda_alloc ((void **) &fc->bias, sizeof (float) * out, what, error)
      && cuda_check (cudaMemcpyAsync (fc->bias, bias, sizeof (float) * out,
          cudaMemcpyHostToDevice, s->stream), what, error)
      && cuda_check (cudaStreamSynchronize (s->stream), what, error);
}

static void
linear_clear (CudaLinear *fc)
{
  cudaFree (fc->weight);
  cudaFree (fc->bias);
  memset (fc, 0, sizeof *fc);
}

/* out[rows][O] = in[rows][I] W^T in float: row-major out is the
 * column-major O x rows matrix W (I x O column-major, transposed) times
 * in (I x rows column-major).  fp16 accumulates in fp32, fp32 stays
 * fp32 (no TF32). */
static gboolean
linear_gemm (CudaState *s, const CudaLinear *fc, const void *in, int rows,
    float *out, const char *what, GError **error)
{
  const float alpha = 1.0f, beta = 0.0f;
  cublasComputeType_t compute = s->half ? CUBLAS_COMPUTE_32F
      : CUBLAS_COMPUTE_32F_PEDANTIC;
  return cublas_check (cublasGemmEx (s->cublas, CUBLAS_OP_T, CUBLAS_OP_N,
          fc->out_features, rows, fc->in_features, &alpha, fc->weight,
          s->act_cuda, fc->in_features, in, s->act_cuda, fc->in_features,
          &beta, out, CUDA_R_32F, fc->out_features, compute,
          CUBLAS_GEMM_DEFAULT), what, error);
}

/* out = [relu](acc + bias), as cpu_linear's ReLU (NaN becomes 0) */
template <typename T>
static __global__ void
bias_kernel (const float *acc, const float *bias, int cols, size_t n,
    bool relu, T *out)
{
  for (size_t i = (size_t) blockIdx.x * blockDim.x + threadIdx.x; i < n;
      i += (size_t) gridDim.x * blockDim.x) {
    float v = acc[i] + bias[i % cols];
    if (relu)
      v = v > 0 ? v : 0;
    out[i] = act_store<T> (v);
  }
}

/* A fully connected layer with ReLU into the activation type. */
static gboolean
linear_relu (CudaState *s, const CudaLinear *fc, const void *in, int rows,
    void *out, const char *what, GError **error)
{
  CudaRoiHeads *r = &s->heads;
  if (!linear_gemm (s, fc, in, rows, r->gemm_out, what, error))
    return FALSE;
  size_t n = (size_t) rows * fc->out_features;
  if (s->half)
    bias_kernel<__half> <<<grid_for (n), THREADS, 0, s->stream>>>
        (r->gemm_out, fc->bias, fc->out_features, n, true, (__half *) out);
  else
    bias_kernel<float> <<<grid_for (n), THREADS, 0, s->stream>>>
        (r->gemm_out, fc->bias, fc->out_features, n, true, (float *) out);
  return CUDA_CHECK_LAUNCH (what, error);
}

/* cpu_box_head on every row: proposals past the count are zero features
 * whose outputs the detection kernels skip. */
static gboolean
box_head (CudaState *s, GError **error)
{
  CudaRoiHeads *r = &s->heads;
  int rows = s->max_proposals;
  /* matterport pools its zero-padded proposals too (the CPU's n_proposals
   * is POST_NMS_ROIS_INFERENCE), torchvision only the counted ones */
  const int *count = s->model->config.variant == MRCNN_VARIANT_MATTERPORT
      ? NULL : s->n_proposals;
  if (!cuda_roi_align (s, s->proposals, count, rows, r->pooled,
          r->n_convs > 0, r->features, error))
    return FALSE;
  const void *x = r->features;
  for (int j = 0; j < r->n_convs; j++) {
    void *y = r->conv_out[j % 2];
    if (!cuda_conv_forward (s, &r->convs[j], x, rows, r->pooled, r->pooled,
            y, NULL, error))
      return FALSE;
    x = y;
  }
  for (int j = 0; j < r->n_fcs; j++) {
    void *y = r->hidden[j % 2];
    if (!linear_relu (s, &r->fcs[j], x, rows, y, "a box head fully connected "
            "layer", error))
      return FALSE;
    x = y;
  }
  if (!linear_gemm (s, &r->predictor, x, rows, r->predictions,
          "box predictor", error))
    return FALSE;
  size_t n = (size_t) rows * r->predictor.out_features;
  bias_kernel<float> <<<grid_for (n), THREADS, 0, s->stream>>>
      (r->predictions, r->predictor.bias, r->predictor.out_features, n,
      false, r->predictions);
  return CUDA_CHECK_LAUNCH ("box predictor bias", error);
}

/* ---- detection candidates ----------------------------------------------- */

typedef struct {
  float weights[4];   /* BoxCoder (wx, wy, ww, wh) */
  float clip;         /* bbox_xform_clip */
  float width, height; /* resized image */
  float min_size;
  float score;        /* threshold, strict */
} TorchvisionDetect;

typedef struct {
  float std_dev[4];   /* BBOX_STD_DEV */
  float window[4];    /* mrcnn_norm_window */
  float score;        /* DETECTION_MIN_CONFIDENCE, 0: off */
} MatterportDetect;

/* mrcnn_decode_box then mrcnn_clip_box */
static __device__ float4
torchvision_decode (const float *box, const float *d,
    const TorchvisionDetect &p)
{
  float w = box[2] - box[0];
  float h = box[3] - box[1];
  float cx = __fadd_rn (box[0], __fmul_rn (0.5f, w));
  float cy = __fadd_rn (box[1], __fmul_rn (0.5f, h));
  float dx = d[0] / p.weights[0];
  float dy = d[1] / p.weights[1];
  float dw = MIN (d[2] / p.weights[2], p.clip);
  float dh = MIN (d[3] / p.weights[3], p.clip);
  float pcx = __fadd_rn (__fmul_rn (dx, w), cx);
  float pcy = __fadd_rn (__fmul_rn (dy, h), cy);
  float pw = __fmul_rn (expf (dw), w);
  float ph = __fmul_rn (expf (dh), h);
  float4 out;
  out.x = __fsub_rn (pcx, __fmul_rn (0.5f, pw));
  out.y = __fsub_rn (pcy, __fmul_rn (0.5f, ph));
  out.z = __fadd_rn (pcx, __fmul_rn (0.5f, pw));
  out.w = __fadd_rn (pcy, __fmul_rn (0.5f, ph));
  out.x = CLAMP (out.x, 0.0f, p.width);
  out.y = CLAMP (out.y, 0.0f, p.height);
  out.z = CLAMP (out.z, 0.0f, p.width);
  out.w = CLAMP (out.w, 0.0f, p.height);
  return out;
}

/* mrcnn_decode_box_matterport then mrcnn_clip_box_window */
static __device__ float4
matterport_decode (const float *box, const float *d, const MatterportDetect &p)
{
  float h = box[2] - box[0];
  float w = box[3] - box[1];
  float cy = __fadd_rn (box[0], __fmul_rn (0.5f, h));
  float cx = __fadd_rn (box[1], __fmul_rn (0.5f, w));
  cy = __fadd_rn (cy, __fmul_rn (__fmul_rn (d[0], p.std_dev[0]), h));
  cx = __fadd_rn (cx, __fmul_rn (__fmul_rn (d[1], p.std_dev[1]), w));
  h = __fmul_rn (h, expf (__fmul_rn (d[2], p.std_dev[2])));
  w = __fmul_rn (w, expf (__fmul_rn (d[3], p.std_dev[3])));
  float v[4];
  v[0] = __fsub_rn (cy, __fmul_rn (0.5f, h));
  v[1] = __fsub_rn (cx, __fmul_rn (0.5f, w));
  v[2] = __fadd_rn (v[0], h);
  v[3] = __fadd_rn (v[1], w);
  for (int k = 0; k < 4; k++)
    v[k] = MAX (MIN (v[k], p.window[2 + k % 2]), p.window[k % 2]);
  return make_float4 (v[0], v[1], v[2], v[3]);
}

static __device__ void
write_candidate (int slot, bool valid, float4 box, float score, int label,
    int classes, float *cand_boxes, float *cand_scores, int *cand_labels,
    int *cand_slot, int *class_count)
{
  ((float4 *) cand_boxes)[slot] = box;
  cand_scores[slot] = valid ? score : -INFINITY;
  cand_labels[slot] = valid ? label : classes;
  cand_slot[slot] = slot;
  if (valid)
    atomicAdd (&class_count[label], 1);
}

/* The row's softmax numerators into exps[] and their sum, as cpu_detect
 * and cpu_detect_matterport: the max and the sum in class order. */
static __device__ float
row_softmax (const float *logits, int K, float *exps)
{
  __shared__ float row_max, row_sum;
  if (threadIdx.x == 0) {
    float top = logits[0];
    for (int k = 1; k < K; k++)
      top = MAX (top, logits[k]);
    row_max = top;
  }
  __syncthreads ();
  for (int k = threadIdx.x; k < K; k += blockDim.x)
    exps[k] = expf (logits[k] - row_max);
  __syncthreads ();
  if (threadIdx.x == 0) {
    float sum = 0;
    for (int k = 0; k < K; k++)
      sum += exps[k];
    row_sum = sum;
  }
  __syncthreads ();
  return row_sum;
}

/* cpu_detect's candidates: one block per proposal, a slot per class > 0
 * (proposal-major, as torchvision flattens them). */
static __global__ void
torchvision_candidates_kernel (const float *predictions,
    const float *proposals, const int *n_proposals, int K,
    TorchvisionDetect p, float *cand_boxes, float *cand_scores,
    int *cand_labels, int *cand_slot, int *class_count)
{
  extern __shared__ float exps[];
  int row = blockIdx.x;
  const float *logits = predictions + (size_t) row * 5 * K;
  const float *deltas = logits + K;
  bool live = row < *n_proposals;
  float sum = live ? row_softmax (logits, K, exps) : 1.0f;
  for (int k = 1 + threadIdx.x; k < K; k += blockDim.x) {
    int slot = row * (K - 1) + k - 1;
    float score = live ? exps[k] / sum : 0.0f;
    bool valid = live && score > p.score;
    float4 box = make_float4 (0, 0, 0, 0);
    if (valid) {
      box = torchvision_decode (proposals + 4 * (size_t) row,
          deltas + 4 * (size_t) k, p);
      if (!(box.z - box.x >= p.min_size && box.w - box.y >= p.min_size))
        valid = false;
    }
    write_candidate (slot, valid, box, score, k, K, cand_boxes, cand_scores,
        cand_labels, cand_slot, class_count);
  }
}

/* cpu_detect_matterport's candidates: one per ROI, every ROI (zero-padded
 * ones included), its argmax class. */
static __global__ void
matterport_candidates_kernel (const float *predictions,
    const float *proposals, int K, MatterportDetect p, float *cand_boxes,
    float *cand_scores, int *cand_labels, int *cand_slot, int *class_count)
{
  extern __shared__ float exps[];
  int row = blockIdx.x;
  const float *logits = predictions + (size_t) row * 5 * K;
  const float *deltas = logits + K;
  float sum = row_softmax (logits, K, exps);
  if (threadIdx.x != 0)
    return;
  /* argmax of the probabilities, ties to the first */
  int best = 0;
  float score = exps[0] / sum;
  for (int k = 1; k < K; k++) {
    float prob = exps[k] / sum;
    if (prob > score) {
      score = prob;
      best = k;
    }
  }
  bool valid = !(best == 0 || (p.score > 0 && score < p.score));
  float4 box = make_float4 (0, 0, 0, 0);
  if (valid)
    box = matterport_decode (proposals + 4 * (size_t) row,
        deltas + 4 * (size_t) best, p);
  write_candidate (row, valid, box, score, best, K, cand_boxes, cand_scores,
      cand_labels, cand_slot, class_count);
}

/* ---- ordering and per-class NMS ------------------------------------------ */

static __global__ void
gather_labels_kernel (const int *order, const int *cand_labels, int n,
    int *order_labels)
{
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n;
      i += gridDim.x * blockDim.x)
    order_labels[i] = cand_labels[order[i]];
}

/* Each class's first index in by_class; class_start[K] counts them all
 * (labels are 1 .. K - 1, class 0 has none). */
static __global__ void
class_start_kernel (const int *class_count, int K, int *class_start)
{
  int start = 0;
  for (int k = 0; k < K; k++) {
    class_start[k] = start;
    start += class_count[k];
  }
  class_start[K] = start;
}

/* mrcnn_nms's suppression test: IoU(kept a, later b) > threshold */
static __device__ bool
torchvision_suppresses (float4 a, float4 b, float threshold)
{
  float area_a = __fmul_rn (a.z - a.x, a.w - a.y);
  float area_b = __fmul_rn (b.z - b.x, b.w - b.y);
  float w = MAX (0.0f, MIN (a.z, b.z) - MAX (a.x, b.x));
  float h = MAX (0.0f, MIN (a.w, b.w) - MAX (a.y, b.y));
  float inter = __fmul_rn (w, h);
  return inter / __fsub_rn (__fadd_rn (area_a, area_b), inter) > threshold;
}

/* mrcnn_tf_iou(kept a, later b) > threshold */
static __device__ bool
matterport_suppresses (float4 a, float4 b, float threshold)
{
  float ay1 = MIN (a.x, a.z), ax1 = MIN (a.y, a.w);
  float ay2 = MAX (a.x, a.z), ax2 = MAX (a.y, a.w);
  float by1 = MIN (b.x, b.z), bx1 = MIN (b.y, b.w);
  float by2 = MAX (b.x, b.z), bx2 = MAX (b.y, b.w);
  float area_a = __fmul_rn (ay2 - ay1, ax2 - ax1);
  float area_b = __fmul_rn (by2 - by1, bx2 - bx1);
  if (area_a <= 0 || area_b <= 0)
    return 0.0f > threshold;
  float iy1 = MAX (ay1, by1), ix1 = MAX (ax1, bx1);
  float iy2 = MIN (ay2, by2), ix2 = MIN (ax2, bx2);
  float inter = __fmul_rn (MAX (iy2 - iy1, 0.0f), MAX (ix2 - ix1, 0.0f));
  return inter / __fsub_rn (__fadd_rn (area_a, area_b), inter) > threshold;
}

/* The suppression bits of one 64 x 64 tile of one class: row i of the
 * class's score-ordered group gets bit j for each later box j of the tile
 * it suppresses.  Grid: (class - 1, row tile, column tile); tiles left of
 * the diagonal are never read. */
template <bool MATTERPORT>
static __global__ void
nms_mask_kernel (const float *cand_boxes, const int *by_class,
    const int *class_count, const int *class_start, int words,
    float threshold, uint64_t *mask)
{
  __shared__ float4 col_boxes[NMS_BLOCK];
  int k = blockIdx.x + 1;
  int g = class_count[k], first = class_start[k];
  int row0 = blockIdx.y * NMS_BLOCK, col0 = blockIdx.z * NMS_BLOCK;
  if (blockIdx.z < blockIdx.y || row0 >= g || col0 >= g)
    return;
  int rows = MIN (g - row0, NMS_BLOCK), cols = MIN (g - col0, NMS_BLOCK);
  const float4 *boxes = (const float4 *) cand_boxes;
  if ((int) threadIdx.x < cols)
    col_boxes[threadIdx.x] = boxes[by_class[first + col0 + threadIdx.x]];
  __syncthreads ();
  if ((int) threadIdx.x >= rows)
    return;
  int i = row0 + threadIdx.x;
  float4 a = boxes[by_class[first + i]];
  uint64_t bits = 0;
  for (int j = blockIdx.z == blockIdx.y ? threadIdx.x + 1 : 0; j < cols; j++) {
    bool suppressed = MATTERPORT ? matterport_suppresses (a, col_boxes[j],
        threshold) : torchvision_suppresses (a, col_boxes[j], threshold);
    if (suppressed)
      bits |= (uint64_t) 1 << j;
  }
  mask[(size_t) (first + i) * words + blockIdx.z] = bits;
}

/* The greedy pass of mrcnn_nms / mrcnn_tf_nms over one class, one warp
 * per class: visit the group in score order, keep a box unless an earlier
 * kept one suppressed it, stop after max_output kept. */
static __global__ void
nms_reduce_kernel (const int *by_class, const int *class_count,
    const int *class_start, const uint64_t *mask, int words, int max_output,
    uint8_t *kept)
{
  extern __shared__ uint64_t removed[];
  int k = blockIdx.x + 1, lane = threadIdx.x;
  int g = class_count[k], first = class_start[k];
  int group_words = (g + NMS_BLOCK - 1) / NMS_BLOCK;
  for (int w = lane; w < group_words; w += warpSize)
    removed[w] = 0;
  __syncwarp ();
  int n_keep = 0;
  for (int i = 0; i < g && n_keep < max_output; i++) {
    int word = i / NMS_BLOCK;
    bool is_removed = (removed[word] >> (i % NMS_BLOCK)) & 1;
    __syncwarp ();
    if (is_removed)
      continue;
    n_keep++;
    if (lane == 0)
      kept[by_class[first + i]] = 1;
    const uint64_t *row = mask + (size_t) (first + i) * words;
    for (int w = word + lane; w < group_words; w += warpSize)
      removed[w] |= row[w];
    __syncwarp ();
  }
}

/* The kept candidates in score order (ties by slot), of the classes
 * class_keep keeps (NULL: all), the first max_detections of them into
 * s->det_*; rows past them zeroed. */
static __global__ void
select_kernel (const int *order, const int *class_start, int K,
    const uint8_t *kept, const uint8_t *class_keep, const float *cand_boxes,
    const float *cand_scores,
    const int *cand_labels, int max_detections, float *det_boxes,
    float *det_scores, int *det_labels, int *n_detections)
{
  typedef cub::BlockScan<int, SELECT_THREADS> Scan;
  __shared__ typename Scan::TempStorage scan_storage;
  int n = class_start[K];
  int base = 0;
  for (int i0 = 0; i0 < n && base < max_detections; i0 += SELECT_THREADS) {
    int i = i0 + threadIdx.x;
    int slot = i < n ? order[i] : 0;
    int flag = i < n && kept[slot]
        && (!class_keep || class_keep[cand_labels[slot]]);
    int pos, total;
    Scan (scan_storage).ExclusiveSum (flag, pos, total);
    pos += base;
    if (flag && pos < max_detections) {
      ((float4 *) det_boxes)[pos] = ((const float4 *) cand_boxes)[slot];
      det_scores[pos] = cand_scores[slot];
      det_labels[pos] = cand_labels[slot];
    }
    base += total;
    __syncthreads ();
  }
  int count = MIN (base, max_detections);
  for (int d = count + threadIdx.x; d < MRCNN_MAX_DETECTIONS;
      d += SELECT_THREADS) {
    ((float4 *) det_boxes)[d] = make_float4 (0, 0, 0, 0);
    det_scores[d] = 0;
    det_labels[d] = 0;
  }
  if (threadIdx.x == 0)
    *n_detections = count;
}

/* ---- entry points -------------------------------------------------------- */

/* Uploads the box head's convs and fully connected layers. */
static gboolean
box_layers_create (CudaState *s, GError **error)
{
  const MrcnnModel *m = s->model;
  CudaRoiHeads *r = &s->heads;
  int P = r->pooled;
  r->n_convs = m->n_box_convs;
  r->n_fcs = m->n_box_fcs;
  for (int j = 0; j < m->n_box_convs; j++) {
    char *name = g_strdup_printf ("the box head's conv %d", j + 1);
    gboolean ok = cuda_conv_init (s, &r->convs[j], &m->box_convs[j], name,
        m->box_convs[j].in_channels, CUDA_CONV_BIAS_RELU, s->max_proposals,
        P, P, error);
    g_free (name);
    if (!ok)
      return FALSE;
  }
  for (int j = 0; j < m->n_box_fcs; j++) {
    const MrcnnLinear *fc = &m->box_fcs[j];
    float *weight = NULL;
    if (j == 0 && m->n_box_convs > 0) {
      /* columns from torch's (channel, y, x) flatten to NHWC's (y, x,
       * channel) */
      int C = m->box_convs[m->n_box_convs - 1].out_channels;
      weight = g_try_new (float, (size_t) fc->in_features * fc->out_features);
      if (!weight) {
        g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND, "out of "
            "memory: the box head's first fully connected layer needs %zu "
            "MiB", (size_t) fc->in_features * fc->out_features
            * sizeof (float) >> 20);
        return FALSE;
      }
      for (int o = 0; o < fc->out_features; o++)
        for (int c = 0; c < C; c++)
          for (int p = 0; p < P * P; p++)
            weight[(size_t) o * fc->in_features + p * C + c] =
                fc->weight[(size_t) o * fc->in_features + c * P * P + p];
    }
    char *name = g_strdup_printf ("the box head's fully connected layer %d",
        j + 1);
    gboolean ok = linear_create (s, &r->fcs[j], weight ? weight : fc->weight,
        fc->bias, fc->in_features, fc->out_features, name, error);
    g_free (name);
    g_free (weight);
    if (!ok)
      return FALSE;
  }
  return TRUE;
}

gboolean
cuda_roi_heads_create (CudaState *s, GError **error)
{
  const MrcnnModel *m = s->model;
  CudaRoiHeads *r = &s->heads;
  gboolean matterport = m->config.variant == MRCNN_VARIANT_MATTERPORT;
  int K = m->num_classes, rows = s->max_proposals;
  int P = m->config.box_roi_size;
  r->classes = K;
  r->pooled = P;
  /* slots are ints (CUB's counts too), and the NMS walk keeps a bit per
   * box of a class (at most one per proposal) in 48 KiB of shared memory */
  if ((size_t) rows * (K - 1) > INT_MAX
      || (size_t) (rows + NMS_BLOCK - 1) / NMS_BLOCK * sizeof (uint64_t)
      > 48 * 1024) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
        "%d proposals of %d classes are more than the CUDA detection stage "
        "handles; lower the post-NMS proposal count", rows, K);
    return FALSE;
  }

  /* cls_score and bbox_pred read the same input: one GEMM for both */
  int in = m->cls_score.in_features;
  size_t pred_out = (size_t) 5 * K;
  float *pred_weight = g_try_new (float, pred_out * in);
  float *pred_bias = g_try_new (float, pred_out);
  if (!pred_weight || !pred_bias) {
    g_free (pred_weight);
    g_free (pred_bias);
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
        "out of memory: the box predictor needs %zu MiB",
        pred_out * in * sizeof (float) >> 20);
    return FALSE;
  }
  memcpy (pred_weight, m->cls_score.weight, sizeof (float) * K * in);
  memcpy (pred_weight + (size_t) K * in, m->bbox_pred.weight,
      sizeof (float) * 4 * K * in);
  memcpy (pred_bias, m->cls_score.bias, sizeof (float) * K);
  memcpy (pred_bias + K, m->bbox_pred.bias, sizeof (float) * 4 * K);
  gboolean ok = linear_create (s, &r->predictor, pred_weight, pred_bias, in,
      (int) pred_out, "the box predictor", error);
  g_free (pred_weight);
  g_free (pred_bias);
  if (!ok || !box_layers_create (s, error))
    return FALSE;

  /* one slot per (proposal, class > 0), or per proposal for matterport;
   * a class never has more boxes than there are proposals */
  r->n_slots = matterport ? rows : rows * (K - 1);
  r->nms_words = (rows + NMS_BLOCK - 1) / NMS_BLOCK;
  r->label_bits = 1;
  while ((1 << r->label_bits) <= K)
    r->label_bits++;
  size_t slots = r->n_slots, act = s->act_size;
  size_t hidden = 0, conv_width = 0;
  for (int j = 0; j < m->n_box_fcs; j++)
    hidden = MAX (hidden, (size_t) m->box_fcs[j].out_features);
  for (int j = 0; j < m->n_box_convs; j++)
    conv_width = MAX (conv_width, (size_t) m->box_convs[j].out_channels);
  size_t conv_out = (size_t) rows * conv_width * P * P * act;

#define ALLOC(ptr, bytes, what) \
  cuda_alloc ((void **) &(ptr), (bytes), what, error)
  if (!ALLOC (r->features, (size_t) rows * m->fpn_channels * P * P * act,
          "the box head's pooled features")
      || !ALLOC (r->gemm_out, (size_t) rows * hidden * sizeof (float),
          "the box head's GEMM output")
      || (conv_out && !ALLOC (r->conv_out[0], conv_out,
              "the box head's conv outputs"))
      || (conv_out && m->n_box_convs > 1 && !ALLOC (r->conv_out[1],
              conv_out, "the box head's conv outputs"))
      || !ALLOC (r->hidden[0], (size_t) rows * hidden * act,
          "the box head's outputs")
      || (m->n_box_fcs > 1 && !ALLOC (r->hidden[1], (size_t) rows * hidden
              * act, "the box head's outputs"))
      || !ALLOC (r->predictions, (size_t) rows * pred_out * sizeof (float),
          "the box predictions")
      || !ALLOC (r->cand_boxes, slots * 4 * sizeof (float),
          "the detection candidates")
      || !ALLOC (r->cand_scores, slots * sizeof (float),
          "the detection candidates")
      || !ALLOC (r->cand_labels, slots * sizeof (int),
          "the detection candidates")
      || !ALLOC (r->cand_slot, slots * sizeof (int),
          "the detection candidates")
      || !ALLOC (r->sorted_scores, slots * sizeof (float),
          "the detection sort")
      || !ALLOC (r->order, slots * sizeof (int), "the detection sort")
      || !ALLOC (r->order_labels, slots * sizeof (int), "the detection sort")
      || !ALLOC (r->grouped_labels, slots * sizeof (int),
          "the detection sort")
      || !ALLOC (r->by_class, slots * sizeof (int), "the detection sort")
      || !ALLOC (r->class_count, (size_t) (K + 1) * sizeof (int),
          "the detection class counts")
      || !ALLOC (r->class_start, (size_t) (K + 1) * sizeof (int),
          "the detection class counts")
      || !ALLOC (r->class_keep, (size_t) K, "the detection class filter")
      || !ALLOC (r->nms_mask, slots * r->nms_words * sizeof (uint64_t),
          "the detection NMS mask")
      || !ALLOC (r->kept, slots, "the detection NMS flags")
      || !ALLOC (s->det_boxes, MRCNN_MAX_DETECTIONS * 4 * sizeof (float),
          "the detections")
      || !ALLOC (s->det_scores, MRCNN_MAX_DETECTIONS * sizeof (float),
          "the detections")
      || !ALLOC (s->det_labels, MRCNN_MAX_DETECTIONS * sizeof (int),
          "the detections")
      || !ALLOC (s->n_detections, sizeof (int), "the detection count"))
    return FALSE;

  /* CUB's temporary storage for both sorts, sized without data */
  size_t by_score = 0, by_label = 0;
  if (!cuda_check (cub::DeviceRadixSort::SortPairsDescending (NULL,
              by_score, (const float *) NULL, (float *) NULL,
              (const int *) NULL, (int *) NULL, r->n_slots, 0,
              (int) sizeof (float) * 8, s->stream),
          "sizing the detection sort", error)
      || !cuda_check (cub::DeviceRadixSort::SortPairs (NULL, by_label,
              (const int *) NULL, (int *) NULL, (const int *) NULL,
              (int *) NULL, r->n_slots, 0, r->label_bits, s->stream),
          "sizing the detection sort", error))
    return FALSE;
  r->sort_temp_size = MAX (by_score, by_label);
  if (!ALLOC (r->sort_temp, r->sort_temp_size, "the detection sort"))
    return FALSE;
#undef ALLOC

  /* no frame yet: no detections */
  return cuda_check (cudaMemsetAsync (s->n_detections, 0, sizeof (int),
          s->stream), "clearing the detection count", error);
}

void
cuda_roi_heads_destroy (CudaState *s)
{
  CudaRoiHeads *r = &s->heads;
  for (int j = 0; j < MRCNN_MAX_BOX_CONVS; j++)
    cuda_conv_clear (&r->convs[j]);
  for (int j = 0; j < MRCNN_MAX_BOX_FCS; j++)
    linear_clear (&r->fcs[j]);
  linear_clear (&r->predictor);
  void *buffers[] = {
    r->features, r->conv_out[0], r->conv_out[1], r->gemm_out, r->hidden[0],
    r->hidden[1], r->predictions,
    r->cand_boxes, r->cand_scores, r->cand_labels, r->cand_slot,
    r->sorted_scores, r->order, r->order_labels, r->grouped_labels,
    r->by_class, r->class_count, r->class_start, r->nms_mask, r->kept,
    r->class_keep,
    r->sort_temp, s->det_boxes, s->det_scores, s->det_labels,
    s->n_detections,
  };
  for (size_t i = 0; i < G_N_ELEMENTS (buffers); i++)
    cudaFree (buffers[i]);
  memset (r, 0, sizeof *r);
  s->det_boxes = NULL;
  s->det_scores = NULL;
  s->det_labels = NULL;
  s->n_detections = NULL;
}

/* Candidates of either variant into their slots, and the class counts. */
static gboolean
candidates (CudaState *s, GError **error)
{
  const MrcnnModel *m = s->model;
  const MrcnnConfig *c = &m->config;
  CudaRoiHeads *r = &s->heads;
  int K = r->classes;
  size_t smem = sizeof (float) * K;
  if (!cuda_check (cudaMemsetAsync (r->class_count, 0,
              sizeof (int) * (K + 1), s->stream),
          "clearing the detection class counts", error))
    return FALSE;
  if (c->variant == MRCNN_VARIANT_MATTERPORT) {
    MatterportDetect p;
    memcpy (p.std_dev, c->bbox_std, sizeof p.std_dev);
    mrcnn_norm_window (&s->geometry, p.window);
    p.score = s->thresholds.score;
    matterport_candidates_kernel <<<s->max_proposals, CAND_THREADS, smem,
        s->stream>>> (r->predictions, s->proposals, K, p, r->cand_boxes,
        r->cand_scores, r->cand_labels, r->cand_slot, r->class_count);
  } else {
    TorchvisionDetect p;
    memcpy (p.weights, c->box_coder_weights, sizeof p.weights);
    p.clip = c->bbox_xform_clip;
    p.width = (float) s->geometry.width;
    p.height = (float) s->geometry.height;
    p.min_size = c->box_min_size;
    p.score = s->thresholds.score;
    torchvision_candidates_kernel <<<s->max_proposals, CAND_THREADS, smem,
        s->stream>>> (r->predictions, s->proposals, s->n_proposals, K, p,
        r->cand_boxes, r->cand_scores, r->cand_labels, r->cand_slot,
        r->class_count);
  }
  return CUDA_CHECK_LAUNCH ("detection candidates", error);
}

/* Score order, then the same order regrouped by class: both radix sorts
 * are stable, so ties stay in slot order as mrcnn_argsort_desc and the
 * CPU's counting sort leave them. */
static gboolean
sort_candidates (CudaState *s, GError **error)
{
  CudaRoiHeads *r = &s->heads;
  size_t temp = r->sort_temp_size;
  if (!cuda_check (cub::DeviceRadixSort::SortPairsDescending (r->sort_temp,
              temp, r->cand_scores, r->sorted_scores, r->cand_slot, r->order,
              r->n_slots, 0, (int) sizeof (float) * 8, s->stream),
          "sorting the detections by score", error))
    return FALSE;
  gather_labels_kernel <<<grid_for (r->n_slots), THREADS, 0, s->stream>>>
      (r->order, r->cand_labels, r->n_slots, r->order_labels);
  if (!CUDA_CHECK_LAUNCH ("gathering the detection labels", error))
    return FALSE;
  temp = r->sort_temp_size;
  if (!cuda_check (cub::DeviceRadixSort::SortPairs (r->sort_temp, temp,
              r->order_labels, r->grouped_labels, r->order, r->by_class,
              r->n_slots, 0, r->label_bits, s->stream),
          "grouping the detections by class", error))
    return FALSE;
  class_start_kernel <<<1, 1, 0, s->stream>>> (r->class_count, r->classes,
      r->class_start);
  return CUDA_CHECK_LAUNCH ("detection class offsets", error);
}

static gboolean
per_class_nms (CudaState *s, GError **error)
{
  CudaRoiHeads *r = &s->heads;
  gboolean matterport = s->model->config.variant == MRCNN_VARIANT_MATTERPORT;
  int K = r->classes;
  float threshold = s->thresholds.nms;
  /* torchvision's batched NMS keeps any number per class, matterport's
   * TF NMS at most DETECTION_MAX_INSTANCES */
  int max_output = matterport
      ? CLAMP (s->thresholds.max_detections, 0, MRCNN_MAX_DETECTIONS)
      : INT_MAX;
  if (!cuda_check (cudaMemsetAsync (r->kept, 0, r->n_slots, s->stream),
          "clearing the NMS flags", error))
    return FALSE;
  dim3 grid (K - 1, r->nms_words, r->nms_words);
  if (matterport)
    nms_mask_kernel<true> <<<grid, NMS_BLOCK, 0, s->stream>>>
        (r->cand_boxes, r->by_class, r->class_count, r->class_start,
        r->nms_words, threshold, r->nms_mask);
  else
    nms_mask_kernel<false> <<<grid, NMS_BLOCK, 0, s->stream>>>
        (r->cand_boxes, r->by_class, r->class_count, r->class_start,
        r->nms_words, threshold, r->nms_mask);
  if (!CUDA_CHECK_LAUNCH ("detection NMS mask", error))
    return FALSE;
  nms_reduce_kernel <<<K - 1, 32, sizeof (uint64_t) * r->nms_words,
      s->stream>>> (r->by_class, r->class_count, r->class_start, r->nms_mask,
      r->nms_words, max_output, r->kept);
  return CUDA_CHECK_LAUNCH ("detection NMS", error);
}

gboolean
cuda_detect_run (CudaState *s, GError **error)
{
  CudaRoiHeads *r = &s->heads;
  if (!box_head (s, error) || !candidates (s, error)
      || !sort_candidates (s, error) || !per_class_nms (s, error))
    return FALSE;
  int max_detections = CLAMP (s->thresholds.max_detections, 0,
      MRCNN_MAX_DETECTIONS);
  const uint8_t *keep = s->thresholds.keep_class;
  if (keep && !cuda_check (cudaMemcpyAsync (r->class_keep, keep, r->classes,
              cudaMemcpyHostToDevice, s->stream), "uploading the class filter",
          error))
    return FALSE;
  select_kernel <<<1, SELECT_THREADS, 0, s->stream>>> (r->order,
      r->class_start, r->classes, r->kept, keep ? r->class_keep : NULL,
      r->cand_boxes, r->cand_scores,
      r->cand_labels, max_detections, s->det_boxes, s->det_scores,
      s->det_labels, s->n_detections);
  return CUDA_CHECK_LAUNCH ("selecting the detections", error);
}
