/* The pipeline: picks a backend, resolves thresholds and runs the stages,
 * a batch's frames on the engine's lanes. */
#include "backend.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#ifdef __linux__
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

/* The batch some lanes run (detect_batch), on the stack of its caller,
 * who sets it up before any of its lanes starts and reads it after all are
 * done; meanwhile the lanes claim its frames in order through `next` and
 * stop claiming once `stop` is set (both atomic); `lock` guards busy,
 * failed and error, and `idle` is signalled when busy drops to 0. */
typedef struct {
  const MrcnnImage *images;
  const MrcnnFrameSettings *settings;
  MrcnnResult *results;
  int n;
  gint next, stop;
  GMutex lock;
  GCond idle;
  int busy;      /* lanes of the pool still running */
  int failed;    /* the lowest failed frame, n if none */
  GError *error; /* its error */
  int nice;      /* the caller's priority, which the lanes take */
} MrcnnBatchRun;

/* A backend state and what a frame running on it needs of its own; the
 * caller that took it (take_lanes) owns it until it gives it back. */
typedef struct {
  gpointer state;
  uint8_t *keep_class; /* a batch frame's class filter's storage */
  MrcnnBatchRun *run;  /* the batch it works for, while taken */
  int threads;         /* the threads it was set up for (-1: none yet) */
  /* lane_run_grouped: each frame's geometry and whether it was taken */
  MrcnnGeometry *geometry;
  uint8_t *taken;
  int frames_capacity;
} MrcnnLane;

struct _MrcnnEngine {
  const MrcnnModel *model;
  const MrcnnBackend *backend;
  /* MrcnnOptions.lanes.  Detections from several threads at once each
   * take the lanes free at their start (at least one, waiting for it): a
   * call's first lane runs on its own thread, any others on the pool's.
   * The free ones are under lanes_lock; lane_freed is broadcast when lanes
   * come back. */
  MrcnnLane *lanes;
  int n_lanes;
  GMutex lanes_lock;
  GCond lane_freed;
  MrcnnLane **free_lanes;
  int n_free;
  GThreadPool *pool;
  /* frames whose backbone runs together (the backend's batch_slots), 1:
   * one frame at a time */
  int batch_slots;
  gint threads;              /* MrcnnOptions.threads, atomic */
  MrcnnThresholds thresholds;
  uint8_t *keep_class;       /* thresholds.keep_class's storage */
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
    .threads = -1,
  };
}

void
mrcnn_engine_set_threads (MrcnnEngine *e, int threads)
{
  g_atomic_int_set (&e->threads, MAX (threads, 0));
}

/* A lane runs a frame on its share of `threads` whether or not the other
 * lanes run: how oneDNN computes a layer can depend on the thread count,
 * and a frame's results must not depend on the frames beside it. */
static void
lane_use_threads (MrcnnEngine *e, MrcnnLane *lane, int threads)
{
  if (e->backend->set_threads && lane->threads != threads)
    e->backend->set_threads (lane->state, threads, e->n_lanes);
  lane->threads = threads;
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

static void lane_main (gpointer lane, gpointer engine);

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
  return mrcnn_engine_new_with_backend (model, options, backend, error);
}

