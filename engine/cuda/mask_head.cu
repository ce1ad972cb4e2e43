/* The mask head on the detections (MODEL_SPEC A.9, B.9; cpu_masks in
 * engine/cpu/roi_heads.c) and the paste of the masks at the original
 * image's resolution (B.10, A.10; engine/cpu/paste.c and
 * engine/cpu/paste_matterport.c), on the device; only the boxes and the
 * box-sized masks come back to the host.
 *
 * Where the CPU's result depends on the rounding of each float operation
 * (boxes, paste rectangles, resize taps and weights), products go through
 * __fmul_rn/__dmul_rn so that nvcc cannot contract them with the following
 * addition into an FMA: the same roundings as the C code, in its order. */
#include "cuda_backend.h"

#include <cub/block/block_scan.cuh>
#include <stddef.h>
#include <string.h>

/* Detections per chunk of the mask head: the default max-detections (100)
 * in one chunk, and a workspace of about 150 MiB in fp32 */
#define MASK_CHUNK 128
#define MAX_CHUNKS ((MRCNN_MAX_DETECTIONS + MASK_CHUNK - 1) / MASK_CHUNK)
/* warps per block of the logits kernel, one warp per 14x14 pixel */
#define LOGITS_WARPS 8
/* one block lays out every detection's mask: one thread per detection */
#define LAYOUT_THREADS 1024
/* paste: a warp per mask row, PASTE_ROWS rows per block, at most
 * PASTE_MAX_BLOCKS blocks per detection */
#define PASTE_ROWS 8
#define PASTE_MAX_BLOCKS 32

static_assert (MAX_CHUNKS <= 32, "chunk counts are written by one warp");
static_assert (MRCNN_MAX_DETECTIONS <= LAYOUT_THREADS,
    "the layout kernel gives each detection a thread");

/* Where one mask lands: the box its probabilities are resized to, and the
 * part of it inside the image (the CPU's PasteBox). */
struct _CudaPasteBox {
  long long x1, y1;         /* the box's corner in the original image */
  int box_w, box_h;         /* the size the mask is resized to */
  int x0, y0, width, height; /* the rectangle kept */
  unsigned long long offset; /* of its first pixel in the packed masks */
  int source;               /* its row of s->mask_probs */
};

typedef struct {
  float box[4];
  float score;
  int label_id;
  int x, y, width, height;
  unsigned long long offset;
} CudaPastedDetection;

struct _CudaPasteHeader {
  unsigned long long pixels; /* of all the masks */
  int count;
  CudaPastedDetection det[MRCNN_MAX_DETECTIONS];
};

/* ---- mask head ------------------------------------------------------- */

/* Valid rows of each chunk, from the device's detection count. */
__global__ void
chunk_counts_kernel (const int *n_detections, int chunk, int n_chunks,
    int *counts)
{
  int k = threadIdx.x;
  if (k < n_chunks)
    counts[k] = min (max (*n_detections - k * chunk, 0), chunk);
}

/* The deconv's bias and ReLU, the 1x1 logits conv of the detection's own
 * class and the sigmoid (cpu mask_chunk), one warp per pixel (i, j) of the
 * P x P grid.  Its GEMM row holds the deconv outputs [o][a][b], so lane l
 * only ever sees tap l % 4: the lanes of a tap are summed, and lanes 0..3
 * write output pixels (2i + a, 2j + b). */
__global__ void
mask_logits_kernel (const float *gemm, const float *deconv_bias,
    const float *logits_weight, const float *logits_bias, const int *labels,
    const int *n_detections, int first, int n_pixels, int P, int cout,
    float *probs)
{
  int warp = (int) ((blockIdx.x * blockDim.x + threadIdx.x) / 32);
  int lane = threadIdx.x % 32;
  if (warp >= n_pixels)
    return;
  int plane = P * P;
  int d = first + warp / plane, pixel = warp % plane;
  if (d >= *n_detections)
    return;
  int label = labels[d];
  const float *wl = logits_weight + (size_t) label * cout;
  const float *row = gemm + (size_t) warp * 4 * cout;
  float sum = 0.0f;
  for (int q = lane; q < 4 * cout; q += 32) {
    int o = q / 4;
    float v = row[q] + deconv_bias[o];
    sum += wl[o] * (v > 0 ? v : 0);
  }
  for (int offset = 16; offset >= 4; offset /= 2)
    sum += __shfl_xor_sync (0xffffffffu, sum, offset);
  if (lane < 4) {
    int M = 2 * P, a = lane / 2, b = lane % 2;
    int y = 2 * (pixel / P) + a, x = 2 * (pixel % P) + b;
    float v = logits_bias[label] + sum;
    /* as cpu: a NaN logit gives probability 0 */
    probs[(size_t) d * M * M + y * M + x] = isnan (v) ? 0.0f
        : 1.0f / (1.0f + expf (-v));
  }
}

