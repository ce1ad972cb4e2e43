/* The region proposal stage on the device: the RPN head on every FPN level,
 * then torchvision's filter_proposals (cpu/rpn.c, MODEL_SPEC B.5, B.6) or
 * matterport's ProposalLayer (cpu/rpn_matterport.c, A.5, A.6).
 *
 * The arithmetic mirrors the CPU functions it names, operation for
 * operation: products that feed a sum go through __fmul_rn so that nvcc
 * cannot fuse them into an FMA the CPU does not do, and MIN, MAX and CLAMP
 * keep GLib's comparisons (which decide what NaN gives).  Sorts are stable
 * radix sorts of keys that order floats as mrcnn_argsort_desc does; NMS is
 * a 64 x 64 bitmask kernel and a one-block walk in score order. */
#include "cuda_backend.h"

#include <cub/cub.cuh>

#include <limits.h>
#include <math.h>
#include <string.h>

static const int level_strides[MRCNN_FPN_LEVELS] = { 4, 8, 16, 32, 64 };

#define THREADS 256
#define NMS_BLOCK 64
/* the NMS walk keeps one bit per candidate in shared memory */
#define MAX_MASK_WORDS 4096
/* torchvision ranks anchors by (level, logit): 3 bits of level above the
 * 32 bits of the logit */
#define LEVEL_KEY_BITS 35
#define SCORE_KEY_BITS 32
/* each level's head outputs start on this boundary (cuDNN's fast paths
 * want aligned tensors) */
#define LEVEL_ALIGN_BYTES 256

/* The anchors of each level in the flattened order (level-major, then
 * (y * W + x) * A + a), where the level's head outputs are, and what each
 * level keeps. */
typedef struct {
  int start[MRCNN_FPN_LEVELS + 1]; /* first anchor of each level; [5]: all */
  size_t cls_offset[MRCNN_FPN_LEVELS];  /* in logits, values */
  size_t bbox_offset[MRCNN_FPN_LEVELS]; /* in deltas, values */
  int grid_w[MRCNN_FPN_LEVELS];
  int stride_x[MRCNN_FPN_LEVELS], stride_y[MRCNN_FPN_LEVELS];
  int k[MRCNN_FPN_LEVELS];         /* torchvision: pre-NMS top-k per level */
} Levels;

/* Boxes in each NMS segment. */
typedef struct {
  int n[MRCNN_FPN_LEVELS];
} SegmentCounts;

/* matterport's anchor shapes in float64, as mrcnn_matterport_anchors
 * computes them on the host. */
typedef struct {
  int start[MRCNN_FPN_LEVELS + 1];
  int grid_w[MRCNN_FPN_LEVELS];
  int stride[MRCNN_FPN_LEVELS];
  int ratios;
  double sy, sx; /* H - 1, W - 1 */
  double heights[MRCNN_FPN_LEVELS][MRCNN_MAX_ANCHOR_SHAPES];
  double widths[MRCNN_FPN_LEVELS][MRCNN_MAX_ANCHOR_SHAPES];
} MatterportAnchorShapes;

/* ---- device arithmetic ------------------------------------------------ */

__device__ static inline float
to_float (float x)
{
  return x;
}

__device__ static inline float
to_float (__half x)
{
  return __half2float (x);
}

/* GLib's MIN, MAX and CLAMP, comparison for comparison */
__device__ static inline float
glib_min (float a, float b)
{
  return a < b ? a : b;
}

__device__ static inline float
glib_max (float a, float b)
{
  return a > b ? a : b;
}

__device__ static inline float
glib_clamp (float x, float low, float high)
{
  return x > high ? high : (x < low ? low : x);
}

/* A radix key whose ascending order is mrcnn_argsort_desc's order: floats
 * descending, -0.0 equal to +0.0 (the comparator cannot tell them apart);
 * NaN, which the comparator leaves unordered, goes last with -inf. */
__device__ static inline uint32_t
descending_key (float x)
{
  if (x == 0.0f)
    x = 0.0f;
  if (isnan (x))
    x = -INFINITY;
  uint32_t u = __float_as_uint (x);
  uint32_t ascending = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return ~ascending;
}

/* mrcnn_decode_box with BoxCoder weights (1, 1, 1, 1), whose divisions
 * are exact and left out */
__device__ static void
decode_box_torchvision (const float *box, const float *d, float clip,
    float *out)
{
  float w = box[2] - box[0];
  float h = box[3] - box[1];
  float cx = box[0] + __fmul_rn (0.5f, w);
  float cy = box[1] + __fmul_rn (0.5f, h);
  float dx = d[0];
  float dy = d[1];
  float dw = glib_min (d[2], clip);
  float dh = glib_min (d[3], clip);
  float pcx = __fmul_rn (dx, w) + cx;
  float pcy = __fmul_rn (dy, h) + cy;
  float pw = __fmul_rn (expf (dw), w);
  float ph = __fmul_rn (expf (dh), h);
  out[0] = pcx - __fmul_rn (0.5f, pw);
  out[1] = pcy - __fmul_rn (0.5f, ph);
  out[2] = pcx + __fmul_rn (0.5f, pw);
  out[3] = pcy + __fmul_rn (0.5f, ph);
}