MrcnnEngine *
mrcnn_engine_new_with_backend (const MrcnnModel *model,
    const MrcnnOptions *options, const MrcnnBackend *backend, GError **error)
{
  if (options->lanes < 0 || options->lanes > MRCNN_MAX_LANES) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT,
        "lanes must be between 1 and %d (0: 1), not %d", MRCNN_MAX_LANES,
        options->lanes);
    return NULL;
  }
  if (options->max_batch < 0 || options->max_batch > MRCNN_MAX_BATCH) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT,
        "max batch must be between 1 and %d (0: 1), not %d", MRCNN_MAX_BATCH,
        options->max_batch);
    return NULL;
  }

  MrcnnEngine *e = g_new0 (MrcnnEngine, 1);
  e->model = model;
  e->backend = backend;
  g_mutex_init (&e->lanes_lock);
  g_cond_init (&e->lane_freed);
  e->dump_dir = g_strdup (options->dump_dir);
  e->time_stages = options->time_stages;
  int lanes = backend->create_lane ? MAX (options->lanes, 1) : 1;
  e->lanes = g_new0 (MrcnnLane, lanes);
  /* the dumps and stage times are of one frame at a time: no room for a
   * batch */
  MrcnnOptions backend_options = *options;
  if (e->dump_dir || e->time_stages)
    backend_options.max_batch = 1;
  if (!mrcnn_engine_set_thresholds (e, options->score_threshold,
          options->nms_threshold, options->max_detections,
          options->mask_threshold, error)
      || !(e->lanes[0].state = backend->create (model, &backend_options,
              error))) {
    mrcnn_engine_free (e);
    return NULL;
  }
  for (e->n_lanes = 1; e->n_lanes < lanes; e->n_lanes++) {
    e->lanes[e->n_lanes].state = backend->create_lane (e->lanes[0].state,
        error);
    if (!e->lanes[e->n_lanes].state) {
      g_prefix_error (error, "lane %d of %d: ", e->n_lanes, lanes);
      mrcnn_engine_free (e);
      return NULL;
    }
  }
  for (int i = 0; i < e->n_lanes; i++)
    e->lanes[i].threads = -1;
  g_assert (!backend->backbone_batch || (backend->batch_slots
          && backend->preprocess_slot && backend->select_slot));
  e->batch_slots = backend->backbone_batch
      ? CLAMP (backend->batch_slots (e->lanes[0].state), 1, MRCNN_MAX_BATCH)
      : 1;
  e->free_lanes = g_new (MrcnnLane *, e->n_lanes);
  for (e->n_free = 0; e->n_free < e->n_lanes; e->n_free++)
    e->free_lanes[e->n_free] = &e->lanes[e->n_free];
  if (lanes > 1 && !(e->pool = g_thread_pool_new (lane_main, e, lanes - 1,
              TRUE, error))) {
    mrcnn_engine_free (e);
    return NULL;
  }
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
  if (e->pool)
    g_thread_pool_free (e->pool, TRUE, TRUE);
  /* the lanes borrow the first's weights */
  for (int i = e->n_lanes - 1; i >= 0; i--) {
    if (e->lanes[i].state)
      e->backend->destroy (e->lanes[i].state);
    g_free (e->lanes[i].keep_class);
    g_free (e->lanes[i].geometry);
    g_free (e->lanes[i].taken);
  }
  g_free (e->lanes);
  g_free (e->free_lanes);
  g_mutex_clear (&e->lanes_lock);
  g_cond_clear (&e->lane_freed);
  g_free (e->keep_class);
  g_free (e->dump_dir);
  g_free (e);
}

