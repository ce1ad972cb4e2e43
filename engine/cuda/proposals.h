/* RPN head, anchors, box decoding, top-k and NMS on the device, for both
 * variants. */
#ifndef MRCNN_CUDA_PROPOSALS_H
#define MRCNN_CUDA_PROPOSALS_H

typedef struct {
  /* the head, shared by every level: 3x3 conv + ReLU layers, then the 1x1
   * objectness and box-delta convolutions */
  int n_convs;
  CudaConv convs[MRCNN_MAX_RPN_CONVS];
  CudaConv cls, bbox;
  void *hidden[2];          /* [frame][h][w][conv channels] of P2 of
                               max_batch frames, act type: the convs'
                               outputs in turn */
  /* each level's cls and bbox outputs for max_batch frames, [frame]
   * [anchor][cls channels / A] and [frame][anchor][4] in the act type,
   * levels one after the other, each starting aligned; sizes in values */
  void *logits, *deltas;
  size_t logits_size, deltas_size;
  int max_anchors;          /* anchors of the largest padded input */

  /* torchvision: [level][A][4] base anchors (mrcnn_base_anchors) */
  float *base_anchors;
  /* matterport: normalised (y1, x1, y2, x2) anchors of an anchors_h x
   * anchors_w input, level-major, n_anchors of them (inspect's "anchors") */
  float *anchors;
  int n_anchors;
  int anchors_h, anchors_w;

  /* top-k: (level, descending score) keys and anchor indices, sorted by
   * CUB; the same buffers rank the kept proposals across levels */
  uint64_t *keys, *sorted_keys;
  int *values, *sorted_values;
  void *sort_temp;
  size_t sort_temp_size;

  /* candidates: n_segments NMS segments (torchvision: one per level,
   * matterport: one) of segment_size slots each */
  int n_segments, segment_size;
  int mask_words;           /* 64-bit words per row of the NMS bitmask */
  float *cand_boxes;        /* [slot][4] */
  float *cand_scores;       /* torchvision: [slot] sigmoid of the logit */
  uint8_t *cand_valid;      /* torchvision: survived min size and score */
  uint64_t *nms_mask;       /* [slot][mask_words]: later boxes it drops */
  int *keep;                /* [slot]: kept slots of each segment, in order */
  int *keep_count;          /* [segment] */
} CudaProposals;

/* Uploads the RPN head, allocates its workspace and s->proposals,
 * s->n_proposals. */
gboolean cuda_proposals_create (CudaState *s, GError **error);
void cuda_proposals_destroy (CudaState *s);
/* The head on every level of frames 0..n-1 (s->fpn_slots[]): one launch
 * per layer and level, outputs in the CPU's anchor order (NHWC rows are
 * (y * W + x) * A + a); sets s->rpn_head_frames to n. */
gboolean cuda_rpn_head_run (CudaState *s, int n, GError **error);
/* s->proposals and *s->n_proposals of the frame in s->slot, from its head
 * outputs (after cuda_rpn_head_run on its batch; for a lone frame,
 * s->rpn_head_frames 0, the head runs here first). */
gboolean cuda_proposals_run (CudaState *s, GError **error);

#endif
