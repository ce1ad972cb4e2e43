/* State-change stress: a live pipeline (videotestsrc ! maskrcnn ! fakesink)
 * taken NULL -> PLAYING -> NULL many times, the model changed between runs
 * (the two safetensors fixtures and the matterport .h5 with its sidecar),
 * and torn down while buffers flow (the live source keeps pushing): once
 * the first detections are out,
 * before the first one, and with the maskrcnnoverlay behind it; three
 * streams on one shared engine stopped in random orders.  Nothing
 * may crash, deadlock or post an ERROR; leaks show under valgrind (suite
 * 'valgrind', 2 cycles on the small model) and LeakSanitizer (the
 * sanitizer build, 9 cycles; 2 of the shared engine).
 * MRCNN_STRESS_ITERATIONS sets the number of cycles (default 50). */
#include <gst/check/gstcheck.h>
#include <stdlib.h>

#include "gstmaskrcnnmeta.h"

typedef struct {
  GMutex lock;
  GCond cond;
  int buffers;
  guint64 last_result; /* count_results: the frame of the latest results */
} Counter;

static GstPadProbeReturn
count_buffer (GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  (void) pad, (void) info;
  Counter *c = data;
  g_mutex_lock (&c->lock);
  c->buffers++;
  g_cond_broadcast (&c->cond);
  g_mutex_unlock (&c->lock);
  return GST_PAD_PROBE_OK;
}

/* Counts the buffers that bring results of a frame not seen before (in
 * live mode every frame carries the newest results, often those of an
 * earlier frame). */
static GstPadProbeReturn
count_results (GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  (void) pad;
  Counter *c = data;
  GstMaskRcnnMeta *meta =
      gst_buffer_get_mask_rcnn_meta (GST_PAD_PROBE_INFO_BUFFER (info));
  g_mutex_lock (&c->lock);
  if (meta && meta->result_frame_number + 1 != c->last_result) {
    c->last_result = meta->result_frame_number + 1;
    c->buffers++;
    g_cond_broadcast (&c->cond);
  }
  g_mutex_unlock (&c->lock);
  return GST_PAD_PROBE_OK;
}

/* Waits until `n` buffers have reached the sink; FALSE after `seconds`. */
static gboolean
wait_buffers (Counter *c, int n, int seconds)
{
  gint64 deadline = g_get_monotonic_time () + seconds * G_TIME_SPAN_SECOND;
  g_mutex_lock (&c->lock);
  gboolean ok = TRUE;
  while (ok && c->buffers < n)
    ok = g_cond_wait_until (&c->cond, &c->lock, deadline);
  ok = c->buffers >= n;
  g_mutex_unlock (&c->lock);
  return ok;
}

static int
iterations (void)
{
  const char *text = g_getenv ("MRCNN_STRESS_ITERATIONS");
  return text ? atoi (text) : 50;
}

/* The model of cycle i: the three fixtures in turn. */
static void
set_model (GstElement *maskrcnn, int i)
{
  switch (i % 3) {
    case 0:
      g_object_set (maskrcnn, "model", g_getenv ("MRCNN_TEST_MODEL"),
          "config", NULL, NULL);
      break;
    case 1:
      g_object_set (maskrcnn, "model", g_getenv ("MRCNN_TEST_MODEL_SMALL"),
          "config", NULL, NULL);
      break;
    default:
      g_object_set (maskrcnn, "model", g_getenv ("MRCNN_TEST_H5"), "config",
          g_getenv ("MRCNN_TEST_H5_CONFIG"), NULL);
      break;
  }
}

/* Fails on any ERROR message the bus holds. */
static void
assert_no_error (GstElement *pipeline)
{
  GstBus *bus = gst_element_get_bus (pipeline);
  GstMessage *msg;
  while ((msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR))) {
    GError *error = NULL;
    gst_message_parse_error (msg, &error, NULL);
    fail ("ERROR from %s: %s", GST_OBJECT_NAME (GST_MESSAGE_SRC (msg)),
        error->message);
  }
  gst_object_unref (bus);
}

static void
run_cycles (const char *description, int wait_for)
{
  GError *error = NULL;
  GstElement *pipeline = gst_parse_launch (description, &error);
  fail_unless (pipeline != NULL, "%s", error ? error->message : "");
  GstElement *maskrcnn = gst_bin_get_by_name (GST_BIN (pipeline), "m");
  GstElement *sink = gst_bin_get_by_name (GST_BIN (pipeline), "sink");
  GstPad *pad = gst_element_get_static_pad (sink, "sink");
  Counter counter = { 0 };
  g_mutex_init (&counter.lock);
  g_cond_init (&counter.cond);
  gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER, count_buffer, &counter,
      NULL);

  int n = iterations ();
  for (int i = 0; i < n; i++) {
    set_model (maskrcnn, i);
    g_mutex_lock (&counter.lock);
    counter.buffers = 0;
    g_mutex_unlock (&counter.lock);
    fail_if (gst_element_set_state (pipeline, GST_STATE_PLAYING)
        == GST_STATE_CHANGE_FAILURE, "cycle %d: PLAYING failed", i);
    /* videotestsrc keeps producing: NULL comes while buffers flow */
    if (wait_for > 0)
      fail_unless (wait_buffers (&counter, wait_for, 600),
          "cycle %d: no buffer within 600 s", i);
    fail_unless (gst_element_set_state (pipeline, GST_STATE_NULL)
        == GST_STATE_CHANGE_SUCCESS, "cycle %d: NULL failed", i);
    assert_no_error (pipeline);
  }

  gst_object_unref (pad);
  gst_object_unref (sink);
  gst_object_unref (maskrcnn);
  gst_object_unref (pipeline);
  g_mutex_clear (&counter.lock);
  g_cond_clear (&counter.cond);
}