/* Detections [first, first + n) of the rows, counted by chunk k. */
static gboolean
mask_chunk (CudaState *s, int k, int first, int n, GError **error)
{
  CudaMaskHead *mh = &s->masks;
  int P = s->model->config.mask_roi_size;
  void *x = mh->features_a, *y = mh->features_b;
  if (!cuda_roi_align (s, s->det_boxes + 4 * first, mh->chunk_counts + k, n,
          P, TRUE, x, error))
    return FALSE;
  for (int j = 0; j < mh->n_layers; j++) {
    if (!cuda_conv_forward (s, &mh->layers[j], x, n, P, P, y, NULL, error))
      return FALSE;
    void *tmp = x;
    x = y;
    y = tmp;
  }

  /* deconv 2x2 stride 2 as one GEMM over the chunk's pixels:
   * gemm[pixel][o][a][b] = sum_c x[pixel][c] W[o][a][b][c] (MrcnnDeconv) */
  const float one = 1.0f, zero = 0.0f;
  int q = 4 * mh->deconv_out, n_pixels = n * P * P;
  if (!cublas_check (cublasGemmEx (s->cublas, CUBLAS_OP_T, CUBLAS_OP_N, q,
              n_pixels, mh->deconv_in, &one, mh->deconv_weight, s->act_cuda,
              mh->deconv_in, x, s->act_cuda, mh->deconv_in, &zero,
              mh->deconv_gemm, CUDA_R_32F, q, CUBLAS_COMPUTE_32F,
              CUBLAS_GEMM_DEFAULT), "cublasGemmEx (mask deconv)", error))
    return FALSE;

  int blocks = (n_pixels + LOGITS_WARPS - 1) / LOGITS_WARPS;
  mask_logits_kernel <<< blocks, 32 * LOGITS_WARPS, 0, s->stream >>>
      (mh->deconv_gemm, mh->deconv_bias, mh->logits_weight, mh->logits_bias,
      s->det_labels, s->n_detections, first, n_pixels, P, mh->deconv_out,
      s->mask_probs);
  return CUDA_CHECK_LAUNCH ("mask logits", error);
}

/* The rows the heads ran on: max-detections, a host value. */
static int
detection_rows (const CudaState *s)
{
  return CLAMP (s->thresholds.max_detections, 0, MRCNN_MAX_DETECTIONS);
}

gboolean
cuda_masks_run (CudaState *s, GError **error)
{
  CudaMaskHead *mh = &s->masks;
  int rows = detection_rows (s);
  if (rows == 0)
    return TRUE;
  int n_chunks = (rows + mh->chunk - 1) / mh->chunk;
  chunk_counts_kernel <<< 1, 32, 0, s->stream >>> (s->n_detections,
      mh->chunk, n_chunks, mh->chunk_counts);
  if (!CUDA_CHECK_LAUNCH ("mask chunk counts", error))
    return FALSE;
  for (int k = 0; k < n_chunks; k++) {
    int first = k * mh->chunk;
    if (!mask_chunk (s, k, first, MIN (mh->chunk, rows - first), error))
      return FALSE;
  }
  return TRUE;
}

/* ---- paste ----------------------------------------------------------- */

/* Numbers the kept detections and places their masks one after the other
 * (exclusive prefix sums over the block), then writes each kept one's
 * layout; thread 0 writes the count and the total. */
