/* CPU backend: float32; the backbone, FPN and RPN head through oneDNN
 * primitives on activations in oneDNN's blocked layout (onednn.c), the FPN
 * maps reordered to NCHW for the heads, whose convolutions and fully
 * connected layers are oneDNN matrix products; everything else in plain C
 * (OpenMP where it is worth it).  A state runs one image at a time; an
 * engine's lanes (create_lane) are states that run the frames of a batch
 * side by side, sharing the weights.  Stages
 * whose arithmetic differs between torchvision and matterport have a
 * function per variant (the _matterport ones, MODEL_SPEC Part A). */
#ifndef MRCNN_CPU_BACKEND_H
#define MRCNN_CPU_BACKEND_H

#include "../backend.h"

#include <oneapi/dnnl/dnnl.h>

/* Where a detection's mask lands in the original image. */
typedef struct {
  int64_t x1, y1, x2, y2;   /* box expanded by the mask border, truncated */
  int x0, y0, x_end, y_end; /* clipped to the image */
} PasteBox;

/* A oneDNN primitive made for one input size and its memory objects, whose
 * data pointers are set at each run. */
typedef struct {
  dnnl_primitive_t prim;
  dnnl_memory_t src, dst, weights, bias, scratch;
} CpuPrim;

/* The weights in the primitives' layouts, MrcnnConv -> GPtrArray of
 * dnnl_memory_t (one per layout wanted), reordered by whichever lane first
 * wants a layout and read by all of an engine's lanes (create_lane):
 * `lock` guards the table and its arrays (plans are made while other lanes
 * run); a weights object, once made, is only read.  The first lane owns it
 * and is destroyed last. */
typedef struct {
  GMutex lock;
  GHashTable *by_conv;
} CpuWeights;

/* Plans kept, for streams of a few frame sizes sharing an engine. */
#define CPU_PLANS 4

/* The oneDNN primitives for one padded input size and thread count. */
typedef struct {
  int height, width, threads; /* 0: unused */
  guint64 last_used;
  CpuPrim stem, pool;
  CpuPrim *blocks[4];       /* [block][conv1, conv2, conv3, downsample] */
  CpuPrim fpn_inner[4], fpn_layer[4];
  CpuPrim fpn_nchw[MRCNN_FPN_LEVELS]; /* blocked P2..P6 to NCHW */
  CpuPrim rpn[MRCNN_FPN_LEVELS][MRCNN_MAX_RPN_CONVS + 2]; /* convs, cls,
                               bbox */
  int pool_h, pool_w;        /* the stem's max pool output, C1 */
  int stage_h[4], stage_w[4];
  int fpn_h[MRCNN_FPN_LEVELS], fpn_w[MRCNN_FPN_LEVELS];
} CpuPlan;

