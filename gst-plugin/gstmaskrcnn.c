/**
 * SECTION:element-maskrcnn
 * @title: maskrcnn
 *
 * Runs Mask R-CNN instance segmentation on video frames and attaches the
 * detections to the buffer as #GstMaskRcnnMeta (box, class, score and a
 * box-sized mask at frame resolution) and as one
 * #GstVideoRegionOfInterestMeta per detection.  The frame's pixels pass
 * through untouched; maskrcnnoverlay draws the results.
 *
 * Two ways to run, chosen by #GstMaskRcnn:mode (the default picks by the
 * source): every frame analysed, the stream waiting for the model (files);
 * or the stream never waiting (cameras): inference runs on a thread of the
 * element, at most one frame in flight, and every frame leaves at once
 * carrying the newest finished results, marked with the frame they were
 * computed on and their age.  The element answers the LATENCY query with
 * the time it holds a frame, measured, and posts a LATENCY message when
 * that changes.
 *
 * Models: torchvision maskrcnn_resnet50_fpn weights as .safetensors, or
 * matterport's Keras .h5 weights (mask_rcnn_coco.h5 or a custom-trained
 * one, with its settings in the `config` sidecar).  A model set while
 * playing loads in the background and replaces the running one between
 * frames.
 *
 * |[
 * gst-launch-1.0 filesrc location=in.mp4 ! decodebin ! videoconvert ! \
 *   maskrcnn model=maskrcnn_resnet50_fpn.safetensors ! maskrcnnoverlay ! \
 *   videoconvert ! autovideosink
 * gst-launch-1.0 v4l2src ! videoconvert ! maskrcnn model=mask_rcnn_coco.h5 ! \
 *   maskrcnnoverlay ! videoconvert ! autovideosink
 * ]|
 */
#include "gstmaskrcnn.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#ifdef __linux__
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "meta/gstmaskrcnnmeta.h"

/* Threads.  While the element runs, three threads touch it: the streaming
 * thread (transform_ip and the serialized events), the worker (the only
 * thread that runs the engine: self->analyzer and self->work_result are its
 * own) and, while a model set during playback loads, the loader.  What they
 * share is under self->lock: the job (the frame handed to the worker) and
 * its state, the latest results and what they are of, the model loaded in
 * the background (next), the stream's epoch and the quit/reload/failed
 * flags; self->cond signals every change of them.  The object lock guards
 * the properties, QoS and latency figures.  The object lock may be held
 * when self->lock is taken, never the reverse, and messages (posting takes
 * the object lock) are posted with self->lock released.
 *
 * The epoch is bumped at each caps change, flush and stream start; results
 * of an earlier epoch are never attached, so none cross those boundaries.
 *
 * Elements naming one engine-id share an analyzer: the table of them is
 * under shared_lock (taken alone).  Workers hand their frames to the
 * analyzer (analyzer_run): the frames wait in its queue, oldest first, and
 * a worker whose frame waits runs the next batch when one of the engine's
 * lanes is free, the queue holds batch-size frames (or a frame of every
 * element sharing it that has none running: each hands over one at a
 * time) or its oldest has waited batch-timeout; it runs the frames of the
 * other workers with its own, each with its element's thresholds,
 * classes and threads, and wakes them.  Batches run side by side while
 * lanes are free, each on the free lanes it found (engine.c).  The queue,
 * the counts of lanes held, frames running and senders, and which batch
 * storage is busy are under the analyzer's run_lock, taken alone (a busy
 * storage is its runner's own). */

GST_DEBUG_CATEGORY_STATIC (gst_mask_rcnn_debug);
#define GST_CAT_DEFAULT gst_mask_rcnn_debug

#define VIDEO_CAPS \
  GST_VIDEO_CAPS_MAKE ("{ RGB, BGR, RGBx, BGRx, xRGB, xBGR, RGBA, BGRA, " \
      "ARGB, ABGR, NV12, I420 }") ", width = (int) [ 16, 8192 ], " \
      "height = (int) [ 16, 8192 ]"

enum
{
  PROP_0,
  PROP_MODEL,
  PROP_CONFIG,
  PROP_BACKEND,
  PROP_DEVICE_ID,
  PROP_PRECISION,
  PROP_SCORE_THRESHOLD,
  PROP_NMS_THRESHOLD,
  PROP_MAX_DETECTIONS,
  PROP_MASK_THRESHOLD,
  PROP_CLASSES,
  PROP_INTERVAL,
  PROP_LABELS,
  PROP_SOFT_MASKS,
  PROP_ROI_META,
  PROP_MODE,
  PROP_QOS,
  PROP_LATENCY,
  PROP_THREADS,
  PROP_ENGINE_ID,
  PROP_BATCH_SIZE,
  PROP_BATCH_TIMEOUT,
  PROP_LANES,
};

#define DEFAULT_BACKEND MRCNN_BACKEND_AUTO
#define DEFAULT_PRECISION MRCNN_PRECISION_FP32
#define DEFAULT_THRESHOLD -1.0f
#define DEFAULT_MAX_DETECTIONS -1
#define DEFAULT_INTERVAL 0
#define DEFAULT_SOFT_MASKS FALSE
#define DEFAULT_ROI_META TRUE
#define DEFAULT_MODE GST_MASK_RCNN_MODE_AUTO
#define DEFAULT_QOS FALSE
#define DEFAULT_THREADS 0
#define DEFAULT_BATCH_SIZE 1
#define DEFAULT_BATCH_TIMEOUT (40 * GST_MSECOND)
#define DEFAULT_LANES 1

/* The worker's nice value in live mode (the streaming thread's: 0). */
#define WORKER_NICE 10

/* Frames handed to the worker over which the longest processing time is
 * kept before the reported latency may come down again. */
#define LATENCY_WINDOW 30

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS (VIDEO_CAPS));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS (VIDEO_CAPS));

#define GST_TYPE_MASK_RCNN_BACKEND (gst_mask_rcnn_backend_get_type ())
static GType
gst_mask_rcnn_backend_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    { MRCNN_BACKEND_AUTO, "CUDA when a usable GPU exists, else CPU", "auto" },
    { MRCNN_BACKEND_CPU, "CPU (oneDNN)", "cpu" },
    { MRCNN_BACKEND_CUDA, "CUDA GPU", "cuda" },
    { 0, NULL, NULL },
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstMaskRcnnBackend", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define GST_TYPE_MASK_RCNN_PRECISION (gst_mask_rcnn_precision_get_type ())
static GType
gst_mask_rcnn_precision_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    { MRCNN_PRECISION_FP32, "32-bit floating point", "fp32" },
    { MRCNN_PRECISION_FP16, "16-bit floating point (CUDA backend only)",
        "fp16" },
    { 0, NULL, NULL },
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstMaskRcnnPrecision", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define GST_TYPE_MASK_RCNN_MODE (gst_mask_rcnn_mode_get_type ())
static GType
gst_mask_rcnn_mode_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    { GST_MASK_RCNN_MODE_AUTO, "live when the source is live (a camera, "
          "a network stream), else every-frame", "auto" },
    { GST_MASK_RCNN_MODE_EVERY_FRAME, "every frame analysed (but those "
          "interval skips); the stream waits for the model", "every-frame" },
    { GST_MASK_RCNN_MODE_LIVE, "the stream never waits: frames leave at "
          "once with the newest finished results (repeated, with their age); "
          "the next free frame is analysed on the element's thread",
        "live" },
    { 0, NULL, NULL },
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstMaskRcnnMode", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define gst_mask_rcnn_parent_class parent_class
G_DEFINE_TYPE (GstMaskRcnn, gst_mask_rcnn, GST_TYPE_BASE_TRANSFORM);
GST_ELEMENT_REGISTER_DEFINE_WITH_CODE (maskrcnn, "maskrcnn", GST_RANK_NONE,
    GST_TYPE_MASK_RCNN,
    GST_DEBUG_CATEGORY_INIT (gst_mask_rcnn_debug, "maskrcnn", 0,
        "Mask R-CNN instance segmentation"));

/* The model used when the property is not set: GST_MASKRCNN_MODEL where
 * set (empty: none, for running without one), else the installed shapes
 * demo model where it exists.  Read once, when the class is made. */
static const gchar *
default_model_path (void)
{
  static const gchar *path;
  static gsize done;
  if (g_once_init_enter (&done)) {
    const gchar *env = g_getenv ("GST_MASKRCNN_MODEL");
    if (env)
      path = *env ? g_strdup (env) : NULL;
    else if (g_file_test (MRCNN_DEFAULT_MODEL, G_FILE_TEST_IS_REGULAR))
      path = MRCNN_DEFAULT_MODEL;
    g_once_init_leave (&done, 1);
  }
  return path;
}

/* ---- the model: loaded at start, or in the background while playing ---- */

/* A frame handed to an analyzer, on the stack of the worker that waits for
 * it; done, ok and error are written by the worker that runs it. */
typedef struct {
  const MrcnnImage *image;
  const MrcnnFrameSettings *settings;
  MrcnnResult *result;
  gint64 deadline; /* monotonic, µs: runs by then, its batch full or not */
  gboolean done, ok;
  GError *error;
} AnalyzerRequest;

/* The storage of one running batch, batch_size of each: its runner's own
 * while busy. */
typedef struct {
  gboolean busy;
  AnalyzerRequest **requests;
  MrcnnImage *images;
  MrcnnFrameSettings *settings;
  MrcnnResult *results;
} AnalyzerBatch;

