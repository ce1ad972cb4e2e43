/* mrcnn_engine_detect_batch's contract, on the narrow test model and the
 * synthetic test frame (paths in MRCNN_TEST_MODEL, MRCNN_TEST_IMAGE): each
 * frame of a batch (frames of two sizes, each with its own thresholds and
 * class filter) gives, bit for bit, what it gives alone on an engine set
 * to its settings, run one after another or on lanes side by side, also
 * when several threads call the engine at once; a frame that fails stops
 * the batch there with an error naming it, and the frames before it keep
 * their results.  The same through a backend whose backbone takes several
 * frames at once, made here of CPU backend states. */
#include <gdk-pixbuf/gdk-pixbuf.h>
#include <string.h>
#ifdef __linux__
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "backend.h"
#include "mrcnn.h"

static MrcnnModel *model;
static guint8 *pixels;
static int width, height, stride;

static void
assert_same (const MrcnnResult *a, const MrcnnResult *b)
{
  g_assert_cmpint (a->image_width, ==, b->image_width);
  g_assert_cmpint (a->n_detections, ==, b->n_detections);
  for (int i = 0; i < a->n_detections; i++) {
    const MrcnnDetection *x = &a->detections[i], *y = &b->detections[i];
    g_assert_cmpint (x->label_id, ==, y->label_id);
    g_assert_true (memcmp (x->box, y->box, sizeof x->box) == 0);
    g_assert_true (x->score == y->score);
    g_assert_cmpint (x->mask_width, ==, y->mask_width);
    g_assert_cmpint (x->mask_height, ==, y->mask_height);
    g_assert_true (memcmp (x->mask, y->mask, sizeof (float) * x->mask_width
            * x->mask_height) == 0);
  }
}

/* The frame alone, on an engine of its own set to `settings`, with a
 * lane's threads. */
static void
detect_alone (const MrcnnImage *image, const MrcnnFrameSettings *settings,
    int threads, MrcnnResult *result)
{
  GError *error = NULL;
  MrcnnOptions options;
  mrcnn_options_init (&options);
  options.threads = threads;
  MrcnnEngine *engine = mrcnn_engine_new (model, &options, &error);
  g_assert_no_error (error);
  g_assert_true (mrcnn_engine_set_thresholds (engine,
          settings->score_threshold, settings->nms_threshold,
          settings->max_detections, settings->mask_threshold, &error));
  mrcnn_engine_set_class_filter (engine, settings->keep_class);
  g_assert_true (mrcnn_engine_detect (engine, image, result, &error));
  g_assert_no_error (error);
  mrcnn_engine_free (engine);
}

/* An engine with `lanes` lanes, on two threads: with one lane it has
 * both, with more each has one. */
static MrcnnEngine *
engine_with_lanes (int lanes)
{
  MrcnnOptions options;
  mrcnn_options_init (&options);
  options.lanes = lanes;
  options.threads = 2;
  GError *error = NULL;
  MrcnnEngine *engine = mrcnn_engine_new (model, &options, &error);
  g_assert_no_error (error);
  g_assert_cmpint (mrcnn_engine_get_lanes (engine), ==, MAX (lanes, 1));
  return engine;
}

/* Four frames of two sizes with their own settings; the second and third
 * repeated by a second batch (each lane's plans for both sizes kept). */