int
mrcnn_engine_get_lanes (const MrcnnEngine *e)
{
  return e->n_lanes;
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

/* The tensors of the frame the lane ran last. */
static gboolean
dump (MrcnnEngine *e, const MrcnnLane *lane, GError **error)
{
  if (g_mkdir_with_parents (e->dump_dir, 0755) != 0) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_IO, "%s: cannot create: %s",
        e->dump_dir, g_strerror (errno));
    return FALSE;
  }
  for (gsize i = 0; i < G_N_ELEMENTS (dump_names); i++) {
    MrcnnHostTensor t;
    if (!e->backend->inspect (lane->state, dump_names[i], &t))
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
timed (MrcnnEngine *e, gpointer state, MrcnnStage stage, gboolean ok,
    gint64 *clock, GError **error)
{
  if (!ok || !e->time_stages)
    return ok;
  if (e->backend->synchronize && !e->backend->synchronize (state, error))
    return FALSE;
  gint64 now = g_get_monotonic_time ();
  e->stage_ms[stage] = (now - *clock) / 1000.0;
  *clock = now;
  return TRUE;
}

/* The stages after the backbone, on the frame state s holds (a batch's:
 * the slot selected). */
static gboolean
run_later_stages (MrcnnEngine *e, gpointer s,
    const MrcnnThresholds *thresholds, MrcnnResult *result, gint64 *clock,
    GError **error)
{
  const MrcnnBackend *b = e->backend;
  return timed (e, s, MRCNN_STAGE_PROPOSALS, b->proposals (s, error), clock,
      error)
      && timed (e, s, MRCNN_STAGE_DETECT, b->detect (s, thresholds, error),
      clock, error)
      && timed (e, s, MRCNN_STAGE_MASKS, b->masks (s, error), clock, error)
      && timed (e, s, MRCNN_STAGE_PASTE,
      b->paste (s, thresholds, result, error), clock, error);
}

static gboolean
run_stages (MrcnnEngine *e, gpointer s, const MrcnnImage *image,
    const MrcnnGeometry *geometry, const MrcnnThresholds *thresholds,
    MrcnnResult *result, GError **error)
{
  const MrcnnBackend *b = e->backend;
  gint64 clock = g_get_monotonic_time ();
  return timed (e, s, MRCNN_STAGE_PREPROCESS,
      b->preprocess (s, image, geometry, error), &clock, error)
      && timed (e, s, MRCNN_STAGE_BACKBONE, b->backbone (s, error), &clock,
      error)
      && run_later_stages (e, s, thresholds, result, &clock, error);
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
  return e->backend->device_memory
      ? e->backend->device_memory (e->lanes[0].state) : 0;
}

/* Checks an image and computes where it goes in the network input. */
static gboolean
image_geometry (const MrcnnEngine *e, const MrcnnImage *image,
    MrcnnGeometry *geometry, GError **error)
{
  if (!image->data || image->stride < 3 * image->width) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT,
        "image has no data or a row stride (%d) below 3 x width (%d)",
        image->stride, image->width);
    return FALSE;
  }
  return mrcnn_geometry_compute (&e->model->config, image->width,
      image->height, geometry, error);
}

static void
result_start (MrcnnResult *result, const MrcnnImage *image)
{
  result->image_width = image->width;
  result->image_height = image->height;
  result->n_detections = 0;
}

static void
result_name_labels (const MrcnnEngine *e, MrcnnResult *result)
{
  for (int i = 0; i < result->n_detections; i++)
    result->detections[i].label =
        e->model->class_names[result->detections[i].label_id];
}

static gboolean
detect_one (MrcnnEngine *e, MrcnnLane *lane, const MrcnnImage *image,
    const MrcnnThresholds *thresholds, int threads, MrcnnResult *result,
    GError **error)
{
  MrcnnGeometry geometry;
  if (!image_geometry (e, image, &geometry, error))
    return FALSE;
  result_start (result, image);
  lane_use_threads (e, lane, threads);
  if (!run_stages (e, lane->state, image, &geometry, thresholds, result,
          error))
    return FALSE;
  result_name_labels (e, result);
  return e->dump_dir ? dump (e, lane, error) : TRUE;
}

/* Up to `want` of the free lanes into `taken`, waiting until one is free;
 * returns how many. */
static int
take_lanes (MrcnnEngine *e, int want, MrcnnLane **taken)
{
  g_mutex_lock (&e->lanes_lock);
  while (e->n_free == 0)
    g_cond_wait (&e->lane_freed, &e->lanes_lock);
  int n = MIN (want, e->n_free);
  for (int i = 0; i < n; i++)
    taken[i] = e->free_lanes[--e->n_free];
  g_mutex_unlock (&e->lanes_lock);
  return n;
}

static void
give_lanes (MrcnnEngine *e, MrcnnLane **taken, int n)
{
  g_mutex_lock (&e->lanes_lock);
  for (int i = 0; i < n; i++)
    e->free_lanes[e->n_free++] = taken[i];
  g_cond_broadcast (&e->lane_freed);
  g_mutex_unlock (&e->lanes_lock);
}

gboolean
mrcnn_engine_detect (MrcnnEngine *e, const MrcnnImage *image,
    MrcnnResult *result, GError **error)
{
  MrcnnLane *lane = NULL;
  take_lanes (e, 1, &lane);
  gboolean ok = detect_one (e, lane, image, &e->thresholds,
      g_atomic_int_get (&e->threads), result, error);
  give_lanes (e, &lane, 1);
  return ok;
}

