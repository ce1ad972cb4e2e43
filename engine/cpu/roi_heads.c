/* Box head with postprocess_detections, and the mask head. */
#include "cpu_backend.h"

#include <oneapi/dnnl/dnnl.h>
#include <math.h>
#include <string.h>

void
cpu_box_head (CpuState *s)
{
  const MrcnnModel *m = s->model;
  int P = m->config.box_roi_size, n = s->n_proposals;
  size_t per_roi = (size_t) m->fpn_channels * P * P;
#pragma omp parallel for schedule(dynamic, 8)
  for (int i = 0; i < n; i++)
    cpu_roi_pool (s, s->proposals + 4 * i, P, s->box_features + i * per_roi);

  /* the convolutions (v2) run a chunk of proposals per GEMM, and the first
   * fully connected layer takes each chunk's output */
  float *hidden[2] = { s->fc_a, s->fc_b };
  const MrcnnLinear *fc = &m->box_fcs[0];
  if (m->n_box_convs == 0) {
    cpu_linear (fc, s->box_features, n, hidden[0], TRUE);
  } else {
    for (int first = 0; first < n; first += s->box_chunk) {
      int rows = MIN (s->box_chunk, n - first);
      const float *x = s->box_features + first * per_roi;
      for (int j = 0; j < m->n_box_convs; j++) {
        float *y = j % 2 ? s->box_b : s->box_a;
        cpu_conv2d_many (&m->box_convs[j], x, rows, P, P, y, s->box_gemm,
            s->col);
        x = y;
      }
      cpu_linear (fc, x, rows, hidden[0] + (size_t) first * fc->out_features,
          TRUE);
    }
  }
  for (int j = 1; j < m->n_box_fcs; j++)
    cpu_linear (&m->box_fcs[j], hidden[(j - 1) % 2], n, hidden[j % 2], TRUE);
  const float *features = hidden[(m->n_box_fcs - 1) % 2];
  cpu_linear (&m->cls_score, features, n, s->class_logits, FALSE);
  cpu_linear (&m->bbox_pred, features, n, s->box_regression, FALSE);
}

void
cpu_select_detections (CpuState *s, int n, const MrcnnThresholds *t)
{
  s->n_detections = 0;
  if (n <= 0)
    return;
  int K = s->model->num_classes;
  gboolean tf_nms = s->model->config.variant == MRCNN_VARIANT_MATTERPORT;
  int *order = s->det_order, *by_class = s->det_order + n, *keep = s->keep;
  int *start = s->class_start; /* counts, then each class's first index */
  mrcnn_argsort_desc (s->det_cand_scores, n, order, by_class);
  memset (start, 0, sizeof (int) * K);
  for (int i = 0; i < n; i++)
    start[s->det_cand_labels[i]]++;
  for (int k = 1; k < K; k++)
    start[k] += start[k - 1];
  for (int i = n - 1; i >= 0; i--)
    by_class[--start[s->det_cand_labels[order[i]]]] = order[i];
  int n_keep = 0;
  for (int k = 1; k < K; k++) {
    int begin = start[k], stop = k + 1 < K ? start[k + 1] : n;
    if (t->keep_class && !t->keep_class[k])
      continue;
    n_keep += tf_nms
        ? mrcnn_tf_nms (s->det_cand_boxes, by_class + begin, stop - begin,
        t->nms, t->max_detections, s->removed, keep + n_keep)
        : mrcnn_nms (s->det_cand_boxes, by_class + begin, stop - begin,
        t->nms, s->removed, keep + n_keep);
  }

  /* kept candidates by score; ties in candidate order, as torch sorts and
   * as top_k takes the lower index */
  uint8_t *kept = s->removed;
  memset (kept, 0, (size_t) n);
  for (int i = 0; i < n_keep; i++)
    kept[keep[i]] = 1;
  for (int i = 0; i < n && s->n_detections < t->max_detections; i++) {
    int j = order[i];
    if (!kept[j])
      continue;
    int d = s->n_detections++;
    memcpy (s->det_boxes + 4 * d, s->det_cand_boxes + 4 * j,
        4 * sizeof (float));
    s->det_scores[d] = s->det_cand_scores[j];
    s->det_labels[d] = s->det_cand_labels[j];
  }
}