__device__ void
store_layout (bool kept, const CudaPastedDetection & det, CudaPasteBox box,
    CudaPasteBox *paste, CudaPasteHeader *header)
{
  typedef cub::BlockScan<int, LAYOUT_THREADS> IndexScan;
  typedef cub::BlockScan<unsigned long long, LAYOUT_THREADS> OffsetScan;
  __shared__ typename IndexScan::TempStorage index_storage;
  __shared__ typename OffsetScan::TempStorage offset_storage;
  unsigned long long area = kept ? (unsigned long long) box.width * box.height
      : 0;
  int index, count;
  unsigned long long offset, pixels;
  IndexScan (index_storage).ExclusiveSum (kept ? 1 : 0, index, count);
  OffsetScan (offset_storage).ExclusiveSum (area, offset, pixels);
  if (kept) {
    box.offset = offset;
    paste[index] = box;
    header->det[index] = det;
    header->det[index].offset = offset;
  }
  if (threadIdx.x == 0) {
    header->count = count;
    header->pixels = pixels;
  }
}

/* cpu_paste: boxes times the width/height ratios, and paste_box (the box
 * expanded by (M + 2) / M about its centre, truncated to int64, clipped). */
__global__ void __launch_bounds__ (LAYOUT_THREADS)
layout_torchvision_kernel (const float *det_boxes, const float *det_scores,
    const int *det_labels, const int *n_detections, int rows, float ratio_w,
    float ratio_h, float expand, int W0, int H0, CudaPasteBox *paste,
    CudaPasteHeader *header)
{
  int d = threadIdx.x;
  bool valid = d < min (*n_detections, rows);
  CudaPastedDetection det = { };
  CudaPasteBox p = { };
  if (valid) {
    const float *b = det_boxes + 4 * d;
    det.box[0] = __fmul_rn (b[0], ratio_w);
    det.box[1] = __fmul_rn (b[1], ratio_h);
    det.box[2] = __fmul_rn (b[2], ratio_w);
    det.box[3] = __fmul_rn (b[3], ratio_h);
    det.score = det_scores[d];
    det.label_id = det_labels[d];
    float w_half = __fmul_rn (__fmul_rn (det.box[2] - det.box[0], 0.5f),
        expand);
    float h_half = __fmul_rn (__fmul_rn (det.box[3] - det.box[1], 0.5f),
        expand);
    float xc = __fmul_rn (det.box[2] + det.box[0], 0.5f);
    float yc = __fmul_rn (det.box[3] + det.box[1], 0.5f);
    p.x1 = (long long) (xc - w_half);
    p.y1 = (long long) (yc - h_half);
    long long x2 = (long long) (xc + w_half);
    long long y2 = (long long) (yc + h_half);
    p.box_w = (int) max (x2 - p.x1 + 1, 1LL);
    p.box_h = (int) max (y2 - p.y1 + 1, 1LL);
    p.x0 = (int) max (p.x1, 0LL);
    p.y0 = (int) max (p.y1, 0LL);
    int x_end = (int) min (x2 + 1, (long long) W0);
    int y_end = (int) min (y2 + 1, (long long) H0);
    p.width = max (x_end - p.x0, 0);
    p.height = max (y_end - p.y0, 0);
    p.source = d;
    det.x = p.x0;
    det.y = p.y0;
    det.width = p.width;
    det.height = p.height;
  }
  store_layout (valid, det, p, paste, header);
}

/* cpu_paste_matterport: the normalised box mapped onto the window, then to
 * integer pixels of the original image (float32 window arithmetic, float64
 * denormalisation, round half to even, +1 on y2 and x2); zero-area boxes
 * are dropped (A.10). */