/* Frame i of the batch's CPU threads. */
static int
frame_threads (MrcnnEngine *e, const MrcnnBatchRun *b, int i)
{
  if (b->settings && b->settings[i].threads >= 0)
    return b->settings[i].threads;
  return g_atomic_int_get (&e->threads);
}

/* Frame i of the batch's thresholds (its class filter copied into the
 * lane's buffer) and threads. */
static gboolean
frame_settings (MrcnnEngine *e, MrcnnLane *lane, int i,
    MrcnnThresholds *frame, int *threads, GError **error)
{
  const MrcnnBatchRun *b = lane->run;
  *frame = e->thresholds;
  *threads = frame_threads (e, b, i);
  if (!b->settings)
    return TRUE;
  const MrcnnFrameSettings *f = &b->settings[i];
  if (!resolve_thresholds (&e->model->config, f->score_threshold,
          f->nms_threshold, f->max_detections, f->mask_threshold, frame,
          error))
    return FALSE;
  frame->keep_class = class_filter (e, f->keep_class, &lane->keep_class);
  return TRUE;
}

/* Frame i of the batch on a lane, with its settings. */
static gboolean
detect_frame (MrcnnEngine *e, MrcnnLane *lane, int i, GError **error)
{
  MrcnnThresholds frame;
  int threads;
  return frame_settings (e, lane, i, &frame, &threads, error)
      && detect_one (e, lane, &lane->run->images[i], &frame, threads,
      &lane->run->results[i], error);
}

/* Frame i failed (error taken): the batch stops, keeping the lowest
 * failure's error. */
static void
batch_fail (MrcnnBatchRun *b, int i, GError *error)
{
  g_atomic_int_set (&b->stop, 1);
  g_mutex_lock (&b->lock);
  if (i < b->failed) {
    g_clear_error (&b->error);
    b->failed = i;
    b->error = error;
  } else {
    g_error_free (error);
  }
  g_mutex_unlock (&b->lock);
}

/* Claims the batch's frames one by one until none is left or one failed
 * (on any lane). */
static void
lane_run (MrcnnEngine *e, MrcnnLane *lane)
{
  MrcnnBatchRun *b = lane->run;
  while (!g_atomic_int_get (&b->stop)) {
    int i = g_atomic_int_add (&b->next, 1);
    GError *error = NULL;
    if (i >= b->n)
      break;
    if (!detect_frame (e, lane, i, &error))
      batch_fail (b, i, error);
  }
}

/* The stages after the backbone of frame i, in the lane's backbone slot
 * `slot`. */
static gboolean
detect_slot (MrcnnEngine *e, MrcnnLane *lane, int slot, int i,
    GError **error)
{
  MrcnnResult *result = &lane->run->results[i];
  MrcnnThresholds frame;
  int threads;
  result_start (result, &lane->run->images[i]);
  e->backend->select_slot (lane->state, slot);
  if (!frame_settings (e, lane, i, &frame, &threads, error))
    return FALSE;
  lane_use_threads (e, lane, threads);
  gint64 clock = g_get_monotonic_time ();
  if (!run_later_stages (e, lane->state, &frame, result, &clock, error))
    return FALSE;
  result_name_labels (e, result);
  return TRUE;
}

/* The batch on one lane of a backend whose backbone takes several frames
 * (batch_slots): frames of one network input size through the backbone
 * together (mrcnn_geometry_next_group), then each through the later
 * stages, until every frame has run.  After a failure only frames before
 * it still run, so that every frame before the lowest failure has its
 * results. */
