/* CPU backend: workspace sized once from the model, and the stage table. */
#include "cpu_backend.h"

#include <omp.h>
#include <string.h>

/* Channels as a blocked activation holds them (the widest block). */
#define PADDED(c) (((size_t) (c) + 15) / 16 * 16)

typedef struct {
  size_t activation; /* largest backbone/FPN/RPN activation, floats */
  size_t col;        /* im2col tile of the heads' convolutions */
  size_t stage[4];
  size_t fpn[MRCNN_FPN_LEVELS];
  size_t anchors;
} Sizes;

static void
grow_conv (Sizes *z, const MrcnnConv *conv, int *h, int *w)
{
  int oh = conv_out_size (*h, conv), ow = conv_out_size (*w, conv);
  z->activation = MAX (z->activation, PADDED (conv->out_channels) * oh * ow);
  *h = oh;
  *w = ow;
}

/* Runs the network's shapes on the largest input (either orientation has
 * the same areas, and rows are bounded by the longer side). */
static void
plan (const MrcnnModel *m, Sizes *z)
{
  memset (z, 0, sizeof *z);
  int a, b;
  size_t area = mrcnn_geometry_max_padded_area (&m->config, &a, &b);
  int h = (int) (area / b), w = b;
  grow_conv (z, &m->stem, &h, &w);
  h = (h - 1) / 2 + 1;
  w = (w - 1) / 2 + 1;
  for (int L = 0; L < 4; L++) {
    for (int i = 0; i < m->n_blocks[L]; i++) {
      const MrcnnBottleneck *blk = &m->blocks[L][i];
      int h1 = h, w1 = w;
      grow_conv (z, &blk->conv1, &h1, &w1);
      grow_conv (z, &blk->conv2, &h1, &w1);
      if (blk->has_downsample) {
        int hd = h, wd = w;
        grow_conv (z, &blk->downsample, &hd, &wd);
      }
      grow_conv (z, &blk->conv3, &h1, &w1);
      h = h1;
      w = w1;
    }
    z->stage[L] = PADDED (m->stage_channels[L]) * h * w;
    size_t plane = (size_t) h * w;
    int hh = h, ww = w;
    grow_conv (z, &m->fpn_inner[L], &hh, &ww);
    grow_conv (z, &m->fpn_layer[L], &hh, &ww);
    for (int j = 0; j < m->n_rpn_convs; j++)
      grow_conv (z, &m->rpn_convs[j], &hh, &ww);
    z->activation = MAX (z->activation, plane * PADDED (4 * m->num_anchors));
    z->fpn[L] = PADDED (m->fpn_channels) * plane;
    z->anchors += plane * m->num_anchors;
    if (L == 3) {
      size_t pool = (size_t) ((h + 1) / 2) * ((w + 1) / 2);
      z->fpn[4] = PADDED (m->fpn_channels) * pool;
      z->anchors += pool * m->num_anchors;
    }
  }
  /* the heads run as many ROIs per GEMM as the tile holds */
  z->col = (size_t) 4 << 20;
}

static void cpu_destroy (gpointer state);

/* A state with its own workspace; the weights and oneDNN's engine are
 * first's where given. */
