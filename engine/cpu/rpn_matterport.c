/* matterport's RPN and ProposalLayer (A.5, A.6): a 2-way softmax per
 * anchor, the global top PRE_NMS_LIMIT, deltas times RPN_BBOX_STD_DEV on
 * normalised anchors, clip to [0, 1], TF NMS, and exactly
 * POST_NMS_ROIS_INFERENCE proposals, zero rows after the kept ones. */
#include "cpu_backend.h"

#include <string.h>

gboolean
cpu_proposals_matterport (CpuState *s, GError **error)
{
  const MrcnnConfig *c = &s->model->config;
  const MrcnnGeometry *g = &s->geometry;
  /* anchors depend only on the padded size: square mode makes them once */
  if (s->anchors_h != g->padded_height || s->anchors_w != g->padded_width) {
    mrcnn_matterport_anchors (c, g->padded_height, g->padded_width,
        s->anchors);
    s->anchors_h = g->padded_height;
    s->anchors_w = g->padded_width;
  }
  if (!cpu_rpn_head (s, error))
    return FALSE;

  /* tf.nn.top_k over all levels: descending, ties to the lower index */
  int k = MIN (c->rpn_pre_nms_top_n, s->n_anchors);
  mrcnn_argsort_desc (s->objectness, s->n_anchors, s->order,
      s->sort_scratch);
  static const float unit_window[4] = { 0, 0, 1, 1 };
  for (int i = 0; i < k; i++) {
    int j = s->order[i];
    float *box = s->cand_boxes + 4 * i;
    mrcnn_decode_box_matterport (s->anchors + 4 * (size_t) j,
        s->rpn_deltas + 4 * (size_t) j, c->rpn_bbox_std, box);
    mrcnn_clip_box_window (box, unit_window);
    s->sort_scratch[i] = i;
  }
  int post = c->rpn_post_nms_top_n;
  int n = mrcnn_tf_nms (s->cand_boxes, s->sort_scratch, k, c->rpn_nms_thresh,
      post, s->removed, s->keep);
  for (int i = 0; i < n; i++)
    memcpy (s->proposals + 4 * i, s->cand_boxes + 4 * s->keep[i],
        4 * sizeof (float));
  memset (s->proposals + 4 * n, 0, sizeof (float) * 4 * (post - n));
  s->n_proposals = post;
  return TRUE;
}