/* mrcnn_decode_box_matterport */
__device__ static void
decode_box_matterport (const float *box, const float *d, float4 std_dev,
    float *out)
{
  float h = box[2] - box[0];
  float w = box[3] - box[1];
  float cy = box[0] + __fmul_rn (0.5f, h);
  float cx = box[1] + __fmul_rn (0.5f, w);
  cy += __fmul_rn (__fmul_rn (d[0], std_dev.x), h);
  cx += __fmul_rn (__fmul_rn (d[1], std_dev.y), w);
  h = __fmul_rn (h, expf (__fmul_rn (d[2], std_dev.z)));
  w = __fmul_rn (w, expf (__fmul_rn (d[3], std_dev.w)));
  out[0] = cy - __fmul_rn (0.5f, h);
  out[1] = cx - __fmul_rn (0.5f, w);
  out[2] = out[0] + h;
  out[3] = out[1] + w;
}

/* mrcnn_nms's test: box a kept, box b later in score order */
__device__ static inline bool
overlaps_torchvision (float4 a, float4 b, float threshold)
{
  float area_a = __fmul_rn (a.z - a.x, a.w - a.y);
  float w = glib_max (0.0f, glib_min (a.z, b.z) - glib_max (a.x, b.x));
  float h = glib_max (0.0f, glib_min (a.w, b.w) - glib_max (a.y, b.y));
  float inter = __fmul_rn (w, h);
  float area_b = __fmul_rn (b.z - b.x, b.w - b.y);
  return inter / (area_a + area_b - inter) > threshold;
}

/* mrcnn_tf_iou > threshold */
__device__ static inline bool
overlaps_tf (float4 a, float4 b, float threshold)
{
  float ay1 = glib_min (a.x, a.z), ax1 = glib_min (a.y, a.w);
  float ay2 = glib_max (a.x, a.z), ax2 = glib_max (a.y, a.w);
  float by1 = glib_min (b.x, b.z), bx1 = glib_min (b.y, b.w);
  float by2 = glib_max (b.x, b.z), bx2 = glib_max (b.y, b.w);
  float area_a = __fmul_rn (ay2 - ay1, ax2 - ax1);
  float area_b = __fmul_rn (by2 - by1, bx2 - bx1);
  float iou = 0.0f;
  if (!(area_a <= 0 || area_b <= 0)) {
    float iy1 = glib_max (ay1, by1), ix1 = glib_max (ax1, bx1);
    float iy2 = glib_min (ay2, by2), ix2 = glib_min (ax2, bx2);
    float inter = __fmul_rn (glib_max (iy2 - iy1, 0.0f),
        glib_max (ix2 - ix1, 0.0f));
    iou = inter / (area_a + area_b - inter);
  }
  return iou > threshold;
}

__device__ static inline int
level_of (const int *start, int j)
{
  int l = 0;
  while (l < MRCNN_FPN_LEVELS - 1 && j >= start[l + 1])
    l++;
  return l;
}

/* ---- kernels ---------------------------------------------------------- */

/* mrcnn_matterport_anchors, one anchor per thread, in float64 */
__global__ static void
matterport_anchors_kernel (MatterportAnchorShapes p, float4 *out)
{
  int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= p.start[MRCNN_FPN_LEVELS])
    return;
  int l = level_of (p.start, j);
  int local = j - p.start[l];
  int r = local % p.ratios, cell = local / p.ratios;
  double cy = (double) (cell / p.grid_w[l]) * p.stride[l];
  double cx = (double) (cell % p.grid_w[l]) * p.stride[l];
  double half_h = __dmul_rn (0.5, p.heights[l][r]);
  double half_w = __dmul_rn (0.5, p.widths[l][r]);
  out[j] = make_float4 (
      __double2float_rn (__ddiv_rn (__dsub_rn (cy, half_h), p.sy)),
      __double2float_rn (__ddiv_rn (__dsub_rn (cx, half_w), p.sx)),
      __double2float_rn (__ddiv_rn (__dsub_rn (__dadd_rn (cy, half_h), 1.0),
              p.sy)),
      __double2float_rn (__ddiv_rn (__dsub_rn (__dadd_rn (cx, half_w), 1.0),
              p.sx)));
}

/* torchvision ranks anchors by logit within their level: key (level,
 * descending logit), value the anchor */
template <typename T>
__global__ static void
torchvision_keys_kernel (const T *logits, Levels lv, uint64_t *keys,
    int *values)
{
  int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= lv.start[MRCNN_FPN_LEVELS])
    return;
  int l = level_of (lv.start, j);
  float logit = to_float (logits[lv.cls_offset[l] + (j - lv.start[l])]);
  keys[j] = (uint64_t) l << 32 | descending_key (logit);
  values[j] = j;
}

/* matterport ranks all anchors by the foreground probability of the 2-way
 * softmax (cpu/rpn_matterport.c rpn_head): background logit 2j,
 * foreground 2j + 1 */
template <typename T>
__global__ static void
matterport_keys_kernel (const T *logits, Levels lv, uint64_t *keys,
    int *values)
{
  int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= lv.start[MRCNN_FPN_LEVELS])
    return;
  int l = level_of (lv.start, j);
  const T *pair = logits + lv.cls_offset[l] + 2 * (size_t) (j - lv.start[l]);
  float bg = to_float (pair[0]);
  float fg = to_float (pair[1]);
  float top = glib_max (bg, fg);
  float e_bg = expf (bg - top), e_fg = expf (fg - top);
  keys[j] = descending_key (e_fg / (e_bg + e_fg));
  values[j] = j;
}