static CpuState *
state_new (const MrcnnModel *m, const CpuState *first, GError **error)
{
  const MrcnnConfig *c = &m->config;
  Sizes z;
  plan (m, &z);
  CpuState *s = g_new0 (CpuState, 1);
  s->model = m;
  s->col_size = z.col;
  if (!cpu_onednn_init (s, first, error)) {
    cpu_destroy (s);
    return NULL;
  }

  gboolean matterport = c->variant == MRCNN_VARIANT_MATTERPORT;
  for (int ch = 0; ch < 3; ch++)
    for (int v = 0; v < 256; v++)
      s->lut[ch][v] = matterport ? (float) (v - c->mean_pixel[ch])
          : ((float) v / 255.0f - c->image_mean[ch]) / c->image_std[ch];

  int a, b;
  size_t area = mrcnn_geometry_max_padded_area (c, &a, &b);
  int K = m->num_classes, post = c->rpn_post_nms_top_n;
  size_t candidates = MIN ((size_t) c->rpn_pre_nms_top_n * MRCNN_FPN_LEVELS,
      z.anchors);
  size_t det_candidates = (size_t) post * (K - 1);
  int Pb = c->box_roi_size, Pm = c->mask_roi_size;
  size_t mask_width = MAX ((size_t) m->fpn_channels,
      (size_t) 4 * m->mask_deconv.out_channels);
  size_t mask_k = m->mask_deconv.in_channels;
  for (int j = 0; j < m->n_mask_layers; j++) {
    mask_width = MAX (mask_width, (size_t) m->mask_layers[j].out_channels);
    mask_k = MAX (mask_k, (size_t) m->mask_layers[j].in_channels * 9);
  }
  /* as many detections per GEMM as the im2col tile holds */
  s->mask_chunk = (int) CLAMP (z.col / (mask_k * Pm * Pm), 1, 64);
  size_t box_width = m->fpn_channels, box_k = 1;
  for (int j = 0; j < m->n_box_convs; j++) {
    box_width = MAX (box_width, (size_t) m->box_convs[j].out_channels);
    box_k = MAX (box_k, (size_t) m->box_convs[j].in_channels * 9);
  }
  s->box_chunk = (int) CLAMP (z.col / (box_k * Pb * Pb), 1, 64);
  size_t box_buffer = m->n_box_convs ? (size_t) s->box_chunk * box_width
      * Pb * Pb : 0;
  size_t fc_width = 0;
  for (int j = 0; j < m->n_box_fcs; j++)
    fc_width = MAX (fc_width, (size_t) m->box_fcs[j].out_features);

  size_t total = 0;
  gboolean ok = TRUE;
#define ALLOC(field, count) G_STMT_START { \
    size_t n_ = (count); \
    total += n_ * sizeof (*s->field); \
    s->field = g_try_malloc0 (MAX (n_, 1) * sizeof (*s->field)); \
    ok = ok && s->field != NULL; \
  } G_STMT_END
  ALLOC (input, 3 * area);
  ALLOC (taps_i0, 2 * (size_t) b);
  ALLOC (taps_i1, 2 * (size_t) b);
  ALLOC (taps_lambda, 2 * (size_t) b);
  ALLOC (taps_w0, matterport ? 2 * (size_t) b : 0);
  ALLOC (taps_w1, matterport ? 2 * (size_t) b : 0);
  for (int L = 0; L < 4; L++)
    ALLOC (stage_out[L], z.stage[L]);
  for (int l = 0; l < MRCNN_FPN_LEVELS; l++) {
    ALLOC (fpn[l], z.fpn[l]);
    ALLOC (fpn_blocked[l], z.fpn[l]);
  }
  for (int i = 0; i < 4; i++)
    ALLOC (scratch[i], z.activation);
  ALLOC (col, z.col);
  ALLOC (objectness, z.anchors);
  ALLOC (rpn_deltas, 4 * z.anchors);
  ALLOC (anchors, matterport ? 4 * z.anchors : 0);
  ALLOC (order, MAX (z.anchors, candidates));
  ALLOC (sort_scratch, MAX (z.anchors, candidates));
  ALLOC (cand_boxes, 4 * candidates);
  ALLOC (cand_scores, 2 * candidates);
  ALLOC (cand_level, candidates);
  ALLOC (removed, MAX (candidates, det_candidates));
  ALLOC (keep, MAX (candidates, det_candidates));
  ALLOC (proposals, 4 * (size_t) post);
  ALLOC (box_features, (size_t) post * m->fpn_channels * Pb * Pb);
  ALLOC (box_a, box_buffer);
  ALLOC (box_b, box_buffer);
  ALLOC (box_gemm, box_buffer);
  ALLOC (fc_a, (size_t) post * fc_width);
  ALLOC (fc_b, (size_t) post * fc_width);
  ALLOC (class_logits, (size_t) post * K);
  ALLOC (box_regression, (size_t) post * 4 * K);
  ALLOC (det_cand_boxes, 4 * det_candidates);
  ALLOC (det_cand_scores, det_candidates);
  ALLOC (det_cand_labels, det_candidates);
  ALLOC (det_order, 2 * det_candidates);
  ALLOC (class_start, K);
  ALLOC (det_boxes, 4 * MRCNN_MAX_DETECTIONS);
  ALLOC (det_scores, MRCNN_MAX_DETECTIONS);
  ALLOC (det_labels, MRCNN_MAX_DETECTIONS);
  ALLOC (det_dump, 6 * MRCNN_MAX_DETECTIONS);
  ALLOC (mask_a, (size_t) s->mask_chunk * mask_width * Pm * Pm);
  ALLOC (mask_b, (size_t) s->mask_chunk * mask_width * Pm * Pm);
  ALLOC (mask_gemm, (size_t) s->mask_chunk * mask_width * Pm * Pm);
  ALLOC (mask_probs, (size_t) MRCNN_MAX_DETECTIONS * 4 * Pm * Pm);
  ALLOC (paste, MRCNN_MAX_DETECTIONS);
  ALLOC (det_source, matterport ? MRCNN_MAX_DETECTIONS : 0);
