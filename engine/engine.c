/* The pipeline: picks a backend, resolves thresholds and runs the stages. */
#include "backend.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

struct _MrcnnEngine {
  const MrcnnModel *model;
  const MrcnnBackend *backend;
  gpointer state;
  MrcnnThresholds thresholds;
  uint8_t *keep_class;       /* thresholds.keep_class's storage */
  uint8_t *frame_keep_class; /* a batch frame's filter's */
  char *dump_dir;
  gboolean time_stages;
  double stage_ms[MRCNN_N_STAGES];
};

static const char *const stage_names[MRCNN_N_STAGES] = {
  "preprocess", "backbone", "proposals", "detect", "masks", "paste",
};

const char *
mrcnn_stage_name (MrcnnStage stage)
{
  return stage >= 0 && stage < MRCNN_N_STAGES ? stage_names[stage] : NULL;
}

/* Intermediate tensors written by dump_dir, in pipeline order. */
static const char *const dump_names[] = {
  "input", "anchors", "fpn_0", "fpn_1", "fpn_2", "fpn_3", "fpn_pool", "proposals",
  "detections", "mask_probs",
};

void
mrcnn_options_init (MrcnnOptions *o)
{
  *o = (MrcnnOptions) {
    .backend = MRCNN_BACKEND_AUTO,
    .precision = MRCNN_PRECISION_FP32,
    .device_id = 0,
    .score_threshold = -1,
    .nms_threshold = -1,
    .max_detections = -1,
    .mask_threshold = -1,
  };
}

/* The thresholds asked for, negative ones replaced by the model's; the
 * class filter is left as it is. */
static gboolean
resolve_thresholds (const MrcnnConfig *c, float score, float nms,
    int max_detections, float mask, MrcnnThresholds *t, GError **error)
{
  if (score > 1 || nms > 1 || mask > 1 || isnan (score) || isnan (nms)
      || isnan (mask) || max_detections > MRCNN_MAX_DETECTIONS) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT,
        "thresholds must be in [0, 1] and max detections at most %d "
        "(negative: the model's own value)", MRCNN_MAX_DETECTIONS);
    return FALSE;
  }
  t->score = score >= 0 ? score : c->box_score_thresh;
  t->nms = nms >= 0 ? nms : c->box_nms_thresh;
  t->max_detections = max_detections >= 0 ? max_detections
      : c->box_detections_per_img;
  t->mask = mask >= 0 ? mask : c->mask_threshold;
  return TRUE;
}

gboolean
mrcnn_engine_set_thresholds (MrcnnEngine *e, float score, float nms,
    int max_detections, float mask, GError **error)
{
  return resolve_thresholds (&e->model->config, score, nms, max_detections,
      mask, &e->thresholds, error);
}

void
mrcnn_frame_settings_init (MrcnnFrameSettings *s)
{
  *s = (MrcnnFrameSettings) {
    .score_threshold = -1,
    .nms_threshold = -1,
    .max_detections = -1,
    .mask_threshold = -1,
  };
}

void
mrcnn_engine_set_threads (MrcnnEngine *e, int threads)
{
  if (e->backend->set_threads)
    e->backend->set_threads (e->state, MAX (threads, 0));
}

/* keep (one per class, or NULL) as the stages take it, in *buffer (made
 * once). */
static const uint8_t *
class_filter (const MrcnnEngine *e, const gboolean *keep, uint8_t **buffer)
{
  if (!keep)
    return NULL;
  int n = e->model->num_classes;
  if (!*buffer)
    *buffer = g_new (uint8_t, n);
  for (int i = 0; i < n; i++)
    (*buffer)[i] = keep[i] != FALSE;
  return *buffer;
}

void
mrcnn_engine_set_class_filter (MrcnnEngine *e, const gboolean *keep)
{
  e->thresholds.keep_class = class_filter (e, keep, &e->keep_class);
}

MrcnnEngine *
mrcnn_engine_new (const MrcnnModel *model, const MrcnnOptions *options,
    GError **error)
{
  MrcnnOptions defaults;
  if (!options) {
    mrcnn_options_init (&defaults);
    options = &defaults;
  }
  const MrcnnBackend *backend = &mrcnn_backend_cpu;
#ifdef MRCNN_WITH_CUDA
  if (options->backend == MRCNN_BACKEND_CUDA) {
    GError *why = NULL;
    if (!mrcnn_cuda_device_usable (options->device_id, &why)) {
      g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
          "the CUDA backend is not available: %s; use the CPU backend",
          why->message);
      g_error_free (why);
      return NULL;
    }
    backend = &mrcnn_backend_cuda;
  } else if (options->backend == MRCNN_BACKEND_AUTO
      && mrcnn_cuda_device_usable (options->device_id, NULL)) {
    backend = &mrcnn_backend_cuda;
  }