/* cpu_proposals' candidate loop: the i-th best anchor of level
 * blockIdx.y, decoded, clipped to the resized image, with its sigmoid
 * score and whether it passes min size and the score threshold.  Slot
 * l * segment_size + i. */
template <typename T>
__global__ static void
torchvision_candidates_kernel (const T *logits, const T *deltas,
    const int *sorted, const float *base_anchors, int A, Levels lv,
    int segment_size, float width, float height, float clip, float min_size,
    float score_thresh, float4 *boxes, float *scores, uint8_t *valid)
{
  int l = blockIdx.y;
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= lv.k[l])
    return;
  int first = lv.start[l];
  int idx = sorted[first + i];
  /* mrcnn_level_anchor of the level-local index */
  int j = idx - first;
  int a = j % A, cell = j / A;
  float sx = (float) ((cell % lv.grid_w[l]) * lv.stride_x[l]);
  float sy = (float) ((cell / lv.grid_w[l]) * lv.stride_y[l]);
  const float *base = base_anchors + 4 * ((size_t) l * A + a);
  float anchor[4] = { sx + base[0], sy + base[1], sx + base[2],
    sy + base[3] };
  float d[4];
  for (int k = 0; k < 4; k++)
    d[k] = to_float (deltas[lv.bbox_offset[l] + 4 * (size_t) j + k]);
  float box[4];
  decode_box_torchvision (anchor, d, clip, box);
  /* mrcnn_clip_box */
  box[0] = glib_clamp (box[0], 0.0f, width);
  box[1] = glib_clamp (box[1], 0.0f, height);
  box[2] = glib_clamp (box[2], 0.0f, width);
  box[3] = glib_clamp (box[3], 0.0f, height);
  float logit = to_float (logits[lv.cls_offset[l] + j]);
  float score = 1.0f / (1.0f + expf (-logit));
  int slot = l * segment_size + i;
  boxes[slot] = make_float4 (box[0], box[1], box[2], box[3]);
  scores[slot] = score;
  valid[slot] = box[2] - box[0] >= min_size && box[3] - box[1] >= min_size
      && score >= score_thresh;
}

/* cpu_proposals_matterport's candidate loop: the i-th best anchor decoded
 * with RPN_BBOX_STD_DEV and clipped to the unit window */
template <typename T>
__global__ static void
matterport_candidates_kernel (const T *deltas, const float4 *anchors,
    const int *sorted, int k, Levels lv, float4 std_dev, float4 *boxes)
{
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= k)
    return;
  int idx = sorted[i];
  int l = level_of (lv.start, idx);
  const T *level_deltas = deltas + lv.bbox_offset[l]
      + 4 * (size_t) (idx - lv.start[l]);
  float4 a = anchors[idx];
  float anchor[4] = { a.x, a.y, a.z, a.w };
  float d[4];
  for (int c = 0; c < 4; c++)
    d[c] = to_float (level_deltas[c]);
  float box[4];
  decode_box_matterport (anchor, d, std_dev, box);
  /* mrcnn_clip_box_window with the window (0, 0, 1, 1) */
  for (int c = 0; c < 4; c++)
    box[c] = glib_max (glib_min (box[c], 1.0f), 0.0f);
  boxes[i] = make_float4 (box[0], box[1], box[2], box[3]);
}

/* For each box i of a segment (in score order) and each block of 64 later
 * boxes: the bits of those it overlaps by more than the threshold.  Grid
 * (column block, row block, segment); words left of the diagonal are never
 * read and not written. */
template <bool TF>
__global__ static void
nms_mask_kernel (const float4 *boxes, SegmentCounts counts, int segment_size,
    int mask_words, float threshold, uint64_t *mask)
{
  int seg = blockIdx.z, n = counts.n[seg];
  int row_block = blockIdx.y, col_block = blockIdx.x;
  int row0 = row_block * NMS_BLOCK, col0 = col_block * NMS_BLOCK;
  if (col_block < row_block || row0 >= n || col0 >= n)
    return;
  int rows = min (NMS_BLOCK, n - row0), cols = min (NMS_BLOCK, n - col0);
  const float4 *seg_boxes = boxes + (size_t) seg * segment_size;
  __shared__ float4 col_boxes[NMS_BLOCK];
  if (threadIdx.x < cols)
    col_boxes[threadIdx.x] = seg_boxes[col0 + threadIdx.x];
  __syncthreads ();
  if (threadIdx.x >= rows)
    return;
  int i = row0 + threadIdx.x;
  float4 box = seg_boxes[i];
  uint64_t bits = 0;
  int first = row_block == col_block ? threadIdx.x + 1 : 0;
  for (int c = first; c < cols; c++) {
    bool drop = TF ? overlaps_tf (box, col_boxes[c], threshold)
        : overlaps_torchvision (box, col_boxes[c], threshold);
    if (drop)
      bits |= 1ull << c;
  }
  mask[((size_t) seg * segment_size + i) * mask_words + col_block] = bits;
}

/* The greedy walk of mrcnn_nms / mrcnn_tf_nms, one block per segment:
 * boxes in slot order, skipping invalid ones and those a kept box drops,
 * until max_output are kept.  Thread 0 walks 64 boxes with the diagonal
 * words; then all threads fold the kept boxes' rows into the later words. */