struct _GstMaskRcnnAnalyzer {
  MrcnnModel *model;
  MrcnnEngine *engine;
  gchar **class_names; /* labels file, or the model's names */
  int num_classes;
  gchar *name;         /* the weights file's name, for the meta */
  /* shared by the elements naming `shared_id` as their engine-id, each with
   * its own thresholds and classes; NULL for an element's own */
  gchar *shared_id;
  gchar *shared_key;   /* the model settings every sharer must have */
  guint shared_users;  /* elements running it, under shared_lock */
  /* frames run together, and how long the oldest waits for the others */
  guint batch_size;
  gint64 batch_timeout_us;
  /* under run_lock: the frames waiting, oldest first; the engine's lanes
   * the running batches hold (a batch counts the free ones, up to one per
   * frame, as the engine takes them; the engine may give it one more that
   * a batch ending has just given back, and the next batch then waits in
   * the engine for a lane); their frames; the elements that hand it
   * frames, each at most one at a time (so a batch is as full as it gets
   * when each of those without a frame running has one waiting); the
   * storage of up to one batch per lane */
  GMutex run_lock;
  GCond run_cond;
  GQueue waiting;
  guint lanes, lanes_held, frames_running;
  guint senders;
  AnalyzerBatch *batches;
};

/* Runs the oldest waiting frames (up to batch_size) as one batch on the
 * free lanes; called and returns with run_lock held, released while the
 * engine runs. */
static void
analyzer_run_batch (GstMaskRcnnAnalyzer *a)
{
  AnalyzerBatch *b = a->batches;
  while (b->busy)
    b++;
  b->busy = TRUE;
  int n = 0;
  while (n < (int) a->batch_size && !g_queue_is_empty (&a->waiting)) {
    AnalyzerRequest *r = g_queue_pop_head (&a->waiting);
    b->requests[n] = r;
    b->images[n] = *r->image;
    b->settings[n] = *r->settings;
    /* the result's storage, lent to the batch while its owner waits */
    b->results[n] = *r->result;
    n++;
  }
  guint lanes = MIN ((guint) n, a->lanes - a->lanes_held);
  a->lanes_held += lanes;
  a->frames_running += n;
  g_mutex_unlock (&a->run_lock);

  /* each frame its own fate: one that fails gets its error, those after
   * it run on (r->ok and r->error are read once r->done is set, under the
   * lock) */
  for (int first = 0; first < n;) {
    GError *error = NULL;
    int done = mrcnn_engine_detect_batch (a->engine, b->images + first,
        b->settings + first, n - first, b->results + first, &error);
    for (int i = first; i < first + done; i++)
      b->requests[i]->ok = TRUE;
    first += done;
    if (first < n)
      b->requests[first++]->error = error;
  }

  g_mutex_lock (&a->run_lock);
  for (int i = 0; i < n; i++) {
    *b->requests[i]->result = b->results[i];
    b->requests[i]->done = TRUE;
  }
  a->lanes_held -= lanes;
  a->frames_running -= n;
  b->busy = FALSE;
  g_cond_broadcast (&a->run_cond);
}

/* Runs a frame on the analyzer's engine, in a batch with the frames other
 * elements sharing it hand over meanwhile (it runs once batch_size frames,
 * or one of every sender without a frame running, wait, or the oldest has
 * waited batch_timeout, and a lane is free); returns when its results are
 * in r->result. */
static gboolean
analyzer_run (GstMaskRcnnAnalyzer *a, AnalyzerRequest *r)
{
  g_mutex_lock (&a->run_lock);
  r->deadline = g_get_monotonic_time () + a->batch_timeout_us;
  r->done = r->ok = FALSE;
  r->error = NULL;
  g_queue_push_tail (&a->waiting, r);
  g_cond_broadcast (&a->run_cond);
  while (!r->done) {
    AnalyzerRequest *oldest = g_queue_peek_head (&a->waiting);
    /* senders with a frame running cannot hand over another */
    guint idle = a->senders > a->frames_running
        ? a->senders - a->frames_running : 0;
    guint full = CLAMP (idle, 1, a->batch_size);
    gboolean can_run = a->lanes_held < a->lanes;
    if (can_run && oldest
        && (g_queue_get_length (&a->waiting) >= full
            || g_get_monotonic_time () >= oldest->deadline))
      analyzer_run_batch (a);
    else if (can_run && oldest)
      g_cond_wait_until (&a->run_cond, &a->run_lock, oldest->deadline);
    else
      g_cond_wait (&a->run_cond, &a->run_lock);
  }
  g_mutex_unlock (&a->run_lock);
  return r->ok;
}

static void
analyzer_clear (gpointer data)
{
  GstMaskRcnnAnalyzer *a = data;
  mrcnn_engine_free (a->engine);
  mrcnn_model_free (a->model);
  g_strfreev (a->class_names);
  g_free (a->name);
  g_free (a->shared_id);
  g_free (a->shared_key);
  for (guint i = 0; a->batches && i < a->lanes; i++) {
    g_free (a->batches[i].requests);
    g_free (a->batches[i].images);
    g_free (a->batches[i].settings);
    g_free (a->batches[i].results);
  }
  g_free (a->batches);
  g_mutex_clear (&a->run_lock);
  g_cond_clear (&a->run_cond);
}

static GstMaskRcnnAnalyzer *
analyzer_ref (GstMaskRcnnAnalyzer *a)
{
  return a ? g_atomic_rc_box_acquire (a) : NULL;
}

static void
analyzer_unref (GstMaskRcnnAnalyzer *a)
{
  if (a)
    g_atomic_rc_box_release_full (a, analyzer_clear);
}

/* The properties a model is loaded with, and the settings_serial they
 * were taken at. */
typedef struct {
  gchar *model_path, *config_path, *labels_path, *classes, *engine_id;
  MrcnnOptions options;
  guint batch_size;
  GstClockTime batch_timeout;
  guint serial;
} LoadSettings;

static void
load_settings_take (GstMaskRcnn *self, LoadSettings *s)
{
  GST_OBJECT_LOCK (self);
  s->model_path = g_strdup (self->model_path);
  s->config_path = g_strdup (self->config_path);
  s->labels_path = g_strdup (self->labels_path);
  s->classes = g_strdup (self->classes);
  s->engine_id = self->engine_id && *self->engine_id
      ? g_strdup (self->engine_id) : NULL;
  mrcnn_options_init (&s->options);
  s->options.backend = self->backend;
  s->options.device_id = self->device_id;
  s->options.precision = self->precision;
  s->options.score_threshold = self->score_threshold;
  s->options.nms_threshold = self->nms_threshold;
  s->options.max_detections = self->max_detections;
  s->options.mask_threshold = self->mask_threshold;
  /* an element of its own has one stream: its frames come one at a time */
  s->batch_size = s->engine_id ? self->batch_size : 1;
  s->batch_timeout = s->engine_id ? self->batch_timeout : 0;
  s->options.lanes = s->engine_id ? self->lanes : 1;
  s->options.max_batch = s->batch_size;
  s->serial = self->settings_serial;
  GST_OBJECT_UNLOCK (self);
}

static void
load_settings_clear (LoadSettings *s)
{
  g_free (s->model_path);
  g_free (s->config_path);
  g_free (s->labels_path);
  g_free (s->classes);
  g_free (s->engine_id);
}

/* Class names from the labels file: one per line, either one per class of
 * the model or one per class without the background (class 0). */
static gchar **
read_labels (const gchar *path, int num_classes, GError **error)
{
  gchar *text;
  if (!g_file_get_contents (path, &text, NULL, error))
    return NULL;
  gchar **lines = g_strsplit (text, "\n", -1);
  g_free (text);
  int n = g_strv_length (lines);
  while (n > 0 && *g_strstrip (lines[n - 1]) == '\0') {
    g_free (lines[n - 1]);
    lines[--n] = NULL;
  }
  if (n != num_classes && n != num_classes - 1) {
    g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
        "%s has %d labels; the model has %d classes, so it needs %d lines "
        "(%d without the background)", path, n, num_classes, num_classes,
        num_classes - 1);
    g_strfreev (lines);
    return NULL;
  }
  gchar **names = g_new0 (gchar *, num_classes + 1);
  int offset = num_classes - n;
  names[0] = g_strdup (offset ? "background" : g_strstrip (lines[0]));
  for (int i = offset; i < num_classes; i++)
    names[i] = g_strdup (g_strstrip (lines[i - offset]));
  g_strfreev (lines);
  return names;
}

/* The class filter the `classes` property names, one entry per class of
 * the analyzer's model: *keep NULL when it names none (empty). */
static gboolean
classes_filter (GstMaskRcnnAnalyzer *a, const gchar *classes, gboolean **keep,
    GError **error)
{
  int n = a->num_classes;
  gboolean *filter = g_new0 (gboolean, n);
  gchar **wanted = g_strsplit (classes ? classes : "", ",", -1);
  gboolean any = FALSE, ok = TRUE;
  for (gchar **w = wanted; *w && ok; w++) {
    const gchar *name = g_strstrip (*w);
    if (!*name)
      continue;
    int id = 1;
    while (id < n && strcmp (a->class_names[id], name) != 0)
      id++;
    if (id == n) {
      GString *all = g_string_new (NULL);
      for (int i = 1; i < n; i++)
        g_string_append_printf (all, "%s%s", i > 1 ? ", " : "",
            a->class_names[i]);
      g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
          "classes: \"%s\" is not a class of this model (its classes: %s)",
          name, all->str);
      g_string_free (all, TRUE);
      ok = FALSE;
    } else {
      filter[id] = any = TRUE;
    }
  }
  g_strfreev (wanted);
  if (!ok || !any)
    g_clear_pointer (&filter, g_free);
  *keep = filter;
  return ok;
}