#undef ALLOC
  if (!ok) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
        "out of memory: the CPU workspace for %dx%d inputs needs %zu MiB",
        b, (int) (area / b), total >> 20);
    cpu_destroy (s);
    return NULL;
  }
  return s;
}

static gpointer
cpu_create (const MrcnnModel *m, const MrcnnOptions *options, GError **error)
{
  (void) options;
  return state_new (m, NULL, error);
}

static gpointer
cpu_create_lane (gpointer first, GError **error)
{
  const CpuState *f = first;
  return state_new (f->model, f, error);
}

static void
cpu_destroy (gpointer state)
{
  CpuState *s = state;
  if (!s)
    return;
  cpu_onednn_destroy (s);
  void *buffers[] = {
    s->input, s->taps_i0, s->taps_i1, s->taps_lambda, s->taps_w0,
    s->taps_w1, s->anchors, s->det_source, s->stage_out[0],
    s->stage_out[1], s->stage_out[2], s->stage_out[3], s->fpn[0], s->fpn[1],
    s->fpn[2], s->fpn[3], s->fpn[4], s->fpn_blocked[0], s->fpn_blocked[1],
    s->fpn_blocked[2], s->fpn_blocked[3], s->fpn_blocked[4], s->scratch[0], s->scratch[1],
    s->scratch[2], s->scratch[3], s->col, s->objectness, s->rpn_deltas,
    s->order, s->sort_scratch, s->cand_boxes, s->cand_scores, s->cand_level, s->removed,
    s->keep, s->proposals, s->box_features, s->box_a, s->box_b,
    s->box_gemm, s->fc_a, s->fc_b,
    s->class_logits, s->box_regression, s->det_cand_boxes,
    s->det_cand_scores, s->det_cand_labels, s->det_order, s->class_start, s->det_boxes,
    s->det_scores, s->det_labels, s->det_dump, s->mask_a, s->mask_b,
    s->mask_gemm, s->mask_probs, s->paste,
  };
  for (gsize i = 0; i < G_N_ELEMENTS (buffers); i++)
    g_free (buffers[i]);
  g_free (s);
}

static gboolean
stage_preprocess (gpointer state, const MrcnnImage *image,
    const MrcnnGeometry *geometry, GError **error)
{
  CpuState *s = state;
  (void) error;
  /* OpenMP's count is the calling thread's: this detection's, whichever
   * thread runs it */
  omp_set_num_threads (s->threads);
  s->geometry = *geometry;
  if (s->model->config.variant == MRCNN_VARIANT_MATTERPORT)
    cpu_preprocess_matterport (s, image);
  else
    cpu_preprocess (s, image);
  return TRUE;
}

static gboolean
stage_backbone (gpointer state, GError **error)
{
  return cpu_backbone (state, error);
}

static gboolean
stage_proposals (gpointer state, GError **error)
{
  CpuState *s = state;
  if (s->model->config.variant == MRCNN_VARIANT_MATTERPORT)
    return cpu_proposals_matterport (s, error);
  return cpu_proposals (s, error);
}