static void
test_frames_as_alone (gconstpointer lanes)
{
  int n_classes = mrcnn_model_num_classes (model);
  gboolean *only_first = g_new0 (gboolean, n_classes);
  only_first[1] = TRUE;
  MrcnnImage images[4] = {
    { pixels, width, height, stride },
    { pixels, width * 3 / 4, height * 3 / 4, stride },
    { pixels, width, height, stride },
    { pixels, width * 3 / 4, height * 3 / 4, stride },
  };
  MrcnnFrameSettings settings[4];
  for (int i = 0; i < 4; i++)
    mrcnn_frame_settings_init (&settings[i]);
  settings[1].score_threshold = 0.1f;
  settings[1].max_detections = 3;
  settings[2].keep_class = only_first;
  settings[2].mask_threshold = 0.8f;

  MrcnnResult batch[4], again[2], lone, alone;
  for (int i = 0; i < 4; i++)
    mrcnn_result_init (&batch[i]);
  for (int i = 0; i < 2; i++)
    mrcnn_result_init (&again[i]);
  mrcnn_result_init (&lone);
  mrcnn_result_init (&alone);
  GError *error = NULL;
  MrcnnEngine *engine = engine_with_lanes (GPOINTER_TO_INT (lanes));
  g_assert_cmpint (mrcnn_engine_detect_batch (engine, images, settings, 4,
          batch, &error), ==, 4);
  g_assert_no_error (error);
  g_assert_cmpint (mrcnn_engine_detect_batch (engine, images + 1,
          settings + 1, 2, again, &error), ==, 2);
  g_assert_no_error (error);
  /* the settings took effect: many detections, the best 3, one class */
  g_assert_cmpint (batch[0].n_detections, >, 10);
  g_assert_cmpint (batch[1].n_detections, ==, 3);
  g_assert_cmpint (batch[2].n_detections, >, 0);
  g_assert_cmpint (batch[2].n_detections, <, batch[0].n_detections);
  for (int i = 0; i < batch[2].n_detections; i++)
    g_assert_cmpint (batch[2].detections[i].label_id, ==, 1);
  g_assert_cmpint (batch[3].n_detections, >, 10);
  /* the engine alone on a frame: the same again */
  g_assert_true (mrcnn_engine_detect (engine, &images[0], &lone, &error));
  assert_same (&batch[0], &lone);
  int lane_threads = GPOINTER_TO_INT (lanes) > 1 ? 1 : 2;
  for (int i = 0; i < 4; i++) {
    detect_alone (&images[i], &settings[i], lane_threads, &alone);
    assert_same (&batch[i], &alone);
    if (i == 1 || i == 2)
      assert_same (&again[i - 1], &alone);
  }
  mrcnn_engine_free (engine);
  for (int i = 0; i < 4; i++)
    mrcnn_result_clear (&batch[i]);
  for (int i = 0; i < 2; i++)
    mrcnn_result_clear (&again[i]);
  mrcnn_result_clear (&lone);
  mrcnn_result_clear (&alone);
  g_free (only_first);
}

static void
test_failing_frame (gconstpointer lanes)
{
  MrcnnImage images[3] = {
    { pixels, width, height, stride },
    { pixels, width, height, width }, /* stride below 3 x width */
    { pixels, width, height, stride },
  };
  MrcnnResult results[3];
  for (int i = 0; i < 3; i++)
    mrcnn_result_init (&results[i]);
  GError *error = NULL;
  MrcnnEngine *engine = engine_with_lanes (GPOINTER_TO_INT (lanes));
  g_assert_cmpint (mrcnn_engine_detect_batch (engine, images, NULL, 3,
          results, &error), ==, 1);
  g_assert_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT);
  g_assert_true (g_str_has_prefix (error->message, "frame 1 of 3: "));
  g_clear_error (&error);
  g_assert_cmpint (results[0].n_detections, >, 10);
  /* the frames after it run on their own */
  g_assert_cmpint (mrcnn_engine_detect_batch (engine, images + 2, NULL, 1,
          results + 2, &error), ==, 1);
  assert_same (&results[0], &results[2]);

  /* settings out of range: an error naming the frame, nothing run */
  MrcnnFrameSettings settings[2];
  mrcnn_frame_settings_init (&settings[0]);
  mrcnn_frame_settings_init (&settings[1]);
  settings[1].score_threshold = 2;
  g_assert_cmpint (mrcnn_engine_detect_batch (engine, images, settings, 2,
          results, &error), ==, 1);
  g_assert_true (g_str_has_prefix (error->message, "frame 1 of 2: "));
  g_clear_error (&error);
  mrcnn_engine_free (engine);
  for (int i = 0; i < 3; i++)
    mrcnn_result_clear (&results[i]);
}

/* Frames of one batch asking for their own threads (1 and 2, on a
 * one-lane engine set to 2): each runs with its own, bit for bit as an
 * engine of its own with that many. */