#define SOURCE "videotestsrc pattern=ball is-live=true ! " \
  "video/x-raw,format=RGB,width=64,height=48,framerate=30/1 ! "

GST_START_TEST (test_cycles_mid_stream)
{
  run_cycles (SOURCE "maskrcnn name=m ! fakesink name=sink sync=false", 1);
}
GST_END_TEST;

GST_START_TEST (test_cycles_before_first_buffer)
{
  run_cycles (SOURCE "maskrcnn name=m ! fakesink name=sink sync=false", 0);
}
GST_END_TEST;

GST_START_TEST (test_cycles_with_overlay)
{
  run_cycles (SOURCE "maskrcnn name=m ! queue max-size-buffers=2 ! "
      "maskrcnnoverlay ! fakesink name=sink sync=false", 1);
}
GST_END_TEST;

/* Three live streams on one engine-id with two lanes (frames of several
 * streams running at once), batch-size 1 and 2 in turn: started, and
 * stopped in a random order while the others keep flowing, cycle after
 * cycle; each stream left goes on getting new results. */
#define STREAMS 3
GST_START_TEST (test_shared_engine_stops_in_any_order)
{
  GstElement *pipelines[STREAMS];
  Counter counters[STREAMS];
  GRand *rand = g_rand_new_with_seed (11);
  int cycles = MAX (iterations () / 5, 2);
  for (int i = 0; i < cycles; i++) {
    for (int k = 0; k < STREAMS; k++) {
      gchar *description = g_strdup_printf (SOURCE "maskrcnn model=%s "
          "engine-id=stress lanes=2 batch-size=%d ! "
          "fakesink name=sink sync=false", g_getenv ("MRCNN_TEST_MODEL"),
          1 + i % 2);
      GError *error = NULL;
      pipelines[k] = gst_parse_launch (description, &error);
      fail_unless (pipelines[k] != NULL, "%s", error ? error->message : "");
      g_free (description);
      counters[k] = (Counter) { 0 };
      g_mutex_init (&counters[k].lock);
      g_cond_init (&counters[k].cond);
      GstElement *sink = gst_bin_get_by_name (GST_BIN (pipelines[k]), "sink");
      GstPad *pad = gst_element_get_static_pad (sink, "sink");
      gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER, count_results,
          &counters[k], NULL);
      gst_object_unref (pad);
      gst_object_unref (sink);
    }
    int order[STREAMS];
    for (int k = 0; k < STREAMS; k++)
      order[k] = k;
    for (int k = STREAMS - 1; k > 0; k--) {
      int j = g_rand_int_range (rand, 0, k + 1), t = order[k];
      order[k] = order[j];
      order[j] = t;
    }
    for (int k = 0; k < STREAMS; k++)
      fail_if (gst_element_set_state (pipelines[order[k]], GST_STATE_PLAYING)
          == GST_STATE_CHANGE_FAILURE, "cycle %d: PLAYING failed", i);
    for (int k = 0; k < STREAMS; k++)
      fail_unless (wait_buffers (&counters[k], 3, 600),
          "cycle %d: stream %d got no results", i, k);
    for (int k = STREAMS - 1; k > 0; k--) {
      int j = g_rand_int_range (rand, 0, k + 1), t = order[k];
      order[k] = order[j];
      order[j] = t;
    }
    for (int k = 0; k < STREAMS; k++) {
      GstElement *stopping = pipelines[order[k]];
      fail_unless (gst_element_set_state (stopping, GST_STATE_NULL)
          == GST_STATE_CHANGE_SUCCESS, "cycle %d: NULL failed", i);
      assert_no_error (stopping);
      gst_object_unref (stopping);
      /* the others go on */
      for (int m = k + 1; m < STREAMS; m++) {
        Counter *c = &counters[order[m]];
        g_mutex_lock (&c->lock);
        int seen = c->buffers;
        g_mutex_unlock (&c->lock);
        fail_unless (wait_buffers (c, seen + 2, 600),
            "cycle %d: stream %d stopped with stream %d", i, order[m],
            order[k]);
      }
    }
    for (int k = 0; k < STREAMS; k++) {
      g_mutex_clear (&counters[k].lock);
      g_cond_clear (&counters[k].cond);
    }
  }
  g_rand_free (rand);
}
GST_END_TEST;

static Suite *
stress_suite (void)
{
  Suite *s = suite_create ("stress");
  TCase *tc = tcase_create ("state-changes");
  tcase_set_timeout (tc, 1800);
  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_cycles_mid_stream);
  tcase_add_test (tc, test_cycles_before_first_buffer);
  tcase_add_test (tc, test_cycles_with_overlay);
  tcase_add_test (tc, test_shared_engine_stops_in_any_order);
  return s;
}

GST_CHECK_MAIN (stress);