__global__ void __launch_bounds__ (LAYOUT_THREADS)
layout_matterport_kernel (const float *det_boxes, const float *det_scores,
    const int *det_labels, const int *n_detections, int rows, float wy1,
    float wx1, float wh, float ww, int W0, int H0, CudaPasteBox *paste,
    CudaPasteHeader *header)
{
  int d = threadIdx.x;
  bool kept = false;
  CudaPastedDetection det = { };
  CudaPasteBox p = { };
  if (d < min (*n_detections, rows)) {
    const float *b = det_boxes + 4 * d;
    float y1 = __fdiv_rn (b[0] - wy1, wh), x1 = __fdiv_rn (b[1] - wx1, ww);
    float y2 = __fdiv_rn (b[2] - wy1, wh), x2 = __fdiv_rn (b[3] - wx1, ww);
    int Y1 = (int) rint (__dmul_rn ((double) y1, (double) (H0 - 1)));
    int X1 = (int) rint (__dmul_rn ((double) x1, (double) (W0 - 1)));
    int Y2 = (int) rint (__dmul_rn ((double) y2, (double) (H0 - 1)) + 1);
    int X2 = (int) rint (__dmul_rn ((double) x2, (double) (W0 - 1)) + 1);
    kept = (long long) (Y2 - Y1) * (X2 - X1) > 0;
    det.box[0] = (float) X1;
    det.box[1] = (float) Y1;
    det.box[2] = (float) X2;
    det.box[3] = (float) Y2;
    det.score = det_scores[d];
    det.label_id = det_labels[d];
    /* the mask is resized to the whole box; the part inside the image is
     * kept */
    p.x1 = X1;
    p.y1 = Y1;
    p.box_w = X2 - X1;
    p.box_h = Y2 - Y1;
    p.x0 = max (X1, 0);
    p.y0 = max (Y1, 0);
    p.width = max (min (X2, W0) - p.x0, 0);
    p.height = max (min (Y2, H0) - p.y0, 0);
    p.source = d;
    det.x = p.x0;
    det.y = p.y0;
    det.width = p.width;
    det.height = p.height;
  }
  store_layout (kept, det, p, paste, header);
}

/* mrcnn_linear_tap: torch's CPU bilinear kernel, the scale in fp32 and the
 * source index in double. */
__device__ void
linear_tap (int in, int out, int d, int *i0, int *i1, float *lambda)
{
  float scale = __fdiv_rn ((float) in, (float) out);
  double src = __dmul_rn ((double) scale, d + 0.5) - 0.5;
  if (src < 0)
    src = 0;
  int i = (int) src;
  *i0 = i;
  *i1 = i + (i < in - 1 ? 1 : 0);
  *lambda = (float) (src - i);
}

/* The M x M probabilities with a one-pixel zero border. */
__device__ float
padded_prob (const float *probs, int M, int y, int x)
{
  if (y == 0 || x == 0 || y == M + 1 || x == M + 1)
    return 0.0f;
  return probs[(y - 1) * M + x - 1];
}

/* paste_masks_in_image: each kept detection's mask, padded to M + 2,
 * resized bilinearly to its box; the rectangle inside the image is written
 * at its offset, soft and thresholded.  Blocks (x: rows of the rectangle,
 * y: detection), a warp per row. */
__global__ void
paste_torchvision_kernel (const CudaPasteBox *paste,
    const CudaPasteHeader *header, const float *mask_probs, int M,
    float threshold, unsigned long long capacity, float *masks,
    uint8_t *binary)
{
  int k = blockIdx.y;
  if (k >= header->count)
    return;
  CudaPasteBox p = paste[k];
  /* past the buffers: cuda_paste_run grows them and pastes again */
  if (p.offset + (unsigned long long) p.width * p.height > capacity)
    return;
  const float *probs = mask_probs + (size_t) p.source * M * M;
  int Mp = M + 2;
  for (int y = blockIdx.x * PASTE_ROWS + threadIdx.y; y < p.height;
      y += gridDim.x * PASTE_ROWS) {
    int y0, y1;
    float ly;
    linear_tap (Mp, p.box_h, (int) (p.y0 + y - p.y1), &y0, &y1, &ly);
    float *out = masks + p.offset + (size_t) y * p.width;
    uint8_t *out_binary = binary + p.offset + (size_t) y * p.width;
    for (int x = threadIdx.x; x < p.width; x += 32) {
      int x0, x1;
      float lx;
      linear_tap (Mp, p.box_w, (int) (p.x0 + x - p.x1), &x0, &x1, &lx);
      float top = __fmul_rn (padded_prob (probs, M, y0, x0), 1.0f - lx)
          + __fmul_rn (padded_prob (probs, M, y0, x1), lx);
      float bottom = __fmul_rn (padded_prob (probs, M, y1, x0), 1.0f - lx)
          + __fmul_rn (padded_prob (probs, M, y1, x1), lx);
      float v = __fmul_rn (top, 1.0f - ly) + __fmul_rn (bottom, ly);
      out[x] = v;
      out_binary[x] = v >= threshold;
    }
  }
}