/* Loads the model, labels and engine the settings name.  On failure the
 * error's message is the whole sentence for the user and *code the
 * GstResourceError it is. */
static GstMaskRcnnAnalyzer *
analyzer_load (const LoadSettings *s, GstResourceError *code, GError **error)
{
  GError *cause = NULL;
  if (!s->model_path || !*s->model_path) {
    *code = GST_RESOURCE_ERROR_NOT_FOUND;
    g_set_error_literal (error, GST_RESOURCE_ERROR, *code,
        "No model given: set the \"model\" property to a .safetensors "
        "(torchvision) or .h5 (matterport) weights file, or "
        "GST_MASKRCNN_MODEL to its path.");
    return NULL;
  }
  GstMaskRcnnAnalyzer *a = g_atomic_rc_box_new0 (GstMaskRcnnAnalyzer);
  g_mutex_init (&a->run_lock);
  g_cond_init (&a->run_cond);
  g_queue_init (&a->waiting);
  a->senders = 1;
  a->batch_size = MAX (s->batch_size, 1);
  a->batch_timeout_us = s->batch_timeout / GST_USECOND;
  const char *what = NULL;
  *code = GST_RESOURCE_ERROR_OPEN_READ;
  a->model = mrcnn_model_load_with_config (s->model_path, s->config_path,
      &cause);
  if (!a->model) {
    what = "Could not load the Mask R-CNN model";
    goto failed;
  }
  a->num_classes = mrcnn_model_num_classes (a->model);
  a->name = g_path_get_basename (s->model_path);
  if (s->labels_path && *s->labels_path) {
    a->class_names = read_labels (s->labels_path, a->num_classes, &cause);
    if (!a->class_names) {
      what = "Could not read the labels file";
      goto failed;
    }
  } else {
    a->class_names = g_new0 (gchar *, a->num_classes + 1);
    for (int i = 0; i < a->num_classes; i++)
      a->class_names[i] = g_strdup (mrcnn_model_class_name (a->model, i));
  }
  *code = GST_RESOURCE_ERROR_SETTINGS;
  a->engine = mrcnn_engine_new (a->model, &s->options, &cause);
  if (!a->engine) {
    what = "Could not start the Mask R-CNN engine";
    goto failed;
  }
  a->lanes = mrcnn_engine_get_lanes (a->engine);
  a->batches = g_new0 (AnalyzerBatch, a->lanes);
  for (guint i = 0; i < a->lanes; i++) {
    a->batches[i].requests = g_new (AnalyzerRequest *, a->batch_size);
    a->batches[i].images = g_new (MrcnnImage, a->batch_size);
    a->batches[i].settings = g_new (MrcnnFrameSettings, a->batch_size);
    a->batches[i].results = g_new (MrcnnResult, a->batch_size);
  }
  gboolean *keep = NULL;
  if (!classes_filter (a, s->classes, &keep, &cause))
    goto failed;
  g_free (keep);
  return a;

failed:
  if (what)
    g_set_error (error, GST_RESOURCE_ERROR, *code, "%s: %s", what,
        cause->message);
  else
    g_propagate_error (error, g_steal_pointer (&cause));
  g_clear_error (&cause);
  analyzer_unref (a);
  return NULL;
}

static void
post_load_failure (GstMaskRcnn *self, GstMessageType type,
    GstResourceError code, const GError *error, const LoadSettings *s,
    const gchar *prefix)
{
  gchar *debug = g_strdup_printf ("model=%s config=%s labels=%s backend=%d "
      "device-id=%d precision=%d", GST_STR_NULL (s->model_path),
      GST_STR_NULL (s->config_path), GST_STR_NULL (s->labels_path),
      s->options.backend, s->options.device_id, s->options.precision);
  gst_element_message_full (GST_ELEMENT (self), type, GST_RESOURCE_ERROR,
      code, g_strconcat (prefix, error->message, NULL), debug, __FILE__,
      GST_FUNCTION, __LINE__);
}

/* ---- engines shared by engine-id ----------------------------------------- */

/* The analyzers elements share by engine-id, by id; an entry is held by the
 * elements running it (shared_users, each with a reference) and leaves the
 * table when the last of them stops.  Under shared_lock. */
static GMutex shared_lock;
static GHashTable *shared_engines;

static gchar *
shared_key (const LoadSettings *s)
{
  return g_strdup_printf ("model=%s config=%s labels=%s backend=%d "
      "device-id=%d precision=%d batch-size=%u batch-timeout=%"
      G_GUINT64_FORMAT " lanes=%d", GST_STR_NULL (s->model_path),
      GST_STR_NULL (s->config_path), GST_STR_NULL (s->labels_path),
      s->options.backend, s->options.device_id, s->options.precision,
      s->batch_size, s->batch_timeout, s->options.lanes);
}

/* The analyzer s->engine_id names: the one running already, or one loaded
 * now (under the lock, so that elements starting together load it once).
 * NULL and an error when it runs with other settings or does not load. */
static GstMaskRcnnAnalyzer *
shared_acquire (const LoadSettings *s, GstResourceError *code,
    GError **error)
{
  gchar *key = shared_key (s);
  gboolean joined = FALSE;
  g_mutex_lock (&shared_lock);
  if (!shared_engines)
    shared_engines = g_hash_table_new (g_str_hash, g_str_equal);
  GstMaskRcnnAnalyzer *a = g_hash_table_lookup (shared_engines, s->engine_id);
  if (a && strcmp (a->shared_key, key) != 0) {
    *code = GST_RESOURCE_ERROR_SETTINGS;
    g_set_error (error, GST_RESOURCE_ERROR, *code, "engine-id \"%s\" runs "
        "%s; this element asks for %s.  Elements sharing an engine need the "
        "same model, config, labels, backend, device-id, precision, "
        "batch-size, batch-timeout and lanes",
        s->engine_id, a->shared_key, key);
    a = NULL;
  } else if (a) {
    analyzer_ref (a);
    a->shared_users++;
    joined = TRUE;
  } else if ((a = analyzer_load (s, code, error))) {
    a->shared_id = g_strdup (s->engine_id);
    a->shared_key = g_steal_pointer (&key);
    a->shared_users = 1;
    g_hash_table_insert (shared_engines, a->shared_id, a);
  }
  g_mutex_unlock (&shared_lock);
  if (joined) {
    g_mutex_lock (&a->run_lock);
    a->senders++;
    g_mutex_unlock (&a->run_lock);
  }
  g_free (key);
  return a;
}

/* An element lets go of the analyzer it ran. */
static void
analyzer_release (GstMaskRcnnAnalyzer *a)
{
  if (a && a->shared_id) {
    g_mutex_lock (&shared_lock);
    if (--a->shared_users == 0)
      g_hash_table_remove (shared_engines, a->shared_id);
    g_mutex_unlock (&shared_lock);
    /* the frames waiting may be all there will be now */
    g_mutex_lock (&a->run_lock);
    a->senders--;
    g_cond_broadcast (&a->run_cond);
    g_mutex_unlock (&a->run_lock);
  }
  analyzer_unref (a);
}

/* Loads the model set while playing; the worker takes it between frames.
 * A model that fails to load leaves the running one in place. */
static gpointer
loader_thread (gpointer data)
{
  GstMaskRcnn *self = data;

  g_mutex_lock (&self->lock);
  while (self->reload_wanted && !self->quit) {
    self->reload_wanted = FALSE;
    g_mutex_unlock (&self->lock);

    LoadSettings s;
    load_settings_take (self, &s);
    GError *error = NULL;
    GstResourceError code = GST_RESOURCE_ERROR_SETTINGS;
    GstMaskRcnnAnalyzer *a = NULL;
    if (s.engine_id)
      g_set_error (&error, GST_RESOURCE_ERROR, code, "engine-id \"%s\" is "
          "shared: its model changes when its elements start again",
          s.engine_id);
    else
      a = analyzer_load (&s, &code, &error);
    const char *backend = a ? mrcnn_engine_backend_name (a->engine) : NULL;

    /* settings changed again meanwhile (several properties set one after
     * the other): only the newest count, load again */
    g_mutex_lock (&self->lock);
    gboolean outdated = self->reload_wanted || self->quit;
    GstMaskRcnnAnalyzer *unused = NULL;
    if (a && !outdated) {
      unused = self->next;
      self->next = a;
      g_cond_broadcast (&self->cond);
    } else {
      unused = a;
    }
    g_mutex_unlock (&self->lock);

    if (a && !outdated)
      GST_INFO_OBJECT (self, "loaded %s on the %s backend; it replaces the "
          "running model at the next frame", s.model_path, backend);
    else if (!a && !outdated)
      post_load_failure (self, GST_MESSAGE_WARNING, code, error, &s,
          "The new settings were not applied, the running model goes on: ");
    analyzer_unref (unused);
    g_clear_error (&error);
    load_settings_clear (&s);
    g_mutex_lock (&self->lock);
  }
  self->loading = FALSE;
  g_mutex_unlock (&self->lock);
  return NULL;
}

/* A model property changed: while running, load the new settings in the
 * background (start() loads them otherwise). */
static void
request_reload (GstMaskRcnn *self)
{
  GThread *finished = NULL;

  g_mutex_lock (&self->lock);
  if (self->worker && !self->quit) {
    self->reload_wanted = TRUE;
    if (!self->loading) {
      finished = self->loader;
      self->loading = TRUE;
      self->loader = g_thread_new ("maskrcnn-load", loader_thread, self);
    }
  }
  g_mutex_unlock (&self->lock);
  if (finished)
    g_thread_join (finished);
}