typedef struct {
  const MrcnnModel *model;
  MrcnnGeometry geometry;

  /* preprocessing */
  float *input;             /* [3][padded_h][padded_w] */
  float lut[3][256];        /* uint8 -> normalised value per channel */
  int *taps_i0, *taps_i1;   /* resize taps, rows then columns */
  float *taps_lambda;
  double *taps_w0, *taps_w1; /* matterport: skimage weights of i0, i0 + 1 */

  /* oneDNN: the engine (the first lane's), this lane's stream, its plans
   * (the primitives of the backbone, FPN and RPN head for a padded size,
   * onednn.c) and the weights in the primitives' layouts, shared by the
   * lanes */
  dnnl_engine_t dnnl;
  dnnl_stream_t stream;
  dnnl_format_tag_t act_tag; /* activations' layout: nChw8c or nChw16c */
  int block;                /* its channel block, 8 or 16 */
  CpuPlan plans[CPU_PLANS];
  CpuPlan *plan;            /* this frame's */
  guint64 plan_clock;
  CpuWeights *weights;
  gboolean borrowed;        /* dnnl and weights are the first lane's */
  void *dnnl_scratch;       /* every primitive's scratchpad */
  size_t dnnl_scratch_size, dnnl_scratch_allocated;
  dnnl_status_t run_status; /* first failed run since the last check */

  /* backbone and FPN; blocked unless said otherwise */
  float *stage_out[4];      /* C2..C5, of plan->stage_h/w */
  float *fpn_blocked[MRCNN_FPN_LEVELS];
  float *fpn[MRCNN_FPN_LEVELS]; /* NCHW, for the heads; plan->fpn_h/w */
  float *scratch[4];        /* each holds the largest activation */
  float *col;               /* im2col tile of the heads' convolutions */
  size_t col_size;

  /* RPN */
  float *objectness;        /* all anchors, level-major, (y*W + x)*A + a;
                               matterport: the foreground probability */
  float *rpn_deltas;        /* [anchor][dx, dy, dw, dh]; matterport:
                               [dy, dx, dh, dw] */
  float *anchors;           /* matterport: [anchor][4], normalised */
  int anchors_h, anchors_w; /* the padded size they were made for */
  int n_anchors;
  int level_start[MRCNN_FPN_LEVELS + 1];
  int *order;               /* sort output and scratch, one entry per anchor */
  int *sort_scratch;
  float *cand_boxes;        /* [candidate][4] */
  float *cand_scores;
  int *cand_level;
  uint8_t *removed;
  int *keep;
  int n_proposals;
  float *proposals;         /* [n][4], resized-image pixels; matterport:
                               normalised (y1, x1, y2, x2), zero padded */

  /* ROI heads */
  int roi_k_min, roi_k_max; /* pyramid levels of P2 and P5 for this image */
  float roi_scale[MRCNN_ROI_LEVELS];
  float *box_features;      /* [proposal][C * P * P] */
  int box_chunk;            /* proposals per box-head conv GEMM */
  float *box_a, *box_b;     /* box-head convs: [proposal in chunk][C][P][P] */
  float *box_gemm;          /* [channel][proposal in chunk][P][P] */
  float *fc_a, *fc_b;       /* [proposal][features], fully connected layers
                               in turn */
  float *class_logits;      /* [proposal][classes] */
  float *box_regression;    /* [proposal][4 * classes] */
  float *det_cand_boxes;    /* [proposal * (classes - 1)][4] */
  float *det_cand_scores;
  int *det_cand_labels;
  int *det_order;           /* candidates by score, then grouped by class */
  int *class_start;         /* [class] */
  int n_detections;
  float *det_boxes;         /* [detection][4], resized pixels; matterport:
                               normalised (y1, x1, y2, x2) */
  float *det_scores;
  int *det_labels;
  float *det_dump;          /* [detection][6], filled by inspect() */

  int mask_chunk;           /* detections per mask-head GEMM */
  float *mask_a, *mask_b;   /* [detection in chunk][C][P][P] */
  float *mask_gemm;         /* [channel][detection in chunk][P][P] */
  float *mask_probs;        /* [detection][2P][2P] */
  PasteBox *paste;          /* [detection] */
  int *det_source;          /* matterport: detection behind each result */
  int threads;              /* OpenMP threads of a detection */
} CpuState;

static inline int
conv_out_size (int in, const MrcnnConv *conv)
{
  return (in + 2 * conv->pad - conv->kernel) / conv->stride + 1;
}

/* Offset of channel c of pixel p in a blocked activation of `plane`
 * pixels a channel. */
static inline size_t
blocked_at (int c, size_t p, size_t plane, int block)
{
  return ((size_t) (c / block) * plane + p) * block + c % block;
}

/* Floats of c channels of `plane` pixels, channels padded to the block. */
static inline size_t
blocked_size (int c, size_t plane, int block)
{
  return (size_t) ((c + block - 1) / block) * block * plane;
}

/* oneDNN's engine, the weights' table and the activation layout (made for
 * the first lane, first == NULL; else first's), and the lane's stream. */
gboolean cpu_onednn_init (CpuState *s, const CpuState *first,
    GError **error);