static void
test_frames_own_threads (void)
{
  MrcnnImage images[3] = {
    { pixels, width, height, stride }, { pixels, width, height, stride },
    { pixels, width, height, stride },
  };
  MrcnnFrameSettings settings[3];
  for (int i = 0; i < 3; i++)
    mrcnn_frame_settings_init (&settings[i]);
  settings[0].threads = 1;
  settings[1].threads = 2;
  /* settings[2]: the engine's */
  MrcnnResult batch[3], one, two;
  for (int i = 0; i < 3; i++)
    mrcnn_result_init (&batch[i]);
  mrcnn_result_init (&one);
  mrcnn_result_init (&two);
  MrcnnEngine *engine = engine_with_lanes (1);
  GError *error = NULL;
  g_assert_cmpint (mrcnn_engine_detect_batch (engine, images, settings, 3,
          batch, &error), ==, 3);
  g_assert_no_error (error);
  mrcnn_engine_free (engine);
  MrcnnFrameSettings defaults;
  mrcnn_frame_settings_init (&defaults);
  detect_alone (&images[0], &defaults, 1, &one);
  detect_alone (&images[0], &defaults, 2, &two);
  g_assert_cmpint (one.n_detections, >, 10);
  assert_same (&batch[0], &one);
  assert_same (&batch[1], &two);
  assert_same (&batch[2], &two);
  /* where oneDNN computes a layer differently by thread count, the two
   * references differ and the test tells the counts apart */
  gboolean differ = one.n_detections != two.n_detections;
  for (int i = 0; !differ && i < one.n_detections; i++)
    differ = memcmp (one.detections[i].box, two.detections[i].box,
        sizeof one.detections[i].box) != 0;
  g_test_message ("1 and 2 threads give %s results", differ ? "different"
      : "the same");
  for (int i = 0; i < 3; i++)
    mrcnn_result_clear (&batch[i]);
  mrcnn_result_clear (&one);
  mrcnn_result_clear (&two);
}

/* A caller of test_callers_side_by_side: frames of both sizes through
 * mrcnn_engine_detect and detect_batch, each result kept. */
typedef struct {
  MrcnnEngine *engine;
  MrcnnResult results[6];
} Caller;

static gpointer
call_engine (gpointer data)
{
  Caller *c = data;
  MrcnnImage images[2] = {
    { pixels, width, height, stride },
    { pixels, width * 3 / 4, height * 3 / 4, stride },
  };
  GError *error = NULL;
  for (int round = 0; round < 2; round++) {
    MrcnnResult *r = &c->results[3 * round];
    g_assert_true (mrcnn_engine_detect (c->engine, &images[round], r,
            &error));
    g_assert_no_error (error);
    g_assert_cmpint (mrcnn_engine_detect_batch (c->engine, images, NULL, 2,
            r + 1, &error), ==, 2);
    g_assert_no_error (error);
  }
  return NULL;
}

/* Three threads calling a two-lane engine at once (each call on the lanes
 * free at its start, the third waiting for one): every result bit for bit
 * that of an engine of its own with a lane's thread. */
static void
test_callers_side_by_side (void)
{
  MrcnnEngine *engine = engine_with_lanes (2);
  Caller callers[3];
  GThread *threads[3];
  for (int i = 0; i < 3; i++) {
    callers[i].engine = engine;
    for (int k = 0; k < 6; k++)
      mrcnn_result_init (&callers[i].results[k]);
    threads[i] = g_thread_new ("caller", call_engine, &callers[i]);
  }
  for (int i = 0; i < 3; i++)
    g_thread_join (threads[i]);
  mrcnn_engine_free (engine);

  MrcnnImage images[2] = {
    { pixels, width, height, stride },
    { pixels, width * 3 / 4, height * 3 / 4, stride },
  };
  MrcnnFrameSettings defaults;
  mrcnn_frame_settings_init (&defaults);
  MrcnnResult alone[2];
  for (int k = 0; k < 2; k++) {
    mrcnn_result_init (&alone[k]);
    detect_alone (&images[k], &defaults, 1, &alone[k]);
    g_assert_cmpint (alone[k].n_detections, >, 10);
  }
  /* results: frame 0, then 0 and 1; frame 1, then 0 and 1 */
  static const int frame_of[6] = { 0, 0, 1, 1, 0, 1 };
  for (int i = 0; i < 3; i++)
    for (int k = 0; k < 6; k++) {
      assert_same (&callers[i].results[k], &alone[frame_of[k]]);
      mrcnn_result_clear (&callers[i].results[k]);
    }
  for (int k = 0; k < 2; k++)
    mrcnn_result_clear (&alone[k]);
}

#ifdef __linux__
/* The threads of this process other than the calling one at nice `nice`
 * (field 19 of /proc/self/task/TID/stat). */
static int
other_threads_at_nice (int nice)
{
  int n = 0;
  pid_t self = (pid_t) syscall (SYS_gettid);
  GDir *dir = g_dir_open ("/proc/self/task", 0, NULL);
  g_assert_nonnull (dir);
  const char *name;
  while ((name = g_dir_read_name (dir))) {
    if (atoi (name) == self)
      continue;
    char *path = g_strdup_printf ("/proc/self/task/%s/stat", name), *text;
    if (g_file_get_contents (path, &text, NULL, NULL)) {
      /* after the command name's closing parenthesis: field 3 on */
      char **fields = g_strsplit (strrchr (text, ')') + 2, " ", -1);
      n += g_strv_length (fields) > 16 && atoi (fields[16]) == nice;
      g_strfreev (fields);
      g_free (text);
    }
    g_free (path);
  }
  g_dir_close (dir);
  return n;
}

