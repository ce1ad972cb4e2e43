/* RPN head on every FPN level, anchors, decoding and filter_proposals. */
#include "cpu_backend.h"

#include <math.h>
#include <string.h>

gboolean
cpu_rpn_head (CpuState *s, GError **error)
{
  const MrcnnModel *m = s->model;
  gboolean two_way = m->config.variant == MRCNN_VARIANT_MATTERPORT;
  int A = m->num_anchors, B = s->block, n = m->n_rpn_convs;
  float *logits = s->scratch[1], *deltas = s->scratch[2];
  int start = 0;
  for (int l = 0; l < MRCNN_FPN_LEVELS; l++) {
    size_t plane = (size_t) s->plan->fpn_h[l] * s->plan->fpn_w[l];
    const float *hidden = s->fpn_blocked[l];
    for (int j = 0; j < n; j++) {
      float *out = s->scratch[j % 2 ? 3 : 0];
      cpu_prim_run (s, &s->plan->rpn[l][j], hidden, out);
      hidden = out;
    }
    cpu_prim_run (s, &s->plan->rpn[l][n], hidden, logits);
    cpu_prim_run (s, &s->plan->rpn[l][n + 1], hidden, deltas);
    s->level_start[l] = start;
    /* NHWC order: anchor a of a cell has logit a (matterport: 2a for the
     * background, 2a + 1 for the foreground) and deltas 4a .. 4a + 3 */
#pragma omp parallel for
    for (size_t p = 0; p < plane; p++)
      for (int a = 0; a < A; a++) {
        size_t j = start + p * A + a;
        if (two_way) {
          float bg = logits[blocked_at (2 * a, p, plane, B)];
          float fg = logits[blocked_at (2 * a + 1, p, plane, B)];
          float top = MAX (bg, fg);
          float e_bg = expf (bg - top), e_fg = expf (fg - top);
          s->objectness[j] = e_fg / (e_bg + e_fg);
        } else {
          s->objectness[j] = logits[blocked_at (a, p, plane, B)];
        }
        for (int k = 0; k < 4; k++)
          s->rpn_deltas[4 * j + k] = deltas[blocked_at (4 * a + k, p, plane,
                  B)];
      }
    start += (int) (plane * A);
  }
  s->level_start[MRCNN_FPN_LEVELS] = start;
  s->n_anchors = start;
  return cpu_onednn_check (s, "RPN head", error);
}

gboolean
cpu_proposals (CpuState *s, GError **error)
{
  const MrcnnModel *m = s->model;
  const MrcnnConfig *c = &m->config;
  const MrcnnGeometry *g = &s->geometry;
  int A = m->num_anchors;
  static const float unit_weights[4] = { 1, 1, 1, 1 };
  if (!cpu_rpn_head (s, error))
    return FALSE;

  /* per level: top-k by logit, decode, clip, drop tiny boxes */
  int n = 0;
  for (int l = 0; l < MRCNN_FPN_LEVELS; l++) {
    int first = s->level_start[l], count = s->level_start[l + 1] - first;
    int k = MIN (c->rpn_pre_nms_top_n, count);
    int w = s->plan->fpn_w[l];
    int stride_y = g->padded_height / s->plan->fpn_h[l];
    int stride_x = g->padded_width / w;
    float base[MRCNN_MAX_ANCHOR_SHAPES * MRCNN_MAX_ANCHOR_SHAPES][4];
    mrcnn_base_anchors (c, l, &base[0][0]);
    mrcnn_argsort_desc (s->objectness + first, count, s->order,
        s->sort_scratch);
    for (int i = 0; i < k; i++) {
      int j = s->order[i];
      float anchor[4];
      mrcnn_level_anchor (&base[0][0], A, w, stride_x, stride_y, j, anchor);
      float *box = s->cand_boxes + 4 * n;
      mrcnn_decode_box (anchor, s->rpn_deltas + 4 * (size_t) (first + j),
          unit_weights, c->bbox_xform_clip, box);
      mrcnn_clip_box (box, (float) g->width, (float) g->height);
      float score = 1.0f / (1.0f + expf (-s->objectness[first + j]));
      if (box[2] - box[0] >= c->rpn_min_size
          && box[3] - box[1] >= c->rpn_min_size
          && score >= c->rpn_score_thresh) {
        s->cand_scores[n] = score;
        s->cand_level[n] = l;
        n++;
      }
    }
  }

  /* NMS per level: candidates of a level are contiguous and already in
   * descending score order (sigmoid is monotonic, top-k sorted by logit) */
  int n_keep = 0;
  for (int l = 0, i = 0; l < MRCNN_FPN_LEVELS; l++) {
    int begin = i;
    while (i < n && s->cand_level[i] == l)
      i++;
    for (int j = begin; j < i; j++)
      s->order[j - begin] = j;
    n_keep += mrcnn_nms (s->cand_boxes, s->order, i - begin,
        c->rpn_nms_thresh, s->removed, s->keep + n_keep);
  }

  /* merge levels by score; kept indices are in candidate order, so the
   * stable sort breaks ties as torch does */
  float *kept_scores = s->cand_scores + n; /* spare room after candidates */
  for (int i = 0; i < n_keep; i++)
    kept_scores[i] = s->cand_scores[s->keep[i]];
  mrcnn_argsort_desc (kept_scores, n_keep, s->order, s->sort_scratch);
  s->n_proposals = MIN (n_keep, c->rpn_post_nms_top_n);
  for (int i = 0; i < s->n_proposals; i++)
    memcpy (s->proposals + 4 * i, s->cand_boxes + 4 * s->keep[s->order[i]],
        4 * sizeof (float));
  return TRUE;
}