static void
gst_mask_rcnn_set_property (GObject *object, guint prop_id,
    const GValue *value, GParamSpec *pspec)
{
  GstMaskRcnn *self = GST_MASK_RCNN (object);
  gboolean reload = FALSE;

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL:
      g_free (self->model_path);
      self->model_path = g_value_dup_string (value);
      reload = TRUE;
      break;
    case PROP_CONFIG:
      g_free (self->config_path);
      self->config_path = g_value_dup_string (value);
      reload = TRUE;
      break;
    case PROP_LABELS:
      g_free (self->labels_path);
      self->labels_path = g_value_dup_string (value);
      reload = TRUE;
      break;
    case PROP_BACKEND:
      self->backend = g_value_get_enum (value);
      reload = TRUE;
      break;
    case PROP_DEVICE_ID:
      self->device_id = g_value_get_int (value);
      reload = TRUE;
      break;
    case PROP_PRECISION:
      self->precision = g_value_get_enum (value);
      reload = TRUE;
      break;
    case PROP_SCORE_THRESHOLD:
      self->score_threshold = g_value_get_float (value);
      self->thresholds_changed = TRUE;
      break;
    case PROP_NMS_THRESHOLD:
      self->nms_threshold = g_value_get_float (value);
      self->thresholds_changed = TRUE;
      break;
    case PROP_MAX_DETECTIONS:
      self->max_detections = g_value_get_int (value);
      self->thresholds_changed = TRUE;
      break;
    case PROP_MASK_THRESHOLD:
      self->mask_threshold = g_value_get_float (value);
      self->thresholds_changed = TRUE;
      break;
    case PROP_CLASSES:
      g_free (self->classes);
      self->classes = g_value_dup_string (value);
      self->classes_changed = TRUE;
      break;
    case PROP_INTERVAL:
      self->interval = g_value_get_uint (value);
      break;
    case PROP_SOFT_MASKS:
      self->soft_masks = g_value_get_boolean (value);
      break;
    case PROP_ROI_META:
      self->roi_meta = g_value_get_boolean (value);
      break;
    case PROP_MODE:
      self->mode = g_value_get_enum (value);
      break;
    case PROP_QOS:
      self->qos = g_value_get_boolean (value);
      break;
    case PROP_THREADS:
      self->threads = g_value_get_int (value);
      break;
    case PROP_ENGINE_ID:
      g_free (self->engine_id);
      self->engine_id = g_value_dup_string (value);
      break;
    case PROP_BATCH_SIZE:
      self->batch_size = g_value_get_uint (value);
      break;
    case PROP_BATCH_TIMEOUT:
      self->batch_timeout = g_value_get_uint64 (value);
      break;
    case PROP_LANES:
      self->lanes = g_value_get_uint (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  if (reload) {
    self->settings_serial++;
    self->reload_pending = TRUE;
  }
  GST_OBJECT_UNLOCK (self);
}

/* Model properties set together (one g_object_set) load once: the load is
 * asked for when GObject dispatches their notifications, after the last of
 * them is set; a load started between two of them would fail on half the
 * new settings. */
static void
gst_mask_rcnn_dispatch_properties_changed (GObject *object, guint n_pspecs,
    GParamSpec **pspecs)
{
  GstMaskRcnn *self = GST_MASK_RCNN (object);

  G_OBJECT_CLASS (parent_class)->dispatch_properties_changed (object,
      n_pspecs, pspecs);
  GST_OBJECT_LOCK (self);
  gboolean reload = self->reload_pending;
  self->reload_pending = FALSE;
  GST_OBJECT_UNLOCK (self);
  if (reload)
    request_reload (self);
}

static void
gst_mask_rcnn_get_property (GObject *object, guint prop_id, GValue *value,
    GParamSpec *pspec)
{
  GstMaskRcnn *self = GST_MASK_RCNN (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL:
      g_value_set_string (value, self->model_path);
      break;
    case PROP_CONFIG:
      g_value_set_string (value, self->config_path);
      break;
    case PROP_LABELS:
      g_value_set_string (value, self->labels_path);
      break;
    case PROP_BACKEND:
      g_value_set_enum (value, self->backend);
      break;
    case PROP_DEVICE_ID:
      g_value_set_int (value, self->device_id);
      break;
    case PROP_PRECISION:
      g_value_set_enum (value, self->precision);
      break;
    case PROP_SCORE_THRESHOLD:
      g_value_set_float (value, self->score_threshold);
      break;
    case PROP_NMS_THRESHOLD:
      g_value_set_float (value, self->nms_threshold);
      break;
    case PROP_MAX_DETECTIONS:
      g_value_set_int (value, self->max_detections);
      break;
    case PROP_MASK_THRESHOLD:
      g_value_set_float (value, self->mask_threshold);
      break;
    case PROP_CLASSES:
      g_value_set_string (value, self->classes);
      break;
    case PROP_INTERVAL:
      g_value_set_uint (value, self->interval);
      break;
    case PROP_SOFT_MASKS:
      g_value_set_boolean (value, self->soft_masks);
      break;
    case PROP_ROI_META:
      g_value_set_boolean (value, self->roi_meta);
      break;
    case PROP_MODE:
      g_value_set_enum (value, self->mode);
      break;
    case PROP_QOS:
      g_value_set_boolean (value, self->qos);
      break;
    case PROP_LATENCY:
      g_value_set_uint64 (value, self->latency);
      break;
    case PROP_THREADS:
      g_value_set_int (value, self->threads);
      break;
    case PROP_ENGINE_ID:
      g_value_set_string (value, self->engine_id);
      break;
    case PROP_BATCH_SIZE:
      g_value_set_uint (value, self->batch_size);
      break;
    case PROP_BATCH_TIMEOUT:
      g_value_set_uint64 (value, self->batch_timeout);
      break;
    case PROP_LANES:
      g_value_set_uint (value, self->lanes);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

/* ---- the worker --------------------------------------------------------- */

/* The element's thresholds and classes for its frames (they run with
 * them on a shared engine too): those changed while playing, or all of them
 * for a model just swapped in. */
static void
apply_live_settings (GstMaskRcnn *self, gboolean all)
{
  GST_OBJECT_LOCK (self);
  gboolean thresholds = self->thresholds_changed || all;
  gboolean classes_changed = self->classes_changed;
  MrcnnFrameSettings *f = &self->frame_settings;
  if (thresholds) {
    f->score_threshold = self->score_threshold;
    f->nms_threshold = self->nms_threshold;
    f->max_detections = self->max_detections;
    f->mask_threshold = self->mask_threshold;
  }
  gchar *classes = classes_changed ? g_strdup (self->classes) : NULL;
  self->thresholds_changed = self->classes_changed = FALSE;
  GST_OBJECT_UNLOCK (self);

  GError *error = NULL;
  gboolean *keep = NULL;
  if (classes_changed
      && !classes_filter (self->analyzer, classes, &keep, &error)) {
    GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS,
        ("Class filter not changed: %s", error->message), (NULL));
    g_clear_error (&error);
  } else if (classes_changed) {
    g_free (self->keep_class);
    self->keep_class = g_steal_pointer (&keep);
    g_free (self->applied_classes);
    self->applied_classes = g_steal_pointer (&classes);
  } else if (all) {
    /* the new model's class ids; the loader checked the names */
    g_free (self->keep_class);
    classes_filter (self->analyzer, self->applied_classes, &self->keep_class,
        NULL);
  }
  f->keep_class = self->keep_class;
  g_free (classes);
}

/* In live mode the analysis is background work: the streaming thread must
 * win the CPU whenever it has a frame to pass on, or the sink drops the
 * frame.  So the worker leaves a core to the stream (its engine's thread
 * count) and lowers its own priority (Linux threads have their own nice
 * value; without privileges it cannot be raised again, so it stays low for
 * the worker's life). */
static void
make_analysis_background (GstMaskRcnn *self, gboolean *done)
{
  if (*done)
    return;
  *done = TRUE;
#ifdef __linux__
  pid_t tid = (pid_t) syscall (SYS_gettid);
  if (setpriority (PRIO_PROCESS, tid, WORKER_NICE) != 0)
    GST_WARNING_OBJECT (self, "cannot lower the analysis thread's "
        "priority: %s", g_strerror (errno));
#endif
}

/* Runs the engine on each frame handed over, one at a time, and publishes
 * the results as self->latest; swaps in a model loaded in the background
 * between frames. */
static gpointer
worker_thread (gpointer data)
{
  GstMaskRcnn *self = data;
  gboolean background = FALSE;

  g_mutex_lock (&self->lock);
  for (;;) {
    while (!self->quit && self->job_state != GST_MASK_RCNN_JOB_READY
        && !self->next)
      g_cond_wait (&self->cond, &self->lock);
    if (self->quit)
      break;
    GstMaskRcnnAnalyzer *retired = NULL;
    gboolean swapped = self->next != NULL;
    if (swapped) {
      retired = self->analyzer;
      self->analyzer = g_steal_pointer (&self->next);
    }
    gboolean have_job = self->job_state == GST_MASK_RCNN_JOB_READY;
    GstMaskRcnnJob job = self->job;
    if (have_job) {
      self->job.rgb = NULL; /* the worker's reference now */
      self->job_state = GST_MASK_RCNN_JOB_RUNNING;
    }
    g_mutex_unlock (&self->lock);

    analyzer_unref (retired);
    GError *error = NULL;
    gboolean ok = TRUE;
    GstClockTime took = 0;
    GstMaskRcnnAnalyzer *a = self->analyzer;
    if (swapped && !have_job)
      apply_live_settings (self, TRUE);
    if (have_job) {
      if (job.live)
        make_analysis_background (self, &background);
      GST_OBJECT_LOCK (self);
      int threads = self->threads;
      GST_OBJECT_UNLOCK (self);
      if (threads == 0 && job.live)
        threads = MAX (1, (int) g_get_num_processors () - 1);
      apply_live_settings (self, swapped);
      self->frame_settings.threads = threads;
      AnalyzerRequest request = {
        .image = &job.image,
        .settings = &self->frame_settings,
        .result = &self->work_result,
      };
      /* the time counts the wait for the batch: it is the frame's latency */
      gint64 begin = g_get_monotonic_time ();
      ok = analyzer_run (a, &request);
      took = (g_get_monotonic_time () - begin) * GST_USECOND;
      error = request.error;
      gst_clear_buffer (&job.rgb);
    }

    if (!ok) {
      /* posted before the streaming thread learns of it and stops the
       * pipeline with a less telling error of its own */
      GST_ELEMENT_ERROR (self, STREAM, FAILED,
          ("Mask R-CNN failed on a frame: %s", error->message), (NULL));
      g_clear_error (&error);
    }

    g_mutex_lock (&self->lock);
    if (!have_job)
      continue;
    GstMaskRcnnAnalyzer *previous = NULL;
    if (ok && job.epoch == self->epoch) {
      MrcnnResult done = self->work_result;
      self->work_result = self->latest.result;
      self->latest.result = done;
      previous = self->latest.analyzer;
      self->latest.analyzer = analyzer_ref (self->analyzer);
      self->latest.valid = TRUE;
      self->latest.epoch = job.epoch;
      self->latest.frame_number = job.frame_number;
      self->latest.pts = job.pts;
      self->latest.inference_time = took;
    }
    self->failed |= !ok;
    self->job_state = GST_MASK_RCNN_JOB_NONE;
    self->jobs_done++;
    g_cond_broadcast (&self->cond);
    if (previous) {
      /* a model swapped out is freed here, at its last results' end: not
       * under the lock the streaming thread waits on */
      g_mutex_unlock (&self->lock);
      analyzer_unref (previous);
      g_mutex_lock (&self->lock);
    }
  }
  g_mutex_unlock (&self->lock);
  return NULL;
}

/* ---- start and stop ------------------------------------------------------ */

static gboolean
gst_mask_rcnn_start (GstBaseTransform *trans)
{
  GstMaskRcnn *self = GST_MASK_RCNN (trans);
  LoadSettings s;
  GError *error = NULL;
  GstResourceError code;

  load_settings_take (self, &s);
  GstMaskRcnnAnalyzer *a = s.engine_id ? shared_acquire (&s, &code, &error)
      : analyzer_load (&s, &code, &error);
  /* this element's classes, on the model another may have loaded */
  g_clear_pointer (&self->keep_class, g_free);
  if (a && !classes_filter (a, s.classes, &self->keep_class, &error)) {
    code = GST_RESOURCE_ERROR_SETTINGS;
    g_clear_pointer (&a, analyzer_release);
  }
  if (!a) {
    post_load_failure (self, GST_MESSAGE_ERROR, code, error, &s, "");
    g_clear_error (&error);
    load_settings_clear (&s);
    return FALSE;
  }
  g_free (self->applied_classes);
  self->applied_classes = g_strdup (s.classes);
  GST_INFO_OBJECT (self, "loaded %s on the %s backend", s.model_path,
      mrcnn_engine_backend_name (a->engine));
  load_settings_clear (&s);

  GST_OBJECT_LOCK (self);
  self->earliest_time = GST_CLOCK_TIME_NONE;
  self->latency = 0;
  self->upstream_live = FALSE;
  /* the worker takes the thresholds at its first frame; the classes are
   * the snapshot's, checked above; model properties set since (before the
   * worker could see them) load in the background */
  self->thresholds_changed = TRUE;
  self->classes_changed = FALSE;
  gboolean changed = self->settings_serial != s.serial;
  GST_OBJECT_UNLOCK (self);
  self->analyzer = a;
  self->frame_count = self->analysed = self->skipped_late = 0;
  self->skip_left = 0;
  self->stream_started = FALSE;
  self->window_max = 0;
  self->window_frames = 0;
  g_mutex_lock (&self->lock);
  self->quit = self->failed = self->reload_wanted = FALSE;
  self->job_state = GST_MASK_RCNN_JOB_NONE;
  self->jobs_submitted = self->jobs_done = 0;
  self->epoch++;
  self->flushing = FALSE;
  self->worker = g_thread_new ("maskrcnn-worker", worker_thread, self);
  g_mutex_unlock (&self->lock);
  if (changed)
    request_reload (self);
  return TRUE;
}

/* Frees the per-stream state; the threads have ended. */
static void
clear_stream_state (GstMaskRcnn *self)
{
  g_clear_pointer (&self->next, analyzer_unref);
  g_clear_pointer (&self->analyzer, analyzer_release);
  g_clear_pointer (&self->latest.analyzer, analyzer_unref);
  self->latest.valid = FALSE;
  mrcnn_result_clear (&self->latest.result);
  mrcnn_result_clear (&self->work_result);
  gst_clear_buffer (&self->job.rgb);
  g_clear_pointer (&self->converter, gst_video_converter_free);
  gst_clear_buffer (&self->rgb_buffer);
}

static gboolean
gst_mask_rcnn_stop (GstBaseTransform *trans)
{
  GstMaskRcnn *self = GST_MASK_RCNN (trans);

  g_mutex_lock (&self->lock);
  self->quit = TRUE;
  g_cond_broadcast (&self->cond);
  GThread *worker = g_steal_pointer (&self->worker);
  GThread *loader = g_steal_pointer (&self->loader);
  g_mutex_unlock (&self->lock);
  /* a frame being analysed or a model being loaded is finished first */
  if (worker)
    g_thread_join (worker);
  if (loader)
    g_thread_join (loader);
  clear_stream_state (self);
  return TRUE;
}

/* ---- the stream ---------------------------------------------------------- */

/* Results stop applying: a new epoch.  restart: a new stream (or a flush),
 * whose frames count from 0 again. */
static void
begin_epoch (GstMaskRcnn *self, gboolean restart)
{
  g_mutex_lock (&self->lock);
  self->epoch++;
  self->latest.valid = FALSE;
  g_mutex_unlock (&self->lock);
  self->skip_left = 0;
  if (restart) {
    self->frame_count = 0;
    self->stream_started = FALSE;
    self->analysed = self->skipped_late = 0;
  }
}

static gboolean
gst_mask_rcnn_set_caps (GstBaseTransform *trans, GstCaps *incaps,
    GstCaps *outcaps)
{
  GstMaskRcnn *self = GST_MASK_RCNN (trans);

  if (!gst_video_info_from_caps (&self->info, incaps)) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("Invalid video caps: %" GST_PTR_FORMAT, incaps), (NULL));
    return FALSE;
  }
  begin_epoch (self, FALSE);
  g_clear_pointer (&self->converter, gst_video_converter_free);
  /* the worker may still read the previous one: it holds a reference */
  gst_clear_buffer (&self->rgb_buffer);
  int w = GST_VIDEO_INFO_WIDTH (&self->info);
  int h = GST_VIDEO_INFO_HEIGHT (&self->info);
  gst_video_info_set_format (&self->rgb_info, GST_VIDEO_FORMAT_RGB, w, h);
  /* the converter wants both sides to agree on everything but format */
  self->rgb_info.fps_n = self->info.fps_n;
  self->rgb_info.fps_d = self->info.fps_d;
  self->rgb_info.par_n = self->info.par_n;
  self->rgb_info.par_d = self->info.par_d;
  self->rgb_info.interlace_mode = self->info.interlace_mode;
  if (GST_VIDEO_INFO_FORMAT (&self->info) != GST_VIDEO_FORMAT_RGB)
    self->converter = gst_video_converter_new (&self->info, &self->rgb_info,
        gst_structure_new ("options", GST_VIDEO_CONVERTER_OPT_THREADS,
            G_TYPE_UINT, 1, NULL));
  self->rgb_buffer = gst_buffer_new_allocate (NULL,
      GST_VIDEO_INFO_SIZE (&self->rgb_info), NULL);
  if ((GST_VIDEO_INFO_FORMAT (&self->info) != GST_VIDEO_FORMAT_RGB
          && !self->converter) || !self->rgb_buffer) {
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
        ("Cannot convert %s frames to RGB",
            gst_video_format_to_string (GST_VIDEO_INFO_FORMAT (&self->info))),
        (NULL));
    return FALSE;
  }
  GST_DEBUG_OBJECT (self, "analysing %dx%d %s", w, h,
      gst_video_format_to_string (self->info.finfo->format));
  return TRUE;
}