static gboolean
stage_detect (gpointer state, const MrcnnThresholds *t, GError **error)
{
  CpuState *s = state;
  (void) error;
  if (s->model->config.variant == MRCNN_VARIANT_MATTERPORT)
    cpu_detect_matterport (s, t);
  else
    cpu_detect (s, t);
  return TRUE;
}

static gboolean
stage_masks (gpointer state, GError **error)
{
  (void) error;
  cpu_masks (state);
  return TRUE;
}

static gboolean
stage_paste (gpointer state, const MrcnnThresholds *t, MrcnnResult *result,
    GError **error)
{
  CpuState *s = state;
  (void) error;
  if (s->model->config.variant == MRCNN_VARIANT_MATTERPORT)
    cpu_paste_matterport (s, t, result);
  else
    cpu_paste (s, t, result);
  return TRUE;
}

static gboolean
cpu_inspect (gpointer state, const char *name, MrcnnHostTensor *out)
{
  CpuState *s = state;
  const MrcnnModel *m = s->model;
  int P2 = 2 * m->config.mask_roi_size;
  static const char *const fpn_names[MRCNN_FPN_LEVELS] = { "fpn_0", "fpn_1",
    "fpn_2", "fpn_3", "fpn_pool" };
  memset (out, 0, sizeof *out);
  if (strcmp (name, "input") == 0) {
    *out = (MrcnnHostTensor) { s->input, 3, { 3, s->geometry.padded_height,
            s->geometry.padded_width } };
    return TRUE;
  }
  if (strcmp (name, "anchors") == 0 && s->anchors_h > 0) {
    *out = (MrcnnHostTensor) { s->anchors, 2, { s->n_anchors, 4 } };
    return TRUE;
  }
  for (int l = 0; l < MRCNN_FPN_LEVELS; l++)
    if (strcmp (name, fpn_names[l]) == 0 && s->plan) {
      *out = (MrcnnHostTensor) { s->fpn[l], 3, { m->fpn_channels,
              s->plan->fpn_h[l], s->plan->fpn_w[l] } };
      return TRUE;
    }
  if (strcmp (name, "proposals") == 0) {
    *out = (MrcnnHostTensor) { s->proposals, 2, { s->n_proposals, 4 } };
    return TRUE;
  }
  if (strcmp (name, "detections") == 0) {
    /* assembled only when asked, to keep it off the per-frame path */
    for (int d = 0; d < s->n_detections; d++) {
      memcpy (s->det_dump + 6 * d, s->det_boxes + 4 * d, 4 * sizeof (float));
      s->det_dump[6 * d + 4] = s->det_scores[d];
      s->det_dump[6 * d + 5] = (float) s->det_labels[d];
    }
    *out = (MrcnnHostTensor) { s->det_dump, 2, { s->n_detections, 6 } };
    return TRUE;
  }
  if (strcmp (name, "mask_probs") == 0) {
    *out = (MrcnnHostTensor) { s->mask_probs, 3, { s->n_detections, P2,
            P2 } };
    return TRUE;
  }
  return FALSE;
}

/* OpenMP's own count (OMP_NUM_THREADS, else one per core), read before
 * any engine changes it. */
static int
default_threads (void)
{
  static gsize count;
  if (g_once_init_enter (&count))
    g_once_init_leave (&count, (gsize) MAX (omp_get_max_threads (), 1));
  return (int) count;
}

static void
cpu_set_threads (gpointer state, int threads, int lanes)
{
  CpuState *s = state;
  int total = threads > 0 ? threads : default_threads ();
  s->threads = MAX (total / MAX (lanes, 1), 1);
}

const MrcnnBackend mrcnn_backend_cpu = {
  .name = "cpu",
  .create = cpu_create,
  .create_lane = cpu_create_lane,
  .destroy = cpu_destroy,
  .preprocess = stage_preprocess,
  .backbone = stage_backbone,
  .proposals = stage_proposals,
  .detect = stage_detect,
  .masks = stage_masks,
  .paste = stage_paste,
  .inspect = cpu_inspect,
  .set_threads = cpu_set_threads,
};