__global__ static void
nms_walk_kernel (const uint64_t *mask, const uint8_t *valid,
    SegmentCounts counts, int segment_size, int mask_words, int max_output,
    int *keep, int *keep_count)
{
  extern __shared__ uint64_t removed[];
  __shared__ uint64_t diagonal[NMS_BLOCK];
  __shared__ bool skip[NMS_BLOCK];
  __shared__ int chunk_kept[NMS_BLOCK];
  __shared__ int n_chunk_kept, count;
  int seg = blockIdx.x, n = counts.n[seg];
  size_t base = (size_t) seg * segment_size;
  int blocks = (n + NMS_BLOCK - 1) / NMS_BLOCK;
  for (int c = threadIdx.x; c < blocks; c += blockDim.x)
    removed[c] = 0;
  if (threadIdx.x == 0)
    count = 0;
  __syncthreads ();
  for (int cb = 0; cb < blocks && count < max_output; cb++) {
    if (threadIdx.x < NMS_BLOCK) {
      int i = cb * NMS_BLOCK + threadIdx.x;
      diagonal[threadIdx.x] = i < n ? mask[(base + i) * mask_words + cb] : 0;
      skip[threadIdx.x] = i >= n || (valid && !valid[base + i]);
    }
    __syncthreads ();
    if (threadIdx.x == 0) {
      uint64_t word = removed[cb];
      int kept = 0, total = count;
      for (int b = 0; b < NMS_BLOCK && total < max_output; b++) {
        if (skip[b] || (word >> b & 1))
          continue;
        int i = cb * NMS_BLOCK + b;
        keep[base + total++] = (int) (base + i);
        chunk_kept[kept++] = i;
        word |= diagonal[b];
      }
      n_chunk_kept = kept;
      count = total;
    }
    __syncthreads ();
    for (int c = cb + 1 + threadIdx.x; c < blocks; c += blockDim.x) {
      uint64_t word = removed[c];
      for (int k = 0; k < n_chunk_kept; k++)
        word |= mask[(base + chunk_kept[k]) * mask_words + c];
      removed[c] = word;
    }
    __syncthreads ();
  }
  if (threadIdx.x == 0)
    keep_count[seg] = count;
}

/* torchvision's merge of the levels: the kept slots keyed by descending
 * score; the rest key past every score.  Positions follow the levels and,
 * within one, the NMS order, so the stable sort breaks ties as the CPU's
 * stable argsort of the kept list does. */
__global__ static void
merge_keys_kernel (const int *keep, const int *keep_count,
    const float *scores, int segment_size, int n, uint64_t *keys,
    int *values)
{
  int pos = blockIdx.x * blockDim.x + threadIdx.x;
  if (pos >= n)
    return;
  int seg = pos / segment_size, rank = pos - seg * segment_size;
  if (rank < keep_count[seg]) {
    int slot = keep[pos];
    keys[pos] = descending_key (scores[slot]);
    values[pos] = slot;
  } else {
    keys[pos] = UINT32_MAX;
    values[pos] = -1;
  }
}

/* rows < count: the candidate box order[row]; the rest zero.  count is
 * the sum of counts[], at most rows; the count reported is all the rows
 * when pad_count (matterport's fixed POST_NMS_ROIS). */
__global__ static void
gather_proposals_kernel (const float4 *boxes, const int *order,
    const int *counts, int n_counts, int rows, bool pad_count, float4 *out,
    int *out_count)
{
  int total = 0;
  for (int c = 0; c < n_counts; c++)
    total += counts[c];
  int n = min (total, rows);
  int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r == 0)
    *out_count = pad_count ? rows : n;
  if (r < rows)
    out[r] = r < n ? boxes[order[r]] : make_float4 (0.0f, 0.0f, 0.0f, 0.0f);
}

/* ---- host ------------------------------------------------------------- */

static inline unsigned
grid_for (size_t n)
{
  return (unsigned) MAX ((n + THREADS - 1) / THREADS, (size_t) 1);
}

static int
grid_side (int size, int stride)
{
  return (size + stride - 1) / stride;
}

/* Where a level's head output of `values` values ends, from where it
 * starts, rounded up so that the next level's is aligned. */
static size_t
level_end (const CudaState *s, size_t start, size_t values)
{
  size_t align = LEVEL_ALIGN_BYTES / s->act_size;
  return (start + values + align - 1) / align * align;
}

static gboolean
sort_pairs (CudaState *s, int n, int end_bit, const char *what,
    GError **error)
{
  CudaProposals *p = &s->rpn;
  size_t temp_size = p->sort_temp_size;
  return cuda_check (cub::DeviceRadixSort::SortPairs (p->sort_temp,
          temp_size, p->keys, p->sorted_keys, p->values, p->sorted_values, n,
          0, end_bit, s->stream), what, error);
}

/* Raises p->sort_temp_size to what sorting n items needs. */
static gboolean
size_sort (CudaState *s, int n, int end_bit, GError **error)
{
  size_t bytes = 0;
  if (!cuda_check (cub::DeviceRadixSort::SortPairs (NULL, bytes,
              (const uint64_t *) NULL, (uint64_t *) NULL, (const int *) NULL,
              (int *) NULL, n, 0, end_bit, s->stream),
          "sizing the proposals' sort", error))
    return FALSE;
  s->rpn.sort_temp_size = MAX (s->rpn.sort_temp_size, bytes);
  return TRUE;
}