/* Fixed caps outside the templates are refused (upstream then fails with
 * not-negotiated); a warning first says what would be accepted. */
static gboolean
gst_mask_rcnn_accept_caps (GstBaseTransform *trans, GstPadDirection direction,
    GstCaps *caps)
{
  gboolean ok = GST_BASE_TRANSFORM_CLASS (parent_class)->accept_caps (trans,
      direction, caps);
  if (!ok && direction == GST_PAD_SINK && gst_caps_is_fixed (caps)) {
    gchar *text = gst_caps_to_string (caps);
    GST_ELEMENT_WARNING (trans, STREAM, FORMAT,
        ("maskrcnn cannot analyse %s: it takes video/x-raw in RGB, BGR, "
            "RGBx, BGRx, xRGB, xBGR, RGBA, BGRA, ARGB, ABGR, NV12 or I420, "
            "16x16 to 8192x8192 (put videoconvert and videoscale before it)",
            text), (NULL));
    g_free (text);
  }
  return ok;
}

static gboolean
gst_mask_rcnn_sink_event (GstBaseTransform *trans, GstEvent *event)
{
  GstMaskRcnn *self = GST_MASK_RCNN (trans);

  switch (GST_EVENT_TYPE (event)) {
    case GST_EVENT_FLUSH_START:
      /* a streaming thread waiting for an analysis leaves at once */
      g_mutex_lock (&self->lock);
      self->flushing = TRUE;
      g_cond_broadcast (&self->cond);
      g_mutex_unlock (&self->lock);
      break;
    case GST_EVENT_FLUSH_STOP:
      GST_OBJECT_LOCK (self);
      self->earliest_time = GST_CLOCK_TIME_NONE;
      GST_OBJECT_UNLOCK (self);
      g_mutex_lock (&self->lock);
      self->flushing = FALSE;
      g_mutex_unlock (&self->lock);
      begin_epoch (self, TRUE);
      break;
    case GST_EVENT_STREAM_START:{
      const gchar *id = NULL;
      gst_event_parse_stream_start (event, &id);
      g_free (self->stream_id);
      self->stream_id = g_strdup (id);
      begin_epoch (self, TRUE);
      break;
    }
    default:
      break;
  }
  return GST_BASE_TRANSFORM_CLASS (parent_class)->sink_event (trans, event);
}