/* mrcnn_zoom_tap: scipy's zoom_shift (order 1, grid mode) in float64. */
__device__ void
zoom_tap (int in, int out, int d, int *i0, double *w0, double *w1)
{
  double zoom = (double) in / out;
  double s = __dmul_rn (d + 0.5, zoom) - 0.5;
  double f = floor (s);
  *i0 = (int) f;
  *w0 = 1.0 - (s - f);
  *w1 = 1.0 - *w0;
}

/* Minimum and maximum of n values, in every thread of the block. */
__device__ void
block_min_max (const float *v, int n, float *lo, float *hi)
{
  __shared__ float warp_lo[PASTE_ROWS], warp_hi[PASTE_ROWS];
  float l = v[0], h = v[0];
  for (int i = threadIdx.y * 32 + threadIdx.x; i < n; i += 32 * PASTE_ROWS) {
    l = fminf (l, v[i]);
    h = fmaxf (h, v[i]);
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    l = fminf (l, __shfl_xor_sync (0xffffffffu, l, offset));
    h = fmaxf (h, __shfl_xor_sync (0xffffffffu, h, offset));
  }
  if (threadIdx.x == 0) {
    warp_lo[threadIdx.y] = l;
    warp_hi[threadIdx.y] = h;
  }
  __syncthreads ();
  l = warp_lo[0];
  h = warp_hi[0];
  for (int w = 1; w < PASTE_ROWS; w++) {
    l = fminf (l, warp_lo[w]);
    h = fmaxf (h, warp_hi[w]);
  }
  *lo = l;
  *hi = h;
}

/* unmold_mask: each kept detection's M x M mask resized to its integer box
 * with skimage's kernel (zero outside, float64 sums, clipped to the mask's
 * range, float32), the part inside the image written at its offset, soft
 * and thresholded.  Blocks as paste_torchvision_kernel. */
__global__ void
paste_matterport_kernel (const CudaPasteBox *paste,
    const CudaPasteHeader *header, const float *mask_probs, int M,
    float threshold, unsigned long long capacity, float *masks,
    uint8_t *binary)
{
  int k = blockIdx.y;
  if (k >= header->count)
    return;
  CudaPasteBox p = paste[k];
  unsigned long long area = (unsigned long long) p.width * p.height;
  if (area == 0 || p.offset + area > capacity)
    return;
  const float *probs = mask_probs + (size_t) p.source * M * M;
  float lo, hi;
  block_min_max (probs, M * M, &lo, &hi);
  for (int y = blockIdx.x * PASTE_ROWS + threadIdx.y; y < p.height;
      y += gridDim.x * PASTE_ROWS) {
    int y0;
    double wy0, wy1;
    zoom_tap (M, p.box_h, (int) (p.y0 + y - p.y1), &y0, &wy0, &wy1);
    const float *r0 = y0 >= 0 ? probs + y0 * M : NULL;
    const float *r1 = y0 + 1 < M ? probs + (y0 + 1) * M : NULL;
    float *out = masks + p.offset + (size_t) y * p.width;
    uint8_t *out_binary = binary + p.offset + (size_t) y * p.width;
    for (int x = threadIdx.x; x < p.width; x += 32) {
      int x0;
      double wx0, wx1;
      zoom_tap (M, p.box_w, (int) (p.x0 + x - p.x1), &x0, &wx0, &wx1);
      bool left = x0 >= 0, right = x0 + 1 < M;
      double v = 0.0;
      if (r0 && left)
        v += __dmul_rn (__dmul_rn ((double) r0[x0], wy0), wx0);
      if (r0 && right)
        v += __dmul_rn (__dmul_rn ((double) r0[x0 + 1], wy0), wx1);
      if (r1 && left)
        v += __dmul_rn (__dmul_rn ((double) r1[x0], wy1), wx0);
      if (r1 && right)
        v += __dmul_rn (__dmul_rn ((double) r1[x0 + 1], wy1), wx1);
      float f = (float) v;
      f = f > hi ? hi : (f < lo ? lo : f); /* CLAMP (f, lo, hi) */
      out[x] = f;
      out_binary[x] = f >= threshold;
    }
  }
}