/* Fills in the matterport anchors of a padded_h x padded_w input. */
static gboolean
make_matterport_anchors (CudaState *s, int padded_h, int padded_w,
    GError **error)
{
  const MrcnnConfig *c = &s->model->config;
  CudaProposals *p = &s->rpn;
  MatterportAnchorShapes shapes;
  memset (&shapes, 0, sizeof shapes);
  shapes.ratios = c->n_aspect_ratios;
  shapes.sy = padded_h - 1;
  shapes.sx = padded_w - 1;
  int n = 0;
  for (int l = 0; l < MRCNN_FPN_LEVELS; l++) {
    int stride = level_strides[l];
    shapes.start[l] = n;
    shapes.grid_w[l] = grid_side (padded_w, stride);
    shapes.stride[l] = stride;
    for (int r = 0; r < c->n_aspect_ratios; r++) {
      double root = sqrt ((double) c->aspect_ratios[r]);
      shapes.heights[l][r] = c->anchor_sizes[l][0] / root;
      shapes.widths[l][r] = c->anchor_sizes[l][0] * root;
    }
    n += grid_side (padded_h, stride) * shapes.grid_w[l] * c->n_aspect_ratios;
  }
  shapes.start[MRCNN_FPN_LEVELS] = n;
  if (n > p->max_anchors) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
        "a %dx%d input has %d anchors, more than the %d the RPN workspace "
        "holds", padded_w, padded_h, n, p->max_anchors);
    return FALSE;
  }
  matterport_anchors_kernel<<<grid_for (n), THREADS, 0, s->stream>>> (shapes,
      (float4 *) p->anchors);
  if (!CUDA_CHECK_LAUNCH ("computing the anchors", error))
    return FALSE;
  p->n_anchors = n;
  p->anchors_h = padded_h;
  p->anchors_w = padded_w;
  return TRUE;
}

