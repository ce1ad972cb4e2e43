/* Box ROIAlign over all levels, the box head and detection
 * post-processing with per-class NMS on the device, for both variants. */
#ifndef MRCNN_CUDA_ROI_HEADS_H
#define MRCNN_CUDA_ROI_HEADS_H

/* A fully connected layer on the device: y = x W^T + b. */
typedef struct {
  int in_features, out_features;
  void *weight;   /* [out][in], activation type */
  float *bias;    /* [out] */
} CudaLinear;

typedef struct {
  int classes;              /* K, background included */
  int pooled;               /* box_roi_size */
  /* the box head: convs (v2) on [row][P][P][C] features, then fully
   * connected layers; after convs the first one's weight columns are in
   * (y, x, channel) order, the convs' NHWC output flattened */
  int n_convs, n_fcs;
  CudaConv convs[MRCNN_MAX_BOX_CONVS];
  CudaLinear fcs[MRCNN_MAX_BOX_FCS];
  /* cls_score and bbox_pred stacked into one layer: K logits, then 4 K
   * deltas per row */
  CudaLinear predictor;

  void *features;           /* [max_proposals][C][P][P] (NHWC with convs),
                               activation type */
  void *conv_out[2];        /* the convs' outputs in turn, NHWC */
  float *gemm_out;          /* a layer before bias, [max_proposals][out] */
  void *hidden[2];          /* the fully connected layers' outputs after
                               ReLU in turn, activation type */
  float *predictions;       /* [max_proposals][5 K] */

  /* detection candidates, one slot per (proposal, class > 0) for
   * torchvision or per proposal for matterport; an empty slot has score
   * -inf and label K */
  int n_slots;
  float *cand_boxes;        /* [slot][4] */
  float *cand_scores;
  int *cand_labels;
  int *cand_slot;           /* 0 .. n_slots - 1, the sort's values */
  float *sorted_scores;
  int *order;               /* slots by score, descending, stable */
  int *order_labels;        /* cand_labels[order[i]] */
  int *grouped_labels;
  int *by_class;            /* order regrouped by class, stable */
  int *class_count;         /* [K + 1], candidates per class */
  int *class_start;         /* [K + 1], first index in by_class; [K]: all */
  int label_bits;           /* bits the label sort looks at */
  /* per-class NMS: row i of by_class holds one bit per box of its class
   * (64 per word, nms_words words) for the boxes it suppresses */
  int nms_words;
  uint64_t *nms_mask;
  uint8_t *kept;            /* [slot] */
  uint8_t *class_keep;      /* [K], the class filter of the frame */
  void *sort_temp;
  size_t sort_temp_size;
} CudaRoiHeads;

/* Uploads the box head, allocates its workspace and s->det_*,
 * s->n_detections. */
gboolean cuda_roi_heads_create (CudaState *s, GError **error);
void cuda_roi_heads_destroy (CudaState *s);
/* s->det_* and *s->n_detections from s->proposals, s->fpn[] and
 * s->thresholds. */
gboolean cuda_detect_run (CudaState *s, GError **error);

/* ROIAlign of `rows` boxes given as the CPU backend's (torchvision:
 * MultiScaleRoIAlign of resized-pixel boxes, sampling ratio from the
 * config; matterport: PyramidROIAlign, crop_and_resize of normalised
 * boxes) from s->fpn[], all levels in one launch, into out in the
 * activation type: [row][pooled][pooled][C] when nhwc (input of the mask
 * head's convolutions), else [row][C][pooled][pooled] (the flatten order of
 * the box head's first fully connected layer).  Rows at or past *count
 * (device memory) are written as zeros; a NULL count pools every row. */
gboolean cuda_roi_align (CudaState *s, const float *boxes, const int *count,
    int rows, int pooled, gboolean nhwc, void *out, GError **error);

#endif