static gpointer
batch_at_nice_10 (gpointer engine)
{
  g_assert_cmpint (setpriority (PRIO_PROCESS, (id_t) syscall (SYS_gettid),
          10), ==, 0);
  MrcnnImage images[2] = {
    { pixels, width, height, stride }, { pixels, width, height, stride },
  };
  MrcnnResult results[2];
  mrcnn_result_init (&results[0]);
  mrcnn_result_init (&results[1]);
  GError *error = NULL;
  g_assert_cmpint (mrcnn_engine_detect_batch (engine, images, NULL, 2,
          results, &error), ==, 2);
  g_assert_no_error (error);
  /* the other lane's thread (one thread a lane: no OpenMP team) */
  int lowered = other_threads_at_nice (10);
  mrcnn_result_clear (&results[0]);
  mrcnn_result_clear (&results[1]);
  return GINT_TO_POINTER (lowered);
}

/* A caller that lowered its priority (maskrcnn's live analysis) lowers the
 * lanes that run its batch: the engine and its lane made at nice 0, the
 * batch run from a thread at nice 10. */
static void
test_lanes_take_callers_priority (void)
{
  MrcnnEngine *engine = engine_with_lanes (2);
  g_assert_cmpint (other_threads_at_nice (10), ==, 0);
  GThread *caller = g_thread_new ("nice-10", batch_at_nice_10, engine);
  g_assert_cmpint (GPOINTER_TO_INT (g_thread_join (caller)), ==, 1);
  mrcnn_engine_free (engine);
}
#endif

/* A backend whose backbone takes several frames (as the CUDA backend's):
 * one CPU backend state per slot, the weights shared, each slot's frame
 * kept in its own state until the next batch; its batched backbone calls
 * are logged in backbone_calls ("b<n> " each), so that the engine's
 * grouping of a batch (lane_run_grouped) runs, and is checked, on the
 * CPU. */
#define SLOTS 3

typedef struct {
  gpointer slot[SLOTS];
  int selected;
} SlottedState;

static const MrcnnBackend *cpu = &mrcnn_backend_cpu;
static GString *backbone_calls;

static void
slotted_destroy (gpointer state)
{
  SlottedState *s = state;
  for (int i = SLOTS - 1; i >= 0; i--)
    if (s->slot[i])
      cpu->destroy (s->slot[i]);
  g_free (s);
}

static gpointer
slotted_create (const MrcnnModel *m, const MrcnnOptions *options,
    GError **error)
{
  SlottedState *s = g_new0 (SlottedState, 1);
  s->slot[0] = cpu->create (m, options, error);
  for (int i = 1; s->slot[i - 1] && i < SLOTS; i++)
    s->slot[i] = cpu->create_lane (s->slot[0], error);
  if (!s->slot[SLOTS - 1]) {
    slotted_destroy (s);
    return NULL;
  }
  return s;
}

static gpointer
selected (gpointer state)
{
  SlottedState *s = state;
  return s->slot[s->selected];
}

static int
slotted_batch_slots (gpointer state)
{
  (void) state;
  return SLOTS;
}

static gboolean
slotted_preprocess_slot (gpointer state, int slot, const MrcnnImage *image,
    const MrcnnGeometry *geometry, GError **error)
{
  SlottedState *s = state;
  g_assert_cmpint (slot, <, SLOTS);
  return cpu->preprocess (s->slot[slot], image, geometry, error);
}

static gboolean
slotted_backbone_batch (gpointer state, int n, GError **error)
{
  SlottedState *s = state;
  g_assert_cmpint (n, >=, 1);
  g_assert_cmpint (n, <=, SLOTS);
  g_string_append_printf (backbone_calls, "b%d ", n);
  for (int i = 0; i < n; i++)
    if (!cpu->backbone (s->slot[i], error))
      return FALSE;
  return TRUE;
}

static void
slotted_select_slot (gpointer state, int slot)
{
  ((SlottedState *) state)->selected = slot;
}