gboolean
cuda_proposals_create (CudaState *s, GError **error)
{
  const MrcnnModel *m = s->model;
  const MrcnnConfig *c = &m->config;
  CudaProposals *p = &s->rpn;
  gboolean matterport = c->variant == MRCNN_VARIANT_MATTERPORT;
  int A = m->num_anchors;
  int anchors_per_cell = matterport ? c->n_aspect_ratios
      : c->n_anchor_sizes * c->n_aspect_ratios;
  if (A != anchors_per_cell || A > MRCNN_MAX_ANCHOR_SHAPES
      * MRCNN_MAX_ANCHOR_SHAPES) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
        "the RPN head predicts %d anchors per location, but the anchor "
        "configuration gives %d", A, anchors_per_cell);
    return FALSE;
  }

  /* levels of the largest input in either orientation */
  int side = MAX (s->max_padded_h, s->max_padded_w);
  size_t cells = 0;
  for (int l = 0; l < MRCNN_FPN_LEVELS; l++) {
    size_t g = grid_side (side, level_strides[l]);
    cells += g * g;
  }
  int top = grid_side (side, level_strides[0]);
  if (cells * A > INT_MAX / 4) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
        "%dx%d inputs have too many anchors for the RPN", side, side);
    return FALSE;
  }
  p->max_anchors = (int) (cells * A);
  /* every level's outputs for max_batch frames, each level's rounded up
   * to the alignment */
  p->logits_size = p->deltas_size = 0;
  for (int l = 0; l < MRCNN_FPN_LEVELS; l++) {
    size_t g = grid_side (side, level_strides[l]);
    p->logits_size = level_end (s, p->logits_size,
        s->max_batch * g * g * m->rpn_cls.out_channels);
    p->deltas_size = level_end (s, p->deltas_size,
        s->max_batch * g * g * m->rpn_bbox.out_channels);
  }

  int pre = MAX (c->rpn_pre_nms_top_n, 0);
  p->n_segments = matterport ? 1 : MRCNN_FPN_LEVELS;
  p->segment_size = matterport ? MIN (pre, p->max_anchors)
      : MIN (pre, top * top * A);
  p->mask_words = (p->segment_size + NMS_BLOCK - 1) / NMS_BLOCK;
  if (p->mask_words > MAX_MASK_WORDS) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
        "the RPN keeps %d boxes before NMS, more than the %d the CUDA "
        "backend handles; lower the pre-NMS top-n", p->segment_size,
        MAX_MASK_WORDS * NMS_BLOCK);
    return FALSE;
  }
  size_t slots = (size_t) p->n_segments * p->segment_size;
  size_t sort_items = matterport ? (size_t) p->max_anchors
      : MAX ((size_t) p->max_anchors, slots);

  p->n_convs = m->n_rpn_convs;
  size_t hidden_size = 0;
  for (int j = 0; j < m->n_rpn_convs; j++) {
    char *name = g_strdup_printf ("the RPN head's conv %d", j + 1);
    gboolean ok = cuda_conv_init (s, &p->convs[j], &m->rpn_convs[j], name,
        m->rpn_convs[j].in_channels, CUDA_CONV_BIAS_RELU, s->max_batch, top,
        top, error);
    g_free (name);
    if (!ok)
      return FALSE;
    hidden_size = MAX (hidden_size, (size_t) s->max_batch * top * top
        * m->rpn_convs[j].out_channels * s->act_size);
  }
  if (!cuda_conv_init (s, &p->cls, &m->rpn_cls, "the RPN objectness",
          m->rpn_cls.in_channels, CUDA_CONV_BIAS, s->max_batch, top, top,
          error)
      || !cuda_conv_init (s, &p->bbox, &m->rpn_bbox, "the RPN box deltas",
          m->rpn_bbox.in_channels, CUDA_CONV_BIAS, s->max_batch, top, top,
          error))
    return FALSE;

  if (!cuda_alloc (&p->hidden[0], hidden_size, "the RPN head's activations",
          error)
      || (p->n_convs > 1 && !cuda_alloc (&p->hidden[1], hidden_size,
              "the RPN head's activations", error))
      || !cuda_alloc (&p->logits, p->logits_size * s->act_size,
          "the RPN objectness", error)
      || !cuda_alloc (&p->deltas, p->deltas_size * s->act_size,
          "the RPN box deltas", error)
      || !cuda_alloc ((void **) &p->keys, sort_items * sizeof (uint64_t),
          "the RPN sort keys", error)
      || !cuda_alloc ((void **) &p->sorted_keys,
          sort_items * sizeof (uint64_t), "the RPN sorted keys", error)
      || !cuda_alloc ((void **) &p->values, sort_items * sizeof (int),
          "the RPN sort values", error)
      || !cuda_alloc ((void **) &p->sorted_values, sort_items * sizeof (int),
          "the RPN sorted values", error)
      || !cuda_alloc ((void **) &p->cand_boxes, slots * 4 * sizeof (float),
          "the RPN candidate boxes", error)
      || !cuda_alloc ((void **) &p->nms_mask,
          slots * p->mask_words * sizeof (uint64_t), "the RPN NMS bitmask",
          error)
      || !cuda_alloc ((void **) &p->keep, slots * sizeof (int),
          "the RPN kept boxes", error)
      || !cuda_alloc ((void **) &p->keep_count, p->n_segments * sizeof (int),
          "the RPN kept counts", error)
      || !cuda_alloc ((void **) &s->proposals,
          (size_t) s->max_proposals * 4 * sizeof (float), "the proposals",
          error)
      || !cuda_alloc ((void **) &s->n_proposals, sizeof (int),
          "the proposal count", error))
    return FALSE;

  if (matterport) {
    if (!size_sort (s, p->max_anchors, SCORE_KEY_BITS, error)
        || !cuda_alloc ((void **) &p->anchors,
            (size_t) p->max_anchors * 4 * sizeof (float), "the anchors",
            error))
      return FALSE;
    /* the largest input's anchors, square mode's only ones; run() makes
     * those of another padded size when one arrives */
    if (!make_matterport_anchors (s, s->max_padded_h, s->max_padded_w,
            error))
      return FALSE;
  } else {
    float packed[MRCNN_FPN_LEVELS * MRCNN_MAX_ANCHOR_SHAPES
        * MRCNN_MAX_ANCHOR_SHAPES * 4];
    for (int l = 0; l < MRCNN_FPN_LEVELS; l++)
      mrcnn_base_anchors (c, l, packed + (size_t) 4 * l * A);
    size_t bytes = (size_t) MRCNN_FPN_LEVELS * A * 4 * sizeof (float);
    if (!size_sort (s, p->max_anchors, LEVEL_KEY_BITS, error)
        || !size_sort (s, (int) slots, SCORE_KEY_BITS, error)
        || !cuda_alloc ((void **) &p->cand_scores, slots * sizeof (float),
            "the RPN candidate scores", error)
        || !cuda_alloc ((void **) &p->cand_valid, slots,
            "the RPN candidate flags", error)
        || !cuda_alloc ((void **) &p->base_anchors, bytes,
            "the base anchors", error)
        /* on s->stream, which does not wait for the legacy default stream
         * cudaMemcpy uses; waiting keeps `packed` alive for the copy */
        || !cuda_check (cudaMemcpyAsync (p->base_anchors, packed, bytes,
                cudaMemcpyHostToDevice, s->stream),
            "uploading the base anchors", error)
        || !cuda_check (cudaStreamSynchronize (s->stream),
            "uploading the base anchors", error))
      return FALSE;
  }
  /* no frame yet: no proposals (inspect may ask before the first one) */
  return cuda_alloc (&p->sort_temp, p->sort_temp_size,
      "the RPN sort workspace", error)
      && cuda_check (cudaMemsetAsync (s->n_proposals, 0, sizeof (int),
          s->stream), "clearing the proposal count", error);
}

void
cuda_proposals_destroy (CudaState *s)
{
  CudaProposals *p = &s->rpn;
  for (int j = 0; j < MRCNN_MAX_RPN_CONVS; j++)
    cuda_conv_clear (&p->convs[j]);
  cuda_conv_clear (&p->cls);
  cuda_conv_clear (&p->bbox);
  void *buffers[] = {
    p->hidden[0], p->hidden[1], p->logits, p->deltas, p->base_anchors,
    p->anchors, p->keys, p->sorted_keys, p->values, p->sorted_values, p->sort_temp,
    p->cand_boxes, p->cand_scores, p->cand_valid, p->nms_mask, p->keep,
    p->keep_count, s->proposals, s->n_proposals,
  };
  for (gsize i = 0; i < G_N_ELEMENTS (buffers); i++)
    cudaFree (buffers[i]);
  memset (p, 0, sizeof *p);
  s->proposals = NULL;
  s->n_proposals = NULL;
}

/* The anchors of the levels of the frame in `slot`, level-major, and where
 * its head outputs lie (each level's region holds max_batch frames, one
 * after another); FALSE when they do not fit the workspace. */
