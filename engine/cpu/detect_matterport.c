/* matterport's box head outputs through DetectionLayer
 * (refine_detections_graph, A.8): one candidate per ROI, its argmax class
 * (background included, which drops it), deltas times BBOX_STD_DEV, clip
 * to the image window, the score filter (off when the threshold is 0),
 * TF NMS per class, then the best max_detections by score. */
#include "cpu_backend.h"

#include <math.h>
#include <string.h>

void
cpu_detect_matterport (CpuState *s, const MrcnnThresholds *t)
{
  const MrcnnModel *m = s->model;
  const MrcnnConfig *c = &m->config;
  int K = m->num_classes;
  float window[4];
  mrcnn_norm_window (&s->geometry, window);
  cpu_box_head (s);

  /* candidates in ascending ROI order */
  int n = 0;
  for (int r = 0; r < s->n_proposals; r++) {
    const float *logits = s->class_logits + (size_t) r * K;
    float top = logits[0];
    for (int k = 1; k < K; k++)
      top = MAX (top, logits[k]);
    float sum = 0;
    for (int k = 0; k < K; k++)
      sum += expf (logits[k] - top);
    /* argmax of the probabilities, ties to the first */
    int best = 0;
    float score = expf (logits[0] - top) / sum;
    for (int k = 1; k < K; k++) {
      float p = expf (logits[k] - top) / sum;
      if (p > score) {
        score = p;
        best = k;
      }
    }
    if (best == 0 || (t->score > 0 && score < t->score))
      continue;
    float *box = s->det_cand_boxes + 4 * n;
    mrcnn_decode_box_matterport (s->proposals + 4 * r,
        s->box_regression + ((size_t) r * K + best) * 4, c->bbox_std, box);
    mrcnn_clip_box_window (box, window);
    s->det_cand_scores[n] = score;
    s->det_cand_labels[n] = best;
    n++;
  }

  cpu_select_detections (s, n, t);
}