static gboolean
slotted_preprocess (gpointer state, const MrcnnImage *image,
    const MrcnnGeometry *geometry, GError **error)
{
  slotted_select_slot (state, 0);
  return slotted_preprocess_slot (state, 0, image, geometry, error);
}

static gboolean
slotted_backbone (gpointer state, GError **error)
{
  return cpu->backbone (selected (state), error);
}

static gboolean
slotted_proposals (gpointer state, GError **error)
{
  return cpu->proposals (selected (state), error);
}

static gboolean
slotted_detect (gpointer state, const MrcnnThresholds *thresholds,
    GError **error)
{
  return cpu->detect (selected (state), thresholds, error);
}

static gboolean
slotted_masks (gpointer state, GError **error)
{
  return cpu->masks (selected (state), error);
}

static gboolean
slotted_paste (gpointer state, const MrcnnThresholds *thresholds,
    MrcnnResult *result, GError **error)
{
  return cpu->paste (selected (state), thresholds, result, error);
}

static gboolean
slotted_inspect (gpointer state, const char *name, MrcnnHostTensor *out)
{
  return cpu->inspect (selected (state), name, out);
}

static void
slotted_set_threads (gpointer state, int threads, int lanes)
{
  SlottedState *s = state;
  for (int i = 0; i < SLOTS; i++)
    cpu->set_threads (s->slot[i], threads, lanes);
}

static const MrcnnBackend slotted_backend = {
  .name = "slotted",
  .create = slotted_create,
  .destroy = slotted_destroy,
  .preprocess = slotted_preprocess,
  .backbone = slotted_backbone,
  .proposals = slotted_proposals,
  .detect = slotted_detect,
  .masks = slotted_masks,
  .paste = slotted_paste,
  .batch_slots = slotted_batch_slots,
  .preprocess_slot = slotted_preprocess_slot,
  .backbone_batch = slotted_backbone_batch,
  .select_slot = slotted_select_slot,
  .inspect = slotted_inspect,
  .set_threads = slotted_set_threads,
};

/* Frames of two network input sizes interleaved, with their own settings, run
 * in groups of one size (the first frame not yet run and the next of its
 * size, up to three): each frame's results bit for bit those it gives alone;
 * a lone frame takes the one-frame path; then a frame that fails: the frames
 * before it have theirs, of both sizes.  (A group's backbone runs with its
 * first frame's threads; these frames all take the engine's.) */
static void
test_grouped_frames_as_alone (void)
{
  int n_classes = mrcnn_model_num_classes (model);
  gboolean *only_first = g_new0 (gboolean, n_classes);
  only_first[1] = TRUE;
  /* two network input sizes (a 3/4 frame would resize to the same as the
   * whole), each also shifted, so that no two frames of a group are the
   * same image */
  const MrcnnImage large = { pixels, width, height, stride };
  const MrcnnImage large_shifted = { pixels + (gsize) stride * 16 + 3 * 16,
    width - 16, height - 16, stride };
  const MrcnnImage small = { pixels, width, height / 2, stride };
  const MrcnnImage small_shifted = { pixels + (gsize) stride * (height / 4),
    width, height / 2, stride };
  const MrcnnImage bad = { pixels, width, height, width };
  MrcnnImage images[6] = { large, small, large_shifted, large, small_shifted,
    large_shifted };
  MrcnnFrameSettings settings[6];
  for (int i = 0; i < 6; i++)
    mrcnn_frame_settings_init (&settings[i]);
  settings[2].score_threshold = 0.1f;
  settings[2].max_detections = 3;
  settings[4].keep_class = only_first;

  MrcnnResult results[6], alone;
  for (int i = 0; i < 6; i++)
    mrcnn_result_init (&results[i]);
  mrcnn_result_init (&alone);
  MrcnnOptions options;
  mrcnn_options_init (&options);
  options.threads = 2;
  GError *error = NULL;
  MrcnnEngine *engine = mrcnn_engine_new_with_backend (model, &options,
      &slotted_backend, &error);
  g_assert_no_error (error);
  backbone_calls = g_string_new (NULL);
  g_assert_cmpint (mrcnn_engine_detect_batch (engine, images, settings, 6,
          results, &error), ==, 6);
  g_assert_no_error (error);
  /* frames 0 2 3, then 1 4, then 5 */
  g_assert_cmpstr (backbone_calls->str, ==, "b3 b2 b1 ");
  for (int i = 0; i < 6; i++) {
    detect_alone (&images[i], &settings[i], 2, &alone);
    assert_same (&results[i], &alone);
  }
  g_assert_cmpint (results[0].n_detections, >, 10);
  g_assert_cmpint (results[2].n_detections, ==, 3);
  g_assert_cmpint (results[4].n_detections, <, results[1].n_detections);
  g_assert_true (mrcnn_engine_detect (engine, &small, &results[5], &error));
  assert_same (&results[5], &results[1]);
  g_assert_cmpstr (backbone_calls->str, ==, "b3 b2 b1 ");

  /* frame 3 fails: frames 0-2 (both sizes) keep their results */
  MrcnnImage failing[5] = { large, small, large_shifted, bad, small };
  for (int i = 0; i < 6; i++)
    results[i].n_detections = -1;
  g_string_truncate (backbone_calls, 0);
  g_assert_cmpint (mrcnn_engine_detect_batch (engine, failing, NULL, 5,
          results, &error), ==, 3);
  g_assert_cmpstr (backbone_calls->str, ==, "b2 b1 ");
  g_assert_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT);
  g_assert_true (g_str_has_prefix (error->message, "frame 3 of 5: "));
  g_clear_error (&error);
  for (int i = 0; i < 3; i++) {
    detect_alone (&failing[i], &settings[0], 2, &alone);
    assert_same (&results[i], &alone);
  }
  g_assert_cmpint (results[4].n_detections, ==, -1);
  g_string_free (backbone_calls, TRUE);
  backbone_calls = NULL;
  mrcnn_engine_free (engine);
  for (int i = 0; i < 6; i++)
    mrcnn_result_clear (&results[i]);
  mrcnn_result_clear (&alone);
  g_free (only_first);
}