static gboolean
plan_levels (CudaState *s, int slot, Levels *lv, GError **error)
{
  const MrcnnGeometry *g = &s->slot_geometry[slot];
  const CudaProposals *p = &s->rpn;
  int A = s->model->num_anchors, pre = s->model->config.rpn_pre_nms_top_n;
  size_t n = 0, cls_end = 0, bbox_end = 0;
  for (int l = 0; l < MRCNN_FPN_LEVELS; l++) {
    int h = s->fpn_h[l], w = s->fpn_w[l];
    size_t count = (size_t) h * w * A;
    size_t cls_frame = (size_t) h * w * p->cls.out_channels;
    size_t bbox_frame = (size_t) h * w * p->bbox.out_channels;
    lv->start[l] = (int) MIN (n, (size_t) INT_MAX);
    lv->cls_offset[l] = cls_end + slot * cls_frame;
    lv->bbox_offset[l] = bbox_end + slot * bbox_frame;
    cls_end = level_end (s, cls_end, s->max_batch * cls_frame);
    bbox_end = level_end (s, bbox_end, s->max_batch * bbox_frame);
    lv->grid_w[l] = w;
    /* torchvision's strides: integer division of the padded size */
    lv->stride_x[l] = g->padded_width / w;
    lv->stride_y[l] = g->padded_height / h;
    lv->k[l] = (int) MIN ((size_t) MAX (pre, 0), count);
    n += count;
  }
  /* torchvision's candidate segments hold the top-k of P2 at its largest */
  for (int l = 0; l < MRCNN_FPN_LEVELS; l++)
    if (s->model->config.variant == MRCNN_VARIANT_TORCHVISION
        && lv->k[l] > p->segment_size) {
      g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
          "FPN level %d of a %dx%d input keeps %d boxes before NMS, more "
          "than the %d the RPN workspace holds", l, g->padded_width,
          g->padded_height, lv->k[l], p->segment_size);
      return FALSE;
    }
  if (n > (size_t) p->max_anchors || cls_end > p->logits_size
      || bbox_end > p->deltas_size) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
        "the FPN levels of a %dx%d input hold %zu anchors, more than the %d "
        "the RPN workspace holds", g->padded_width, g->padded_height, n,
        p->max_anchors);
    return FALSE;
  }
  lv->start[MRCNN_FPN_LEVELS] = (int) n;
  return TRUE;
}

gboolean
cuda_rpn_head_run (CudaState *s, int n, GError **error)
{
  CudaProposals *p = &s->rpn;
  Levels lv;
  if (!plan_levels (s, 0, &lv, error))
    return FALSE;
  for (int l = 0; l < MRCNN_FPN_LEVELS; l++) {
    int h = s->fpn_h[l], w = s->fpn_w[l];
    void *logits = (char *) p->logits + lv.cls_offset[l] * s->act_size;
    void *deltas = (char *) p->deltas + lv.bbox_offset[l] * s->act_size;
    const void *hidden = s->fpn_slots[l];
    for (int j = 0; j < p->n_convs; j++) {
      void *out = p->hidden[j % 2];
      if (!cuda_conv_forward (s, &p->convs[j], hidden, n, h, w, out, NULL,
              error))
        return FALSE;
      hidden = out;
    }
    if (!cuda_conv_forward (s, &p->cls, hidden, n, h, w, logits, NULL, error)
        || !cuda_conv_forward (s, &p->bbox, hidden, n, h, w, deltas, NULL,
            error))
      return FALSE;
  }
  s->rpn_head_frames = n;
  return TRUE;
}

/* Bitmask and greedy walk over the candidates of each segment. */
template <bool TF>
static gboolean
run_nms (CudaState *s, const SegmentCounts *counts, int largest,
    const uint8_t *valid, int max_output, GError **error)
{
  CudaProposals *p = &s->rpn;
  const MrcnnConfig *c = &s->model->config;
  unsigned words = (unsigned) MAX ((largest + NMS_BLOCK - 1) / NMS_BLOCK, 1);
  dim3 grid (words, words, p->n_segments);
  nms_mask_kernel<TF><<<grid, NMS_BLOCK, 0, s->stream>>> (
      (const float4 *) p->cand_boxes, *counts, p->segment_size,
      p->mask_words, c->rpn_nms_thresh, p->nms_mask);
  if (!CUDA_CHECK_LAUNCH ("the RPN NMS bitmask", error))
    return FALSE;
  nms_walk_kernel<<<p->n_segments, THREADS,
      (size_t) MAX (p->mask_words, 1) * sizeof (uint64_t), s->stream>>> (
      p->nms_mask, valid, *counts, p->segment_size, p->mask_words,
      max_output, p->keep, p->keep_count);
  return CUDA_CHECK_LAUNCH ("the RPN NMS", error);
}

/* cpu_proposals: per-level top-k by logit, decode, clip, small-box and
 * score filter, NMS per level, the best rpn_post_nms_top_n by score. */