/* Every kept detection's layout into mh->paste and mh->header. */
static gboolean
launch_layout (CudaState *s, int rows, GError **error)
{
  CudaMaskHead *mh = &s->masks;
  const MrcnnGeometry *g = &s->geometry;
  int W0 = g->orig_width, H0 = g->orig_height;
  int M = 2 * s->model->config.mask_roi_size;
  if (s->model->config.variant == MRCNN_VARIANT_MATTERPORT) {
    /* norm_boxes(window): float64 division, cast to float32 */
    double sy = g->padded_height - 1, sx = g->padded_width - 1;
    float wy1 = (float) (g->pad_top / sy), wx1 = (float) (g->pad_left / sx);
    float wy2 = (float) ((g->pad_top + g->height - 1) / sy);
    float wx2 = (float) ((g->pad_left + g->width - 1) / sx);
    layout_matterport_kernel <<< 1, LAYOUT_THREADS, 0, s->stream >>>
        (s->det_boxes, s->det_scores, s->det_labels, s->n_detections, rows,
        wy1, wx1, wy2 - wy1, wx2 - wx1, W0, H0, mh->paste, mh->header);
  } else {
    float ratio_w = (float) W0 / (float) g->width;
    float ratio_h = (float) H0 / (float) g->height;
    float expand = (float) ((double) (M + 2) / M);
    layout_torchvision_kernel <<< 1, LAYOUT_THREADS, 0, s->stream >>>
        (s->det_boxes, s->det_scores, s->det_labels, s->n_detections, rows,
        ratio_w, ratio_h, expand, W0, H0, mh->paste, mh->header);
  }
  return CUDA_CHECK_LAUNCH ("mask paste layout", error);
}

/* All the masks of the frame, in one launch, into mh->masks and
 * mh->binary (those that fit in their capacity). */
static gboolean
launch_paste (CudaState *s, int rows, GError **error)
{
  CudaMaskHead *mh = &s->masks;
  int M = 2 * s->model->config.mask_roi_size;
  int H0 = s->geometry.orig_height;
  dim3 grid (CLAMP ((H0 + PASTE_ROWS - 1) / PASTE_ROWS, 1, PASTE_MAX_BLOCKS),
      rows);
  dim3 block (32, PASTE_ROWS);
  if (s->model->config.variant == MRCNN_VARIANT_MATTERPORT)
    paste_matterport_kernel <<< grid, block, 0, s->stream >>> (mh->paste,
        mh->header, s->mask_probs, M, s->thresholds.mask, mh->mask_capacity,
        mh->masks, mh->binary);
  else
    paste_torchvision_kernel <<< grid, block, 0, s->stream >>> (mh->paste,
        mh->header, s->mask_probs, M, s->thresholds.mask, mh->mask_capacity,
        mh->masks, mh->binary);
  return CUDA_CHECK_LAUNCH ("mask paste", error);
}

static void
free_mask_buffers (CudaMaskHead *mh)
{
  cudaFree (mh->masks);
  cudaFree (mh->binary);
  if (mh->masks_host)
    cudaFreeHost (mh->masks_host);
  if (mh->binary_host)
    cudaFreeHost (mh->binary_host);
  mh->masks = NULL;
  mh->binary = NULL;
  mh->masks_host = NULL;
  mh->binary_host = NULL;
  mh->mask_capacity = 0;
}

/* cudaHostAlloc; a failure is cleared from the thread's last error, as
 * cuda_alloc does, or the next frame's first launch check would report it
 * (the mask buffers grow per frame). */
static gboolean
pinned_alloc (void **ptr, size_t bytes, const char *what, GError **error)
{
  *ptr = NULL;
  cudaError_t err = cudaHostAlloc (ptr, MAX (bytes, 1), cudaHostAllocDefault);
  if (err == cudaSuccess)
    return TRUE;
  *ptr = NULL;
  cudaGetLastError ();
  return cuda_check (err, what, error);
}

/* The packed masks on the device and their pinned download buffers, for
 * `pixels` pixels. */