void cpu_onednn_destroy (CpuState *s);
/* s->plan: the plan for s->geometry's padded size and s->threads, made
 * unless kept (the least recently used of CPU_PLANS makes way); it also
 * holds the frame's stage and FPN map sizes. */
gboolean cpu_onednn_plan (CpuState *s, GError **error);
/* Runs p from src into dst; a failure is kept for cpu_onednn_check. */
void cpu_prim_run (CpuState *s, CpuPrim *p, const float *src, float *dst);
/* FALSE with an error naming the stage when a run failed since the last
 * check. */
gboolean cpu_onednn_check (CpuState *s, const char *stage, GError **error);
/* relu(conv) of n images, each [C][h][w] and contiguous, in one GEMM;
 * col holds C k k x n oh ow floats, gemm_out O x n oh ow. */
void cpu_conv2d_many (const MrcnnConv *conv, const float *in, int n, int h,
    int w, float *out, float *gemm_out, float *col);
/* out[n][out] = act(in[n][in] W^T + b) */
void cpu_linear (const MrcnnLinear *fc, const float *in, int n, float *out,
    gboolean relu);
/* dst = nearest-neighbour resize of src, c channels blocked by `block`
 * (FPN top-down path). */
void cpu_upsample_nearest (float *dst, int c, int h, int w, const float *src,
    int sh, int sw, int block);

void cpu_preprocess (CpuState *s, const MrcnnImage *image);
/* mold_image: skimage resize, back to uint8, minus MEAN_PIXEL, centred
 * zero-pixel padding. */
void cpu_preprocess_matterport (CpuState *s, const MrcnnImage *image);
gboolean cpu_backbone (CpuState *s, GError **error);
/* The RPN head's convolutions on every FPN level: objectness (the logit;
 * matterport: the foreground's 2-way softmax) and deltas per anchor, in
 * anchor order. */
gboolean cpu_rpn_head (CpuState *s, GError **error);
gboolean cpu_proposals (CpuState *s, GError **error);
/* RPN with 2-way softmax, global top-k, TF NMS, zero-padded proposals. */
gboolean cpu_proposals_matterport (CpuState *s, GError **error);
/* tf.image.crop_and_resize (bilinear, extrapolation 0) of one normalised
 * box into out [c][crop][crop]. */
void cpu_crop_and_resize (const float *features, int c, int h, int w,
    const float *box, int crop, float *out);
/* TorchVision roi_align (aligned=False) of one box on one feature map. */
void cpu_roi_align (const float *features, int c, int h, int w, float scale,
    const float *box, int pooled, int sampling_ratio, float *out);
/* The level and scale MultiScaleRoIAlign uses for this image. */
void cpu_roi_setup (CpuState *s);
/* One box's pooled features [C][pooled][pooled]: MultiScaleRoIAlign, or
 * PyramidROIAlign for matterport. */
void cpu_roi_pool (CpuState *s, const float *box, int pooled, float *out);
/* ROI pooling and the box head on every proposal. */
void cpu_box_head (CpuState *s);
/* Per-class NMS over the n candidates in det_cand_*, then the best
 * max_detections survivors by score into det_*: candidates sorted by score
 * (stable: ties keep candidate order), grouped by class with a stable
 * counting sort, each class suppressed in score order (torchvision's
 * batched NMS, or matterport's TF NMS capped at max_detections). */
void cpu_select_detections (CpuState *s, int n, const MrcnnThresholds *t);
void cpu_detect (CpuState *s, const MrcnnThresholds *t);
/* DetectionLayer: argmax class per ROI, per-class TF NMS. */
void cpu_detect_matterport (CpuState *s, const MrcnnThresholds *t);
void cpu_masks (CpuState *s);
void cpu_paste (CpuState *s, const MrcnnThresholds *t, MrcnnResult *result);
/* unmold_detections: integer boxes, skimage-resized binary masks. */
void cpu_paste_matterport (CpuState *s, const MrcnnThresholds *t,
    MrcnnResult *result);

#endif