template <typename T>
static gboolean
run_torchvision (CudaState *s, const Levels *lv, GError **error)
{
  CudaProposals *p = &s->rpn;
  const MrcnnConfig *c = &s->model->config;
  const MrcnnGeometry *g = &s->geometry;
  int n = lv->start[MRCNN_FPN_LEVELS];
  torchvision_keys_kernel<T><<<grid_for (n), THREADS, 0, s->stream>>> (
      (const T *) p->logits, *lv, p->keys, p->values);
  if (!CUDA_CHECK_LAUNCH ("ranking the anchors", error)
      || !sort_pairs (s, n, LEVEL_KEY_BITS, "sorting the anchors", error))
    return FALSE;

  dim3 grid (grid_for (p->segment_size), MRCNN_FPN_LEVELS);
  torchvision_candidates_kernel<T><<<grid, THREADS, 0, s->stream>>> (
      (const T *) p->logits, (const T *) p->deltas, p->sorted_values,
      p->base_anchors, s->model->num_anchors, *lv, p->segment_size,
      (float) g->width, (float) g->height, c->bbox_xform_clip,
      c->rpn_min_size, c->rpn_score_thresh, (float4 *) p->cand_boxes,
      p->cand_scores, p->cand_valid);
  if (!CUDA_CHECK_LAUNCH ("decoding the proposals", error))
    return FALSE;

  SegmentCounts counts;
  int largest = 0;
  for (int l = 0; l < MRCNN_FPN_LEVELS; l++) {
    counts.n[l] = lv->k[l];
    largest = MAX (largest, lv->k[l]);
  }
  if (!run_nms<false> (s, &counts, largest, p->cand_valid, INT_MAX, error))
    return FALSE;

  int slots = p->n_segments * p->segment_size;
  merge_keys_kernel<<<grid_for (slots), THREADS, 0, s->stream>>> (p->keep,
      p->keep_count, p->cand_scores, p->segment_size, slots, p->keys,
      p->values);
  if (!CUDA_CHECK_LAUNCH ("ranking the kept proposals", error)
      || !sort_pairs (s, slots, SCORE_KEY_BITS, "sorting the kept proposals",
          error))
    return FALSE;
  gather_proposals_kernel<<<grid_for (s->max_proposals), THREADS, 0,
      s->stream>>> ((const float4 *) p->cand_boxes, p->sorted_values,
      p->keep_count, p->n_segments, s->max_proposals, false,
      (float4 *) s->proposals, s->n_proposals);
  return CUDA_CHECK_LAUNCH ("writing the proposals", error);
}

/* cpu_proposals_matterport: softmax, global top PRE_NMS_LIMIT, decode,
 * clip to [0, 1], TF NMS to POST_NMS_ROIS, zero rows after the kept. */
template <typename T>
static gboolean
run_matterport (CudaState *s, const Levels *lv, GError **error)
{
  CudaProposals *p = &s->rpn;
  const MrcnnConfig *c = &s->model->config;
  int n = lv->start[MRCNN_FPN_LEVELS];
  if (n != p->n_anchors) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
        "the FPN levels hold %d anchors, but a %dx%d input has %d", n,
        p->anchors_w, p->anchors_h, p->n_anchors);
    return FALSE;
  }
  matterport_keys_kernel<T><<<grid_for (n), THREADS, 0, s->stream>>> (
      (const T *) p->logits, *lv, p->keys, p->values);
  if (!CUDA_CHECK_LAUNCH ("ranking the anchors", error)
      || !sort_pairs (s, n, SCORE_KEY_BITS, "sorting the anchors", error))
    return FALSE;

  int k = MIN (p->segment_size, n);
  float4 std_dev = make_float4 (c->rpn_bbox_std[0], c->rpn_bbox_std[1],
      c->rpn_bbox_std[2], c->rpn_bbox_std[3]);
  matterport_candidates_kernel<T><<<grid_for (k), THREADS, 0, s->stream>>> (
      (const T *) p->deltas, (const float4 *) p->anchors, p->sorted_values, k,
      *lv, std_dev, (float4 *) p->cand_boxes);
  if (!CUDA_CHECK_LAUNCH ("decoding the proposals", error))
    return FALSE;

  SegmentCounts counts = { { k } };
  if (!run_nms<true> (s, &counts, k, NULL, s->max_proposals, error))
    return FALSE;
  gather_proposals_kernel<<<grid_for (s->max_proposals), THREADS, 0,
      s->stream>>> ((const float4 *) p->cand_boxes, p->keep, p->keep_count,
      1, s->max_proposals, true, (float4 *) s->proposals, s->n_proposals);
  return CUDA_CHECK_LAUNCH ("writing the proposals", error);
}

gboolean
cuda_proposals_run (CudaState *s, GError **error)
{
  CudaProposals *p = &s->rpn;
  const MrcnnGeometry *g = &s->geometry;
  gboolean matterport =
      s->model->config.variant == MRCNN_VARIANT_MATTERPORT;
  Levels lv;
  /* a lone frame's head runs here; a batch's ran with its backbone */
  if (s->rpn_head_frames == 0 && !cuda_rpn_head_run (s, 1, error))
    return FALSE;
  if (s->slot >= s->rpn_head_frames) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
        "the RPN head has not run on frame %d of the batch", s->slot);
    return FALSE;
  }
  if (!plan_levels (s, s->slot, &lv, error))
    return FALSE;
  /* anchors depend only on the padded size: square mode makes them once */
  if (matterport && (p->anchors_h != g->padded_height
          || p->anchors_w != g->padded_width)
      && !make_matterport_anchors (s, g->padded_height, g->padded_width,
          error))
    return FALSE;
  if (matterport)
    return s->half ? run_matterport<__half> (s, &lv, error)
        : run_matterport<float> (s, &lv, error);
  return s->half ? run_torchvision<__half> (s, &lv, error)
      : run_torchvision<float> (s, &lv, error);
}