/* QoS events from downstream: frames whose running time is before
 * timestamp + jitter will be late; with `qos` they are not analysed. */
static gboolean
gst_mask_rcnn_src_event (GstBaseTransform *trans, GstEvent *event)
{
  GstMaskRcnn *self = GST_MASK_RCNN (trans);

  if (GST_EVENT_TYPE (event) == GST_EVENT_QOS) {
    GstClockTimeDiff jitter;
    GstClockTime timestamp;
    gst_event_parse_qos (event, NULL, NULL, &jitter, &timestamp);
    GST_OBJECT_LOCK (self);
    if (jitter < 0 && (GstClockTime) - jitter > timestamp)
      self->earliest_time = 0;
    else
      self->earliest_time = timestamp + jitter;
    GST_OBJECT_UNLOCK (self);
  }
  return GST_BASE_TRANSFORM_CLASS (parent_class)->src_event (trans, event);
}

/* LATENCY: upstream's, plus the longest time the element has held a frame
 * lately (a live source only). */
static gboolean
gst_mask_rcnn_query (GstBaseTransform *trans, GstPadDirection direction,
    GstQuery *query)
{
  GstMaskRcnn *self = GST_MASK_RCNN (trans);

  if (direction != GST_PAD_SRC || GST_QUERY_TYPE (query) != GST_QUERY_LATENCY)
    return GST_BASE_TRANSFORM_CLASS (parent_class)->query (trans, direction,
        query);
  if (!gst_pad_peer_query (GST_BASE_TRANSFORM_SINK_PAD (trans), query))
    return FALSE;
  gboolean live;
  GstClockTime min, max;
  gst_query_parse_latency (query, &live, &min, &max);
  GST_OBJECT_LOCK (self);
  self->upstream_live = live;
  GstClockTime ours = self->latency;
  GST_OBJECT_UNLOCK (self);
  if (live) {
    min += ours;
    if (GST_CLOCK_TIME_IS_VALID (max))
      max += ours;
  }
  GST_DEBUG_OBJECT (self, "latency: ours %" GST_TIME_FORMAT ", total min %"
      GST_TIME_FORMAT " max %" GST_TIME_FORMAT, GST_TIME_ARGS (ours),
      GST_TIME_ARGS (min), GST_TIME_ARGS (max));
  gst_query_set_latency (query, live, min, max);
  return TRUE;
}

/* Whether upstream is live, asked once per stream (the LATENCY query of the
 * pipeline may come later, or never). */
static gboolean
upstream_is_live (GstMaskRcnn *self)
{
  if (!self->stream_started) {
    GstQuery *query = gst_query_new_latency ();
    gboolean live = FALSE;
    if (gst_pad_peer_query (GST_BASE_TRANSFORM_SINK_PAD (self), query))
      gst_query_parse_latency (query, &live, NULL, NULL);
    gst_query_unref (query);
    GST_OBJECT_LOCK (self);
    self->upstream_live = live;
    GST_OBJECT_UNLOCK (self);
    GST_DEBUG_OBJECT (self, "upstream is %slive", live ? "" : "not ");
    self->stream_started = TRUE;
  }
  GST_OBJECT_LOCK (self);
  gboolean live = self->upstream_live;
  GST_OBJECT_UNLOCK (self);
  return live;
}

/* With `qos`: the frame will reach the sink too late to be shown, so it is
 * not analysed (a QoS message says so); it still goes on. */
static gboolean
skip_late_frame (GstMaskRcnn *self, GstBuffer *buffer, gboolean live)
{
  GstSegment *segment = &GST_BASE_TRANSFORM (self)->segment;
  GST_OBJECT_LOCK (self);
  gboolean qos = self->qos;
  GstClockTime earliest = self->earliest_time;
  GST_OBJECT_UNLOCK (self);
  GstClockTime pts = GST_BUFFER_PTS (buffer);
  if (!qos || !GST_CLOCK_TIME_IS_VALID (earliest)
      || !GST_CLOCK_TIME_IS_VALID (pts) || segment->format != GST_FORMAT_TIME)
    return FALSE;
  GstClockTime running = gst_segment_to_running_time (segment,
      GST_FORMAT_TIME, pts);
  if (!GST_CLOCK_TIME_IS_VALID (running) || running > earliest)
    return FALSE;
  self->skipped_late++;
  GST_LOG_OBJECT (self, "frame at %" GST_TIME_FORMAT " is late: not "
      "analysed", GST_TIME_ARGS (pts));
  GstMessage *msg = gst_message_new_qos (GST_OBJECT (self), live, running,
      gst_segment_to_stream_time (segment, GST_FORMAT_TIME, pts), pts,
      GST_BUFFER_DURATION (buffer));
  gst_message_set_qos_values (msg, GST_CLOCK_DIFF (running, earliest), 1.0,
      1000000);
  gst_message_set_qos_stats (msg, GST_FORMAT_BUFFERS, self->analysed,
      self->skipped_late);
  gst_element_post_message (GST_ELEMENT (self), msg);
  return TRUE;
}

typedef enum {
  SUBMIT_OK,
  SUBMIT_BUSY,
  SUBMIT_FAILED,
  SUBMIT_FLUSHING,
} SubmitResult;

static SubmitResult
submit_state (GstMaskRcnn *self)
{
  return self->failed ? SUBMIT_FAILED : self->flushing ? SUBMIT_FLUSHING
      : self->job_state != GST_MASK_RCNN_JOB_NONE ? SUBMIT_BUSY : SUBMIT_OK;
}

/* Hands a copy of the frame (in RGB) to the worker.  wait: until it is
 * analysed (every-frame mode); else only when the worker is free (live
 * mode).  A flush ends the wait: the frame's results then belong to an
 * epoch that is over. */
static SubmitResult
submit_frame (GstMaskRcnn *self, GstBuffer *buffer, guint64 frame_number,
    gboolean wait)
{
  g_mutex_lock (&self->lock);
  SubmitResult state;
  while ((state = submit_state (self)) == SUBMIT_BUSY && wait)
    g_cond_wait (&self->cond, &self->lock);
  g_mutex_unlock (&self->lock);
  if (state != SUBMIT_OK)
    return state;

  GstVideoFrame frame, rgb;
  if (!gst_video_frame_map (&frame, &self->info, buffer, GST_MAP_READ)) {
    GST_ELEMENT_ERROR (self, STREAM, FAILED, ("Cannot read the frame"),
        (NULL));
    return SUBMIT_FAILED;
  }
  /* the worker has dropped its reference to the RGB buffer (job NONE) */
  if (!gst_video_frame_map (&rgb, &self->rgb_info, self->rgb_buffer,
          GST_MAP_WRITE)) {
    gst_video_frame_unmap (&frame);
    GST_ELEMENT_ERROR (self, STREAM, FAILED, ("Cannot map the RGB frame"),
        (NULL));
    return SUBMIT_FAILED;
  }
  if (self->converter)
    gst_video_converter_frame (self->converter, &frame, &rgb);
  else
    gst_video_frame_copy (&rgb, &frame);
  gst_video_frame_unmap (&frame);

  g_mutex_lock (&self->lock);
  self->job = (GstMaskRcnnJob) {
    .image = {
      .data = GST_VIDEO_FRAME_PLANE_DATA (&rgb, 0),
      .width = GST_VIDEO_FRAME_WIDTH (&rgb),
      .height = GST_VIDEO_FRAME_HEIGHT (&rgb),
      .stride = GST_VIDEO_FRAME_PLANE_STRIDE (&rgb, 0),
    },
    .rgb = gst_buffer_ref (self->rgb_buffer),
    .frame_number = frame_number,
    .pts = GST_BUFFER_PTS (buffer),
    .epoch = self->epoch,
    .live = !wait,
  };
  /* (the RGB buffer's memory stays put while the job holds it) */
  gst_video_frame_unmap (&rgb);
  self->job_state = GST_MASK_RCNN_JOB_READY;
  guint64 ticket = ++self->jobs_submitted;
  g_cond_broadcast (&self->cond);
  while (wait && self->jobs_done < ticket && !self->flushing)
    g_cond_wait (&self->cond, &self->lock);
  state = self->failed ? SUBMIT_FAILED
      : wait && self->jobs_done < ticket ? SUBMIT_FLUSHING : SUBMIT_OK;
  g_mutex_unlock (&self->lock);
  return state;
}