static gboolean
alloc_mask_buffers (CudaMaskHead *mh, size_t pixels, GError **error)
{
  if (!cuda_alloc ((void **) &mh->masks, pixels * sizeof (float),
          "packed masks", error)
      || !cuda_alloc ((void **) &mh->binary, pixels, "packed binary masks",
          error)
      || !pinned_alloc ((void **) &mh->masks_host, pixels * sizeof (float),
          "cudaHostAlloc (mask download buffer)", error)
      || !pinned_alloc ((void **) &mh->binary_host, pixels,
          "cudaHostAlloc (binary mask download buffer)", error))
    return FALSE;
  mh->mask_capacity = pixels;
  return TRUE;
}

/* Grow-only: a frame whose masks need more than any before (by half again,
 * so that a slowly growing load does not reallocate on each frame).  Runs
 * after the stream has been synchronised. */
static gboolean
grow_mask_buffers (CudaMaskHead *mh, size_t pixels, GError **error)
{
  size_t capacity = MAX (pixels, mh->mask_capacity + mh->mask_capacity / 2);
  free_mask_buffers (mh);
  return alloc_mask_buffers (mh, capacity, error);
}

gboolean
cuda_paste_run (CudaState *s, MrcnnResult *result, GError **error)
{
  CudaMaskHead *mh = &s->masks;
  int rows = detection_rows (s);
  if (!launch_layout (s, rows, error)
      || (rows > 0 && !launch_paste (s, rows, error)))
    return FALSE;

  /* the header first: the count and the size of the masks */
  size_t header_bytes = offsetof (CudaPasteHeader, det)
      + (size_t) rows * sizeof (CudaPastedDetection);
  if (!cuda_check (cudaMemcpyAsync (mh->header_host, mh->header,
              header_bytes, cudaMemcpyDeviceToHost, s->stream),
          "cudaMemcpyAsync (detections)", error)
      || !cuda_check (cudaStreamSynchronize (s->stream),
          "cudaStreamSynchronize (detections)", error))
    return FALSE;
  int n = mh->header_host->count;
  size_t pixels = mh->header_host->pixels;
  if (pixels > mh->mask_capacity
      && (!grow_mask_buffers (mh, pixels, error)
          || !launch_paste (s, rows, error)))
    return FALSE;

  /* then exactly the masks' pixels */
  if (pixels > 0
      && (!cuda_check (cudaMemcpyAsync (mh->masks_host, mh->masks,
                  pixels * sizeof (float), cudaMemcpyDeviceToHost,
                  s->stream), "cudaMemcpyAsync (masks)", error)
          || !cuda_check (cudaMemcpyAsync (mh->binary_host, mh->binary,
                  pixels, cudaMemcpyDeviceToHost, s->stream),
              "cudaMemcpyAsync (binary masks)", error)
          || !cuda_check (cudaStreamSynchronize (s->stream),
              "cudaStreamSynchronize (masks)", error)))
    return FALSE;

  mrcnn_result_reserve (result, n, pixels);
  if (pixels > 0) {
    memcpy (result->mask_storage, mh->masks_host, pixels * sizeof (float));
    memcpy (result->binary_storage, mh->binary_host, pixels);
  }
  for (int k = 0; k < n; k++) {
    const CudaPastedDetection *src = &mh->header_host->det[k];
    MrcnnDetection *det = &result->detections[k];
    memcpy (det->box, src->box, sizeof det->box);
    det->score = src->score;
    det->label_id = src->label_id;
    det->mask_x = src->x;
    det->mask_y = src->y;
    det->mask_width = src->width;
    det->mask_height = src->height;
    det->mask = result->mask_storage + src->offset;
    det->mask_binary = result->binary_storage + src->offset;
  }
  result->n_detections = n;
  return TRUE;
}

/* ---- workspace ------------------------------------------------------- */

/* A new device copy of n host floats. */
static gboolean
upload_floats (CudaState *s, float **dst, const float *src, size_t n,
    const char *what, GError **error)
{
  return cuda_alloc ((void **) dst, n * sizeof (float), what, error)
      && cuda_check (cudaMemcpyAsync (*dst, src, n * sizeof (float),
          cudaMemcpyHostToDevice, s->stream), what, error);
}