#else
  if (options->backend == MRCNN_BACKEND_CUDA) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_UNSUPPORTED,
        "the CUDA backend is not available in this build; use the CPU "
        "backend");
    return NULL;
  }
#endif
  if (options->precision == MRCNN_PRECISION_FP16
      && backend == &mrcnn_backend_cpu) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_UNSUPPORTED,
        "fp16 precision needs the CUDA backend; the CPU backend runs fp32");
    return NULL;
  }

  MrcnnEngine *e = g_new0 (MrcnnEngine, 1);
  e->model = model;
  e->backend = backend;
  if (!mrcnn_engine_set_thresholds (e, options->score_threshold,
          options->nms_threshold, options->max_detections,
          options->mask_threshold, error)) {
    g_free (e);
    return NULL;
  }
  e->state = e->backend->create (model, options, error);
  if (!e->state) {
    g_free (e);
    return NULL;
  }
  e->dump_dir = g_strdup (options->dump_dir);
  e->time_stages = options->time_stages;
  mrcnn_engine_set_threads (e, options->threads);
  return e;
}

#ifndef MRCNN_WITH_CUDA
int
mrcnn_cuda_device_count (void)
{
  return 0;
}
#endif

void
mrcnn_engine_free (MrcnnEngine *e)
{
  if (!e)
    return;
  e->backend->destroy (e->state);
  g_free (e->keep_class);
  g_free (e->frame_keep_class);
  g_free (e->dump_dir);
  g_free (e);
}

const char *
mrcnn_engine_backend_name (const MrcnnEngine *e)
{
  return e->backend->name;
}

/* Writes a float32 tensor as a NumPy .npy file (format version 1.0). */
static gboolean
write_npy (const char *path, const MrcnnHostTensor *t, GError **error)
{
  GString *header = g_string_new ("{'descr': '<f4', 'fortran_order': False, "
      "'shape': (");
  size_t count = 1;
  for (int i = 0; i < t->ndim; i++) {
    g_string_append_printf (header, "%d,%s", t->shape[i],
        i + 1 < t->ndim ? " " : "");
    count *= (size_t) t->shape[i];
  }
  g_string_append (header, "), }");
  while ((10 + header->len + 1) % 64)
    g_string_append_c (header, ' ');
  g_string_append_c (header, '\n');

  FILE *f = g_fopen (path, "wb");
  gboolean ok = f != NULL;
  if (ok) {
    guint16 len = (guint16) header->len;
    guint8 preamble[10] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, len & 0xff,
      len >> 8 };
    ok = fwrite (preamble, 1, 10, f) == 10
        && fwrite (header->str, 1, header->len, f) == header->len
        && fwrite (t->data, sizeof (float), count, f) == count;
    ok = (fclose (f) == 0) && ok;
  }
  if (!ok)
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_IO, "%s: cannot write: %s",
        path, g_strerror (errno));
  g_string_free (header, TRUE);
  return ok;
}

static gboolean
dump (MrcnnEngine *e, GError **error)
{
  if (g_mkdir_with_parents (e->dump_dir, 0755) != 0) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_IO, "%s: cannot create: %s",
        e->dump_dir, g_strerror (errno));
    return FALSE;
  }
  for (gsize i = 0; i < G_N_ELEMENTS (dump_names); i++) {
    MrcnnHostTensor t;
    if (!e->backend->inspect (e->state, dump_names[i], &t))
      continue;
    char *file = g_strconcat (dump_names[i], ".npy", NULL);
    char *path = g_build_filename (e->dump_dir, file, NULL);
    gboolean ok = write_npy (path, &t, error);
    g_free (path);
    g_free (file);
    if (!ok)
      return FALSE;
  }
  return TRUE;
}

/* One stage, timed when asked: the device's queue is drained before the
 * clock stops, so the time is the stage's own. */
static gboolean
timed (MrcnnEngine *e, MrcnnStage stage, gboolean ok, gint64 *clock,
    GError **error)
{
  if (!ok || !e->time_stages)
    return ok;
  if (e->backend->synchronize && !e->backend->synchronize (e->state, error))
    return FALSE;
  gint64 now = g_get_monotonic_time ();
  e->stage_ms[stage] = (now - *clock) / 1000.0;
  *clock = now;
  return TRUE;
}