/* The newest results of this epoch, if any, as meta on the buffer. */
static void
attach_results (GstMaskRcnn *self, GstBuffer *buffer, guint64 frame_number)
{
  GST_OBJECT_LOCK (self);
  gboolean soft = self->soft_masks, roi_meta = self->roi_meta;
  GST_OBJECT_UNLOCK (self);

  g_mutex_lock (&self->lock);
  if (!self->latest.valid || self->latest.epoch != self->epoch) {
    g_mutex_unlock (&self->lock);
    return;
  }
  const MrcnnResult *r = &self->latest.result;
  gchar **class_names = self->latest.analyzer->class_names;
  GstMaskRcnnMeta *meta = gst_buffer_add_mask_rcnn_meta (buffer,
      r->image_width, r->image_height);
  meta->repeated = self->latest.frame_number != frame_number;
  meta->soft_masks = soft;
  meta->inference_time = self->latest.inference_time;
  meta->frame_number = frame_number;
  meta->result_frame_number = self->latest.frame_number;
  meta->result_pts = self->latest.pts;
  gst_mask_rcnn_meta_set_source (meta, self->stream_id
      ? self->stream_id : GST_ELEMENT_NAME (self),
      self->latest.analyzer->name);
  GstClockTime pts = GST_BUFFER_PTS (buffer);
  if (!meta->repeated)
    meta->result_age = 0;
  else if (GST_CLOCK_TIME_IS_VALID (pts)
      && GST_CLOCK_TIME_IS_VALID (self->latest.pts) && pts >= self->latest.pts)
    meta->result_age = pts - self->latest.pts;
  for (int i = 0; i < r->n_detections; i++) {
    const MrcnnDetection *d = &r->detections[i];
    const gchar *name = class_names[d->label_id];
    float w = d->box[2] - d->box[0], h = d->box[3] - d->box[1];
    GstMaskRcnnDetection *out = gst_mask_rcnn_meta_add_detection (meta,
        d->label_id, name, d->score, d->box[0], d->box[1], w, h, d->mask_x,
        d->mask_y, d->mask_width, d->mask_height, NULL);
    gsize size = (gsize) d->mask_width * d->mask_height;
    for (gsize p = 0; p < size; p++)
      out->mask[p] = soft ? (guint8) lrintf (d->mask[p] * 255.0f)
          : d->mask_binary[p] ? 255 : 0;
    if (!roi_meta)
      continue;
    GstVideoRegionOfInterestMeta *roi =
        gst_buffer_add_video_region_of_interest_meta (buffer, name,
        (guint) floorf (d->box[0]), (guint) floorf (d->box[1]),
        (guint) ceilf (w), (guint) ceilf (h));
    roi->id = i;
    gst_video_region_of_interest_meta_add_param (roi,
        gst_structure_new ("detection",
            "x_min", G_TYPE_DOUBLE, (double) d->box[0] / r->image_width,
            "y_min", G_TYPE_DOUBLE, (double) d->box[1] / r->image_height,
            "x_max", G_TYPE_DOUBLE, (double) d->box[2] / r->image_width,
            "y_max", G_TYPE_DOUBLE, (double) d->box[3] / r->image_height,
            "confidence", G_TYPE_DOUBLE, (double) d->score,
            "label_id", G_TYPE_INT, d->label_id,
            "label", G_TYPE_STRING, name,
            "model", G_TYPE_STRING, self->latest.analyzer->name, NULL));
  }
  g_mutex_unlock (&self->lock);
}

/* The time a frame spent in the element raises the reported latency at
 * once (with a quarter of headroom).  It comes down only when a window of
 * LATENCY_WINDOW frames that were handed to the worker (those that cost
 * most) all needed less than half of it: frames that only carried results
 * are too quick to say what the next analysed one will need.  A LATENCY
 * message asks the pipeline to query again. */
static void
update_latency (GstMaskRcnn *self, GstClockTime took, gboolean submitted)
{
  gboolean changed = FALSE;
  GST_OBJECT_LOCK (self);
  if (took > self->latency) {
    self->latency = took + took / 4;
    changed = TRUE;
  }
  if (submitted) {
    self->window_max = MAX (self->window_max, took);
    if (++self->window_frames >= LATENCY_WINDOW) {
      GstClockTime enough = self->window_max + self->window_max / 4;
      if (enough < self->latency / 2) {
        self->latency = enough;
        changed = TRUE;
      }
      self->window_max = 0;
      self->window_frames = 0;
    }
  }
  GstClockTime latency = self->latency;
  GST_OBJECT_UNLOCK (self);
  if (changed) {
    GST_DEBUG_OBJECT (self, "latency now %" GST_TIME_FORMAT,
        GST_TIME_ARGS (latency));
    gst_element_post_message (GST_ELEMENT (self),
        gst_message_new_latency (GST_OBJECT (self)));
  }
}

static GstFlowReturn
gst_mask_rcnn_transform_ip (GstBaseTransform *trans, GstBuffer *buffer)
{
  GstMaskRcnn *self = GST_MASK_RCNN (trans);
  gint64 begin = g_get_monotonic_time ();

  gboolean upstream_live = upstream_is_live (self);
  GST_OBJECT_LOCK (self);
  guint interval = self->interval;
  gboolean live = self->mode == GST_MASK_RCNN_MODE_LIVE
      || (self->mode == GST_MASK_RCNN_MODE_AUTO && upstream_live);
  GST_OBJECT_UNLOCK (self);
  guint64 frame_number = self->frame_count++;

  gboolean submitted = FALSE;
  if (self->skip_left > 0) {
    self->skip_left--;
  } else if (!skip_late_frame (self, buffer, upstream_live)) {
    switch (submit_frame (self, buffer, frame_number, !live)) {
      case SUBMIT_OK:
        self->analysed++;
        self->skip_left = interval;
        submitted = TRUE;
        break;
      case SUBMIT_BUSY: /* the next frame will be */
        break;
      case SUBMIT_FAILED:
        return GST_FLOW_ERROR;
      case SUBMIT_FLUSHING:
        return GST_FLOW_FLUSHING;
    }
  }
  g_mutex_lock (&self->lock);
  gboolean failed = self->failed;
  g_mutex_unlock (&self->lock);
  if (failed)
    return GST_FLOW_ERROR;
  attach_results (self, buffer, frame_number);
  if (upstream_live)
    update_latency (self, (g_get_monotonic_time () - begin) * GST_USECOND,
        submitted);
  return GST_FLOW_OK;
}