gboolean
cuda_mask_head_create (CudaState *s, GError **error)
{
  CudaMaskHead *mh = &s->masks;
  const MrcnnModel *m = s->model;
  const MrcnnDeconv *dc = &m->mask_deconv;
  int P = m->config.mask_roi_size, M = 2 * P;
  int classes = m->mask_logits.out_channels;
  size_t chunk_pixels = (size_t) MASK_CHUNK * P * P;

  mh->chunk = MASK_CHUNK;
  int widest = m->fpn_channels;
  for (int j = 0; j < m->n_mask_layers; j++) {
    /* counted first, so that destroy clears a partly initialised layer */
    mh->n_layers = j + 1;
    char name[64];
    g_snprintf (name, sizeof name, "mask head conv %d", j + 1);
    if (!cuda_conv_init (s, &mh->layers[j], &m->mask_layers[j], name,
            m->mask_layers[j].in_channels, CUDA_CONV_BIAS_RELU, mh->chunk, P,
            P, error))
      return FALSE;
    widest = MAX (widest, m->mask_layers[j].out_channels);
  }
  mh->deconv_in = dc->in_channels;
  mh->deconv_out = dc->out_channels;
  if (!cuda_upload_act (s, &mh->deconv_weight, dc->weight,
          (size_t) 4 * dc->out_channels * dc->in_channels,
          "mask deconv weight", error)
      || !upload_floats (s, &mh->deconv_bias, dc->bias, dc->out_channels,
          "mask deconv bias", error)
      || !upload_floats (s, &mh->logits_weight, m->mask_logits.weight,
          (size_t) classes * m->mask_logits.in_channels,
          "mask logits weight", error)
      || !upload_floats (s, &mh->logits_bias, m->mask_logits.bias,
          classes, "mask logits bias", error))
    return FALSE;

  size_t features = chunk_pixels * widest * s->act_size;
  size_t max_image = (size_t) s->max_padded_h * s->max_padded_w;
  return cuda_alloc ((void **) &mh->chunk_counts, MAX_CHUNKS * sizeof (int),
      "mask chunk counts", error)
      && cuda_alloc (&mh->features_a, features, "mask head features", error)
      && cuda_alloc (&mh->features_b, features, "mask head features", error)
      && cuda_alloc ((void **) &mh->deconv_gemm,
      chunk_pixels * 4 * mh->deconv_out * sizeof (float), "mask deconv output",
      error)
      && cuda_alloc ((void **) &s->mask_probs,
      (size_t) MRCNN_MAX_DETECTIONS * M * M * sizeof (float),
      "mask probabilities", error)
      && cuda_alloc ((void **) &mh->paste,
      MRCNN_MAX_DETECTIONS * sizeof (CudaPasteBox), "mask paste boxes", error)
      && cuda_alloc ((void **) &mh->header, sizeof (CudaPasteHeader),
      "detections header", error)
      && pinned_alloc ((void **) &mh->header_host, sizeof (CudaPasteHeader),
      "cudaHostAlloc (detections download buffer)", error)
      /* room for masks covering the largest input twice; grown on demand */
      && alloc_mask_buffers (mh, 2 * max_image, error);
}

void
cuda_mask_head_destroy (CudaState *s)
{
  CudaMaskHead *mh = &s->masks;
  for (int j = 0; j < mh->n_layers; j++)
    cuda_conv_clear (&mh->layers[j]);
  mh->n_layers = 0;
  void *buffers[] = {
    mh->chunk_counts, mh->deconv_weight, mh->deconv_bias, mh->logits_weight,
    mh->logits_bias, mh->features_a, mh->features_b, mh->deconv_gemm,
    mh->paste, mh->header, s->mask_probs,
  };
  for (size_t i = 0; i < G_N_ELEMENTS (buffers); i++)
    cudaFree (buffers[i]);
  mh->chunk_counts = NULL;
  mh->deconv_weight = NULL;
  mh->deconv_bias = NULL;
  mh->logits_weight = NULL;
  mh->logits_bias = NULL;
  mh->features_a = mh->features_b = NULL;
  mh->deconv_gemm = NULL;
  mh->paste = NULL;
  mh->header = NULL;
  s->mask_probs = NULL;
  if (mh->header_host)
    cudaFreeHost (mh->header_host);
  mh->header_host = NULL;
  free_mask_buffers (mh);
}