static void
test_options_out_of_range (void)
{
  MrcnnOptions options;
  mrcnn_options_init (&options);
  options.lanes = MRCNN_MAX_LANES + 1;
  GError *error = NULL;
  g_assert_null (mrcnn_engine_new (model, &options, &error));
  g_assert_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  mrcnn_options_init (&options);
  options.max_batch = MRCNN_MAX_BATCH + 1;
  g_assert_null (mrcnn_engine_new (model, &options, &error));
  g_assert_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT);
  g_assert_nonnull (strstr (error->message, "max batch"));
  g_clear_error (&error);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  const char *model_path = g_getenv ("MRCNN_TEST_MODEL");
  const char *image_path = g_getenv ("MRCNN_TEST_IMAGE");
  if (!model_path || !image_path) {
    g_printerr ("MRCNN_TEST_MODEL and MRCNN_TEST_IMAGE must be set\n");
    return 1;
  }
  GError *error = NULL;
  model = mrcnn_model_load (model_path, &error);
  g_assert_no_error (error);
  GdkPixbuf *pixbuf = gdk_pixbuf_new_from_file (image_path, &error);
  g_assert_no_error (error);
  g_assert_cmpint (gdk_pixbuf_get_n_channels (pixbuf), ==, 3);
  width = gdk_pixbuf_get_width (pixbuf);
  height = gdk_pixbuf_get_height (pixbuf);
  stride = gdk_pixbuf_get_rowstride (pixbuf);
  /* (gdk-pixbuf's last row may be shorter than the stride) */
  pixels = g_malloc0 ((gsize) stride * height);
  memcpy (pixels, gdk_pixbuf_read_pixels (pixbuf),
      gdk_pixbuf_get_byte_length (pixbuf));
  g_object_unref (pixbuf);

  for (int lanes = 1; lanes <= 3; lanes++) {
    char *path = g_strdup_printf ("/batch/lanes-%d/frames-as-alone", lanes);
    g_test_add_data_func (path, GINT_TO_POINTER (lanes),
        test_frames_as_alone);
    g_free (path);
    path = g_strdup_printf ("/batch/lanes-%d/failing-frame", lanes);
    g_test_add_data_func (path, GINT_TO_POINTER (lanes), test_failing_frame);
    g_free (path);
  }
  g_test_add_func ("/batch/options-out-of-range", test_options_out_of_range);
  g_test_add_func ("/batch/grouped/frames-as-alone",
      test_grouped_frames_as_alone);
  g_test_add_func ("/batch/lanes-2/callers-side-by-side",
      test_callers_side_by_side);
  g_test_add_func ("/batch/lanes-1/frames-own-threads",
      test_frames_own_threads);
#ifdef __linux__
  g_test_add_func ("/batch/lanes-take-callers-priority",
      test_lanes_take_callers_priority);
#endif
  int rc = g_test_run ();
  g_free (pixels);
  mrcnn_model_free (model);
  return rc;
}