static void
gst_mask_rcnn_finalize (GObject *object)
{
  GstMaskRcnn *self = GST_MASK_RCNN (object);

  clear_stream_state (self);
  g_mutex_clear (&self->lock);
  g_cond_clear (&self->cond);
  g_free (self->model_path);
  g_free (self->config_path);
  g_free (self->labels_path);
  g_free (self->classes);
  g_free (self->stream_id);
  g_free (self->engine_id);
  g_free (self->applied_classes);
  g_free (self->keep_class);
  G_OBJECT_CLASS (parent_class)->finalize (object);
}
static void
gst_mask_rcnn_class_init (GstMaskRcnnClass *klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS (klass);
  const GParamFlags rw = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS;
  const GParamFlags live = rw | GST_PARAM_MUTABLE_PLAYING;

  gobject_class->set_property = gst_mask_rcnn_set_property;
  gobject_class->dispatch_properties_changed =
      gst_mask_rcnn_dispatch_properties_changed;
  gobject_class->get_property = gst_mask_rcnn_get_property;
  gobject_class->finalize = gst_mask_rcnn_finalize;

  g_object_class_install_property (gobject_class, PROP_MODEL,
      g_param_spec_string ("model", "Model",
          "Weights file: torchvision maskrcnn_resnet50_fpn as .safetensors, "
          "or matterport Keras .h5 such as mask_rcnn_coco.h5.  Set while "
          "playing, the new model loads in the background while the old one "
          "keeps running, then replaces it between frames (a model that "
          "fails to load posts a WARNING and the old one goes on); the same "
          "for config, labels, backend, device-id and precision.  Default: "
          "$GST_MASKRCNN_MODEL, else the installed shapes demo model "
          MRCNN_DEFAULT_MODEL, default_model_path (), live));
  g_object_class_install_property (gobject_class, PROP_CONFIG,
      g_param_spec_string ("config", "Config",
          "Optional sidecar (JSON or KEY = VALUE lines) overriding the "
          "model's constants: matterport Config names for .h5 models (e.g. "
          "IMAGE_MAX_DIM, DETECTION_MIN_CONFIDENCE, CLASS_NAMES), the "
          "metadata keys for .safetensors", NULL, live));
  g_object_class_install_property (gobject_class, PROP_LABELS,
      g_param_spec_string ("labels", "Labels",
          "Optional file of class names, one per line: one per class of "
          "the model, or one per class without the background", NULL,
          live));
  g_object_class_install_property (gobject_class, PROP_BACKEND,
      g_param_spec_enum ("backend", "Backend", "Where the model runs",
          GST_TYPE_MASK_RCNN_BACKEND, DEFAULT_BACKEND, live));
  g_object_class_install_property (gobject_class, PROP_DEVICE_ID,
      g_param_spec_int ("device-id", "Device ID",
          "CUDA device index (CUDA backend)", 0, G_MAXINT, 0, live));
  g_object_class_install_property (gobject_class, PROP_PRECISION,
      g_param_spec_enum ("precision", "Precision",
          "Arithmetic precision of the network", GST_TYPE_MASK_RCNN_PRECISION,
          DEFAULT_PRECISION, live));
  g_object_class_install_property (gobject_class, PROP_SCORE_THRESHOLD,
      g_param_spec_float ("score-threshold", "Score threshold",
          "Minimum detection score (-1: the model's own)", -1, 1,
          DEFAULT_THRESHOLD, live));
  g_object_class_install_property (gobject_class, PROP_NMS_THRESHOLD,
      g_param_spec_float ("nms-threshold", "NMS threshold",
          "Per-class non-maximum suppression IoU threshold (-1: the "
          "model's own)", -1, 1, DEFAULT_THRESHOLD, live));
  g_object_class_install_property (gobject_class, PROP_MAX_DETECTIONS,
      g_param_spec_int ("max-detections", "Max detections",
          "Detections kept per frame (-1: the model's own)", -1, 1000,
          DEFAULT_MAX_DETECTIONS, live));
  g_object_class_install_property (gobject_class, PROP_MASK_THRESHOLD,
      g_param_spec_float ("mask-threshold", "Mask threshold",
          "Probability from which a pixel belongs to a binary mask (-1: the "
          "model's own)", -1, 1, DEFAULT_THRESHOLD, live));
  g_object_class_install_property (gobject_class, PROP_CLASSES,
      g_param_spec_string ("classes", "Classes",
          "Comma-separated class names to keep, e.g. \"person,car\" (empty "
          "keeps all); max-detections then keeps the best of these classes",
          NULL, live));
  g_object_class_install_property (gobject_class, PROP_INTERVAL,
      g_param_spec_uint ("interval", "Interval",
          "Frames skipped after each analysed frame; skipped frames carry "
          "the last results, marked as repeated.  The count restarts at a "
          "new stream, a flush (seek) and a caps change", 0, G_MAXINT,
          DEFAULT_INTERVAL, live));
  g_object_class_install_property (gobject_class, PROP_MODE,
      g_param_spec_enum ("mode", "Mode",
          "every-frame: each frame (but those interval skips) is analysed "
          "before it goes on, so the stream runs at the model's pace (files)"
          "; live: the stream never waits: frames go on at once with the "
          "newest finished results, marked repeated with the frame they "
          "were computed on and their age, while the element's thread "
          "analyses the newest frame it is free for (cameras); auto: live "
          "when the source is live", GST_TYPE_MASK_RCNN_MODE, DEFAULT_MODE,
          live));
  /* GstBaseTransform's qos drops late frames; this one keeps them */
  g_object_class_install_property (gobject_class, PROP_QOS,
      g_param_spec_boolean ("qos", "QoS",
          "Handle QoS events from downstream: a frame that will reach the "
          "sink too late to be shown is not analysed (a QoS message counts "
          "it) but still goes on, with the last results marked repeated, "
          "so the stream catches up; frames are never dropped",
          DEFAULT_QOS, live));
  g_object_class_install_property (gobject_class, PROP_THREADS,
      g_param_spec_int ("threads", "Threads",
          "CPU threads an analysis uses on the CPU backend (0: one per core, "
          "and in live mode one less, which leaves a core to the stream).  "
          "On a shared engine each frame runs with its own element's value "
          "(a lane takes its share of it).  Where other busy threads share "
          "the cores, run with "
          "OMP_WAIT_POLICY=passive, or OpenMP's spinning threads slow the "
          "analysis many times over",
          0, 1024, DEFAULT_THREADS, live));
  g_object_class_install_property (gobject_class, PROP_ENGINE_ID,
      g_param_spec_string ("engine-id", "Engine ID",
          "maskrcnn elements of one process that give the same engine-id "
          "share one loaded model and engine (they must have the same model, "
          "config, labels, backend, device-id, precision, batch-size, "
          "batch-timeout and lanes: else an ERROR), "
          "so an extra stream costs only its own frame buffers; each keeps "
          "its own thresholds, classes, mode and interval.  Their frames run "
          "in batches of up to batch-size, oldest first.  Model settings of "
          "a shared engine change when its elements start again.  Empty: an "
          "engine of the element's own", NULL, rw | GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_BATCH_SIZE,
      g_param_spec_uint ("batch-size", "Batch size",
          "Frames of the streams sharing an engine-id run together as one "
          "batch of up to this many (every sharer must give the same "
          "value).  A batch runs when full, when every sharer has a frame "
          "waiting or running (a lone stream never waits), or at "
          "batch-timeout.  The CPU backend runs a batch's frames on its "
          "lanes (see lanes), each lane one frame after another; a frame's "
          "results are the same in a batch as alone.  The CUDA backend runs "
          "the backbone, FPN and RPN head of a batch's frames of one size at "
          "once, one launch per layer (each frame of the batch size costs a "
          "backbone workspace of GPU memory), and a frame's results are within "
          "rounding of its results alone.  1: each frame runs as it comes.  "
          "Without engine-id the element has one stream and runs its frames "
          "one at a time", 1, MRCNN_MAX_BATCH,
          DEFAULT_BATCH_SIZE, rw | GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_BATCH_TIMEOUT,
      g_param_spec_uint64 ("batch-timeout", "Batch timeout",
          "Longest time a frame waits for the frames of other streams to "
          "fill its batch (batch-size > 1), in ns; none where every element "
          "sharing the engine has a frame waiting or running.  The wait "
          "counts in the "
          "latency the element reports.  Every sharer of an engine-id must "
          "give the same value", 0, 10 * GST_SECOND, DEFAULT_BATCH_TIMEOUT,
          rw | GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_LANES,
      g_param_spec_uint ("lanes", "Lanes",
          "CPU backend with engine-id: how many frames run side by side, "
          "of one batch or of several (each batch takes the lanes free when "
          "it starts: with batch-size 1, up to this many streams' frames "
          "run at once, each as it comes), each lane with a workspace of "
          "its own (the weights are shared) and threads / lanes of the "
          "threads (at least one), also for a lone frame, so that results "
          "do not depend on the frames beside it.  Pays with small models "
          "and many cores.  Every sharer of an engine-id must give the same "
          "value.  An element without engine-id has one lane; so has the "
          "CUDA backend, which runs a batch's backbone at once instead (see "
          "batch-size)", 1, MRCNN_MAX_LANES,
          DEFAULT_LANES, rw | GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_LATENCY,
      g_param_spec_uint64 ("latency", "Latency",
          "Time the element adds to a live pipeline's latency (what it "
          "answers the LATENCY query with): the longest time it has held a "
          "frame lately, plus a quarter; in ns", 0, G_MAXUINT64, 0,
          G_PARAM_READABLE | G_PARAM_STATIC_STRINGS));
  g_object_class_install_property (gobject_class, PROP_SOFT_MASKS,
      g_param_spec_boolean ("soft-masks", "Soft masks",
          "Masks hold probabilities 0..255 instead of 0/255",
          DEFAULT_SOFT_MASKS, live));
  g_object_class_install_property (gobject_class, PROP_ROI_META,
      g_param_spec_boolean ("roi-meta", "Region of interest meta",
          "Also attach a GstVideoRegionOfInterestMeta per detection, with a "
          "\"detection\" structure (x_min, y_min, x_max, y_max normalised, "
          "confidence, label_id, label)", DEFAULT_ROI_META, live));

  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);
  gst_element_class_set_static_metadata (element_class,
      "Mask R-CNN instance segmentation", "Filter/Analyzer/Video",
      "Detects object instances with their masks and attaches them as "
      "metadata", "gst-maskrcnn developers");

  trans_class->start = GST_DEBUG_FUNCPTR (gst_mask_rcnn_start);
  trans_class->stop = GST_DEBUG_FUNCPTR (gst_mask_rcnn_stop);
  trans_class->set_caps = GST_DEBUG_FUNCPTR (gst_mask_rcnn_set_caps);
  trans_class->accept_caps = GST_DEBUG_FUNCPTR (gst_mask_rcnn_accept_caps);
  trans_class->transform_ip = GST_DEBUG_FUNCPTR (gst_mask_rcnn_transform_ip);
  trans_class->sink_event = GST_DEBUG_FUNCPTR (gst_mask_rcnn_sink_event);
  trans_class->src_event = GST_DEBUG_FUNCPTR (gst_mask_rcnn_src_event);
  trans_class->query = GST_DEBUG_FUNCPTR (gst_mask_rcnn_query);
  trans_class->passthrough_on_same_caps = FALSE;
  trans_class->transform_ip_on_passthrough = FALSE;

  gst_type_mark_as_plugin_api (GST_TYPE_MASK_RCNN_BACKEND, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_MASK_RCNN_PRECISION, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_MASK_RCNN_MODE, 0);
}

static void
gst_mask_rcnn_init (GstMaskRcnn *self)
{
  self->backend = DEFAULT_BACKEND;
  self->precision = DEFAULT_PRECISION;
  self->score_threshold = self->nms_threshold = self->mask_threshold =
      DEFAULT_THRESHOLD;
  self->max_detections = DEFAULT_MAX_DETECTIONS;
  self->interval = DEFAULT_INTERVAL;
  self->soft_masks = DEFAULT_SOFT_MASKS;
  self->roi_meta = DEFAULT_ROI_META;
  self->mode = DEFAULT_MODE;
  self->qos = DEFAULT_QOS;
  self->threads = DEFAULT_THREADS;
  self->batch_size = DEFAULT_BATCH_SIZE;
  self->batch_timeout = DEFAULT_BATCH_TIMEOUT;
  self->lanes = DEFAULT_LANES;
  self->earliest_time = GST_CLOCK_TIME_NONE;
  self->model_path = g_strdup (default_model_path ());
  g_mutex_init (&self->lock);
  g_cond_init (&self->cond);
  mrcnn_result_init (&self->latest.result);
  mrcnn_result_init (&self->work_result);
  mrcnn_frame_settings_init (&self->frame_settings);
  gst_base_transform_set_in_place (GST_BASE_TRANSFORM (self), TRUE);
}