void
cpu_detect (CpuState *s, const MrcnnThresholds *t)
{
  const MrcnnModel *m = s->model;
  const MrcnnConfig *c = &m->config;
  int K = m->num_classes;
  float w = (float) s->geometry.width, h = (float) s->geometry.height;
  cpu_roi_setup (s);
  cpu_box_head (s);

  /* every (proposal, class) pair above the score threshold is a candidate,
   * proposal-major as torchvision flattens them */
  int n = 0;
  for (int i = 0; i < s->n_proposals; i++) {
    float *logits = s->class_logits + (size_t) i * K;
    float max = logits[0];
    for (int k = 1; k < K; k++)
      max = MAX (max, logits[k]);
    float sum = 0;
    for (int k = 0; k < K; k++)
      sum += expf (logits[k] - max);
    for (int k = 1; k < K; k++) {
      float score = expf (logits[k] - max) / sum;
      if (!(score > t->score))
        continue;
      float *box = s->det_cand_boxes + 4 * n;
      mrcnn_decode_box (s->proposals + 4 * i,
          s->box_regression + ((size_t) i * K + k) * 4, c->box_coder_weights,
          c->bbox_xform_clip, box);
      mrcnn_clip_box (box, w, h);
      /* remove_small_boxes keeps w >= min and h >= min: NaN boxes go too */
      if (!(box[2] - box[0] >= c->box_min_size
              && box[3] - box[1] >= c->box_min_size))
        continue;
      s->det_cand_scores[n] = score;
      s->det_cand_labels[n] = k;
      n++;
    }
  }

  cpu_select_detections (s, n, t);
}

/* The mask head on detections [first, first + n), n <= mask_chunk: every
 * layer is one GEMM over the chunk. */
static void
mask_chunk (CpuState *s, int first, int n)
{
  const MrcnnModel *m = s->model;
  const MrcnnDeconv *dc = &m->mask_deconv;
  int P = m->config.mask_roi_size, P2 = 2 * P;
  size_t plane = (size_t) P * P, ld = (size_t) n * plane;
  int cin = dc->in_channels, cout = dc->out_channels;
  float *x = s->mask_a, *y = s->mask_b;
#pragma omp parallel for
  for (int r = 0; r < n; r++)
    cpu_roi_pool (s, s->det_boxes + 4 * (first + r), P,
        x + (size_t) r * m->fpn_channels * plane);
  for (int j = 0; j < m->n_mask_layers; j++) {
    cpu_conv2d_many (&m->mask_layers[j], x, n, P, P, y, s->mask_gemm, s->col);
    float *tmp = x;
    x = y;
    y = tmp;
  }

  /* deconv 2x2 stride 2 as [4 Cout][Cin] x [Cin][n P P], then a pixel
   * shuffle with bias and ReLU into y = [n][Cout][2P][2P] */
#pragma omp parallel for collapse(2)
  for (int r = 0; r < n; r++)
    for (int c = 0; c < cin; c++)
      memcpy (s->col + c * ld + r * plane, x + ((size_t) r * cin + c) * plane,
          sizeof (float) * plane);
  dnnl_sgemm ('N', 'N', 4 * cout, (dnnl_dim_t) ld, cin, 1.0f, dc->weight,
      cin, s->col, (dnnl_dim_t) ld, 0.0f, s->mask_gemm, (dnnl_dim_t) ld);
  for (int r = 0; r < n; r++)
    for (int o = 0; o < cout; o++)
      for (int tap = 0; tap < 4; tap++) {
        const float *src = s->mask_gemm + ((size_t) o * 4 + tap) * ld
            + r * plane;
        float *dst = y + ((size_t) r * cout + o) * P2 * P2;
        int a = tap / 2, b = tap % 2;
        for (int i = 0; i < P; i++)
          for (int jx = 0; jx < P; jx++) {
            float v = src[i * P + jx] + dc->bias[o];
            dst[(2 * i + a) * P2 + 2 * jx + b] = v > 0 ? v : 0;
          }
      }

  /* logits of the detected class only, then sigmoid */
#pragma omp parallel for
  for (int r = 0; r < n; r++) {
    int label = s->det_labels[first + r];
    const float *wl = m->mask_logits.weight + (size_t) label * cout;
    const float *feat = y + (size_t) r * cout * P2 * P2;
    float *probs = s->mask_probs + (size_t) (first + r) * P2 * P2;
    for (int p = 0; p < P2 * P2; p++) {
      float v = m->mask_logits.bias[label];
      for (int ch = 0; ch < cout; ch++)
        v += wl[ch] * feat[(size_t) ch * P2 * P2 + p];
      /* a NaN logit (overflowed activations) is no mask, not a NaN one */
      probs[p] = isnan (v) ? 0.0f : 1.0f / (1.0f + expf (-v));
    }
  }
}

void
cpu_masks (CpuState *s)
{
  for (int d = 0; d < s->n_detections; d += s->mask_chunk)
    mask_chunk (s, d, MIN (s->mask_chunk, s->n_detections - d));
}