static gboolean
run_stages (MrcnnEngine *e, const MrcnnImage *image,
    const MrcnnGeometry *geometry, const MrcnnThresholds *thresholds,
    MrcnnResult *result, GError **error)
{
  const MrcnnBackend *b = e->backend;
  gpointer s = e->state;
  gint64 clock = g_get_monotonic_time ();
  return timed (e, MRCNN_STAGE_PREPROCESS,
      b->preprocess (s, image, geometry, error), &clock, error)
      && timed (e, MRCNN_STAGE_BACKBONE, b->backbone (s, error), &clock, error)
      && timed (e, MRCNN_STAGE_PROPOSALS, b->proposals (s, error), &clock,
      error)
      && timed (e, MRCNN_STAGE_DETECT, b->detect (s, thresholds, error),
      &clock, error)
      && timed (e, MRCNN_STAGE_MASKS, b->masks (s, error), &clock, error)
      && timed (e, MRCNN_STAGE_PASTE,
      b->paste (s, thresholds, result, error), &clock, error);
}

gboolean
mrcnn_engine_stage_times (const MrcnnEngine *e, double ms[MRCNN_N_STAGES])
{
  if (!e->time_stages)
    return FALSE;
  memcpy (ms, e->stage_ms, sizeof e->stage_ms);
  return TRUE;
}

size_t
mrcnn_engine_device_memory (const MrcnnEngine *e)
{
  return e->backend->device_memory ? e->backend->device_memory (e->state)
      : 0;
}

static gboolean
detect_one (MrcnnEngine *e, const MrcnnImage *image,
    const MrcnnThresholds *thresholds, MrcnnResult *result, GError **error)
{
  if (!image->data || image->stride < 3 * image->width) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT,
        "image has no data or a row stride (%d) below 3 x width (%d)",
        image->stride, image->width);
    return FALSE;
  }
  MrcnnGeometry geometry;
  if (!mrcnn_geometry_compute (&e->model->config, image->width, image->height,
          &geometry, error))
    return FALSE;
  result->image_width = image->width;
  result->image_height = image->height;
  result->n_detections = 0;
  if (!run_stages (e, image, &geometry, thresholds, result, error))
    return FALSE;
  for (int i = 0; i < result->n_detections; i++)
    result->detections[i].label =
        e->model->class_names[result->detections[i].label_id];
  return e->dump_dir ? dump (e, error) : TRUE;
}

gboolean
mrcnn_engine_detect (MrcnnEngine *e, const MrcnnImage *image,
    MrcnnResult *result, GError **error)
{
  return detect_one (e, image, &e->thresholds, result, error);
}

/* A frame's settings as the stages take them; the class filter is copied
 * into the engine's one buffer for it (valid until the next frame). */
static gboolean
frame_thresholds (MrcnnEngine *e, const MrcnnFrameSettings *f,
    MrcnnThresholds *t, GError **error)
{
  if (!resolve_thresholds (&e->model->config, f->score_threshold,
          f->nms_threshold, f->max_detections, f->mask_threshold, t, error))
    return FALSE;
  t->keep_class = class_filter (e, f->keep_class, &e->frame_keep_class);
  return TRUE;
}

int
mrcnn_engine_detect_batch (MrcnnEngine *e, const MrcnnImage *images,
    const MrcnnFrameSettings *settings, int n, MrcnnResult *results,
    GError **error)
{
  for (int i = 0; i < n; i++) {
    MrcnnThresholds frame;
    const MrcnnThresholds *t = &e->thresholds;
    if (settings && !frame_thresholds (e, &settings[i], &frame, error)) {
      g_prefix_error (error, "frame %d of %d: ", i, n);
      return i;
    }
    if (settings)
      t = &frame;
    if (!detect_one (e, &images[i], t, &results[i], error)) {
      g_prefix_error (error, "frame %d of %d: ", i, n);
      return i;
    }
  }
  return n;
}

void
mrcnn_result_init (MrcnnResult *r)
{
  memset (r, 0, sizeof *r);
}

void
mrcnn_result_clear (MrcnnResult *r)
{
  g_free (r->detections);
  g_free (r->mask_storage);
  g_free (r->binary_storage);
  mrcnn_result_init (r);
}

void
mrcnn_result_reserve (MrcnnResult *r, int n, size_t mask_pixels)
{
  if (n > r->capacity) {
    r->detections = g_renew (MrcnnDetection, r->detections, n);
    r->capacity = n;
  }
  if (mask_pixels > r->mask_capacity) {
    g_free (r->mask_storage);
    g_free (r->binary_storage);
    r->mask_storage = g_new (float, mask_pixels);
    r->binary_storage = g_new (uint8_t, mask_pixels);
    r->mask_capacity = mask_pixels;
  }
}