static void
lane_run_grouped (MrcnnEngine *e, MrcnnLane *lane)
{
  MrcnnBatchRun *b = lane->run;
  const MrcnnBackend *be = e->backend;
  if (lane->frames_capacity < b->n) {
    g_free (lane->geometry);
    g_free (lane->taken);
    lane->geometry = g_new (MrcnnGeometry, b->n);
    lane->taken = g_new (uint8_t, b->n);
    lane->frames_capacity = b->n;
  }
  memset (lane->taken, 0, b->n);
  /* only this thread changes b->failed */
  for (int i = 0; i < b->failed; i++) {
    GError *error = NULL;
    if (!image_geometry (e, &b->images[i], &lane->geometry[i], &error))
      batch_fail (b, i, error);
  }
  int group[MRCNN_MAX_BATCH], k;
  while ((k = mrcnn_geometry_next_group (lane->geometry, lane->taken,
              b->failed, e->batch_slots, group)) > 0) {
    GError *error = NULL;
    int ready = 0;
    /* one launch for the group: its first frame's CPU threads (a backend
     * that batches computes on its device) */
    lane_use_threads (e, lane, frame_threads (e, b, group[0]));
    while (ready < k && be->preprocess_slot (lane->state, ready,
            &b->images[group[ready]], &lane->geometry[group[ready]], &error))
      ready++;
    if (ready < k)
      batch_fail (b, group[ready], g_steal_pointer (&error));
    if (ready == 0)
      continue;
    if (!be->backbone_batch (lane->state, ready, &error)) {
      if (ready > 1)
        g_prefix_error (&error, "the backbone of %d frames at once: ", ready);
      batch_fail (b, group[0], error);
      continue;
    }
    for (int j = 0; j < ready && group[j] < b->failed; j++)
      if (!detect_slot (e, lane, j, group[j], &error)) {
        batch_fail (b, group[j], g_steal_pointer (&error));
        break;
      }
  }
}

/* The calling thread's nice value (Linux threads have their own). */
static int
thread_nice (void)
{
#ifdef __linux__
  errno = 0;
  int nice = getpriority (PRIO_PROCESS, (id_t) syscall (SYS_gettid));
  return errno ? 0 : nice;
#else
  return 0;
#endif
}

/* A caller that lowered its own priority (a live stream's analysis, which
 * must not take the CPU from the stream) lowers the lanes that work for
 * it; raising a lane's priority again may be refused, and it stays lower. */
static void
take_nice (int nice)
{
#ifdef __linux__
  if (thread_nice () != nice)
    (void) setpriority (PRIO_PROCESS, (id_t) syscall (SYS_gettid), nice);
#else
  (void) nice;
#endif
}

/* A pool thread's turn in a batch. */
static void
lane_main (gpointer lane, gpointer engine)
{
  MrcnnBatchRun *b = ((MrcnnLane *) lane)->run;
  take_nice (b->nice);
  lane_run (engine, lane);
  g_mutex_lock (&b->lock);
  if (--b->busy == 0)
    g_cond_signal (&b->idle);
  g_mutex_unlock (&b->lock);
}

int
mrcnn_engine_detect_batch (MrcnnEngine *e, const MrcnnImage *images,
    const MrcnnFrameSettings *settings, int n, MrcnnResult *results,
    GError **error)
{
  MrcnnBatchRun run = {
    .images = images, .settings = settings, .results = results, .n = n,
    .failed = n, .nice = thread_nice (),
  }, *b = &run;
  g_mutex_init (&b->lock);
  g_cond_init (&b->idle);
  MrcnnLane *taken[MRCNN_MAX_LANES] = { NULL };
  gboolean grouped = e->batch_slots > 1 && n > 1;
  /* the dumps and stage times are of one frame at a time */
  int lanes = take_lanes (e, grouped || e->dump_dir || e->time_stages ? 1
      : CLAMP (n, 1, e->n_lanes), taken);
  b->busy = lanes - 1;
  for (int i = 0; i < lanes; i++)
    taken[i]->run = b;
  for (int i = 1; i < lanes; i++)
    g_thread_pool_push (e->pool, taken[i], NULL);
  if (grouped)
    lane_run_grouped (e, taken[0]);
  else
    lane_run (e, taken[0]);
  g_mutex_lock (&b->lock);
  while (b->busy > 0)
    g_cond_wait (&b->idle, &b->lock);
  g_mutex_unlock (&b->lock);
  give_lanes (e, taken, lanes);
  g_mutex_clear (&b->lock);
  g_cond_clear (&b->idle);
  if (b->failed < n)
    g_propagate_prefixed_error (error, g_steal_pointer (&b->error),
        "frame %d of %d: ", b->failed, n);
  return b->failed;
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
