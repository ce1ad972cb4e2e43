/* GstHarness tests of the maskrcnn element, on the calibrated narrow test
 * model (MRCNN_TEST_MODEL) and the synthetic 640x480 frame
 * (MRCNN_TEST_IMAGE) in which it finds a few dozen instances. */
#include <gdk-pixbuf/gdk-pixbuf.h>
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/video/video.h>
#include <glib/gstdio.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gstmaskrcnnmeta.h"
#include "mrcnn.h"

#define WIDTH 640
#define HEIGHT 480
#define RGB_CAPS "video/x-raw,format=RGB,width=640,height=480,framerate=30/1"

static const char *const formats[] = { "RGB", "BGR", "RGBx", "BGRx", "xRGB",
  "xBGR", "RGBA", "BGRA", "ARGB", "ABGR", "NV12", "I420",
};

static const char *
model_path (void)
{
  const char *path = g_getenv ("MRCNN_TEST_MODEL");
  fail_unless (path != NULL, "MRCNN_TEST_MODEL is not set");
  return path;
}

/* The test frame as a tightly packed RGB buffer. */
static GstBuffer *
test_frame (void)
{
  GError *error = NULL;
  GdkPixbuf *pixbuf = gdk_pixbuf_new_from_file (g_getenv ("MRCNN_TEST_IMAGE"),
      &error);
  fail_unless (pixbuf != NULL, "cannot read the test image: %s",
      error ? error->message : "MRCNN_TEST_IMAGE is not set");
  fail_unless_equals_int (gdk_pixbuf_get_width (pixbuf), WIDTH);
  fail_unless_equals_int (gdk_pixbuf_get_n_channels (pixbuf), 3);
  GstBuffer *buffer = gst_buffer_new_allocate (NULL, WIDTH * HEIGHT * 3, NULL);
  GstMapInfo map;
  gst_buffer_map (buffer, &map, GST_MAP_WRITE);
  for (int y = 0; y < HEIGHT; y++)
    memcpy (map.data + y * WIDTH * 3, gdk_pixbuf_read_pixels (pixbuf)
        + y * gdk_pixbuf_get_rowstride (pixbuf), WIDTH * 3);
  gst_buffer_unmap (buffer, &map);
  g_object_unref (pixbuf);
  return buffer;
}

static GstBuffer *
uniform_frame (guint8 value)
{
  GstBuffer *buffer = gst_buffer_new_allocate (NULL, WIDTH * HEIGHT * 3, NULL);
  gst_buffer_memset (buffer, 0, value, WIDTH * HEIGHT * 3);
  return buffer;
}

/* A harness around `description` (maskrcnn with extra elements or
 * properties), fed RGB 640x480. */
static GstHarness *
harness_new (const char *description)
{
  GstHarness *h = gst_harness_new_parse (description);
  gst_harness_set_src_caps_str (h, RGB_CAPS);
  return h;
}

static GstBuffer *
process (GstHarness *h, GstBuffer *in)
{
  fail_unless_equals_int (gst_harness_push (h, in), GST_FLOW_OK);
  GstBuffer *out = gst_harness_pull (h);
  fail_unless (out != NULL);
  return out;
}

static GstMaskRcnnMeta *
meta_of (GstBuffer *buffer)
{
  GstMaskRcnnMeta *meta = gst_buffer_get_mask_rcnn_meta (buffer);
  fail_unless (meta != NULL, "buffer has no GstMaskRcnnMeta");
  return meta;
}

static double
box_iou (const GstMaskRcnnDetection *a, const GstMaskRcnnDetection *b)
{
  double ix = MIN (a->x + a->width, b->x + b->width) - MAX (a->x, b->x);
  double iy = MIN (a->y + a->height, b->y + b->height) - MAX (a->y, b->y);
  if (ix <= 0 || iy <= 0)
    return 0;
  double inter = ix * iy;
  return inter / (a->width * a->height + b->width * b->height - inter);
}

/* How many of `ref`'s detections have one of the same class in `other`
 * with box IoU >= min_iou. */
static guint
matched (const GstMaskRcnnMeta *ref, const GstMaskRcnnMeta *other,
    double min_iou)
{
  guint n = 0;
  for (guint i = 0; i < ref->n_detections; i++)
    for (guint j = 0; j < other->n_detections; j++)
      if (ref->detections[i].class_id == other->detections[j].class_id
          && box_iou (&ref->detections[i], &other->detections[j]) >= min_iou) {
        n++;
        break;
      }
  return n;
}

static void
check_detection_is_sane (const GstMaskRcnnMeta *meta,
    const GstMaskRcnnDetection *d)
{
  fail_unless (d->class_id > 0);
  fail_unless (d->class_name && *d->class_name);
  fail_unless (d->score > 0 && d->score <= 1);
  fail_unless (d->x >= 0 && d->y >= 0 && d->width > 0 && d->height > 0);
  fail_unless (d->x + d->width <= meta->frame_width + 0.01);
  fail_unless (d->y + d->height <= meta->frame_height + 0.01);
  fail_unless (d->mask_x >= 0 && d->mask_y >= 0);
  fail_unless (d->mask_x + d->mask_width <= meta->frame_width);
  fail_unless (d->mask_y + d->mask_height <= meta->frame_height);
  fail_unless (d->mask != NULL);
  gsize on = 0, size = (gsize) d->mask_width * d->mask_height;
  for (gsize p = 0; p < size; p++) {
    fail_unless (d->mask[p] == 0 || d->mask[p] == 255);
    on += d->mask[p] != 0;
  }
  fail_unless (on > 0, "empty mask");
}

/* The reference run: RGB in, all classes. */
static GstBuffer *
reference_output (void)
{
  gchar *desc = g_strdup_printf ("maskrcnn mode=every-frame model=%s", model_path ());
  GstHarness *h = harness_new (desc);
  GstBuffer *out = process (h, test_frame ());
  gst_harness_teardown (h);
  g_free (desc);
  return out;
}

GST_START_TEST (test_rgb_detections)
{
  GstBuffer *in = test_frame ();
  GstBuffer *out = reference_output ();
  GstMaskRcnnMeta *meta = meta_of (out);
  fail_unless_equals_int (meta->frame_width, WIDTH);
  fail_unless_equals_int (meta->frame_height, HEIGHT);
  fail_if (meta->repeated);
  fail_unless (GST_CLOCK_TIME_IS_VALID (meta->inference_time));
  fail_unless (meta->n_detections >= 10, "only %u detections",
      meta->n_detections);
  for (guint i = 0; i < meta->n_detections; i++) {
    check_detection_is_sane (meta, &meta->detections[i]);
    if (i > 0)
      fail_unless (meta->detections[i].score <= meta->detections[i - 1].score);
  }

  /* pixels pass through untouched */
  GstMapInfo a, b;
  gst_buffer_map (in, &a, GST_MAP_READ);
  gst_buffer_map (out, &b, GST_MAP_READ);
  fail_unless_equals_int (a.size, b.size);
  fail_unless (memcmp (a.data, b.data, a.size) == 0);
  gst_buffer_unmap (in, &a);
  gst_buffer_unmap (out, &b);

  /* one region-of-interest meta per detection, DL Streamer's fields */
  gpointer state = NULL;
  GstMeta *m;
  guint n_roi = 0;
  while ((m = gst_buffer_iterate_meta_filtered (out, &state,
              GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE))) {
    GstVideoRegionOfInterestMeta *roi = (GstVideoRegionOfInterestMeta *) m;
    const GstMaskRcnnDetection *d = &meta->detections[n_roi];
    fail_unless_equals_string (g_quark_to_string (roi->roi_type),
        d->class_name);
    GstStructure *s = gst_video_region_of_interest_meta_get_param (roi,
        "detection");
    fail_unless (s != NULL);
    double x_min, y_min, x_max, y_max, confidence;
    int label_id;
    fail_unless (gst_structure_get (s, "x_min", G_TYPE_DOUBLE, &x_min,
            "y_min", G_TYPE_DOUBLE, &y_min, "x_max", G_TYPE_DOUBLE, &x_max,
            "y_max", G_TYPE_DOUBLE, &y_max, "confidence", G_TYPE_DOUBLE,
            &confidence, "label_id", G_TYPE_INT, &label_id, NULL));
    fail_unless_equals_string (gst_structure_get_string (s, "label"),
        d->class_name);
    fail_unless_equals_string (gst_structure_get_string (s, "model"),
        meta->model_name);
    fail_unless (fabs (x_min - d->x / WIDTH) < 1e-6);
    fail_unless (fabs (y_max - (d->y + d->height) / HEIGHT) < 1e-6);
    fail_unless (fabs (confidence - d->score) < 1e-6);
    fail_unless_equals_int (label_id, d->class_id);
    fail_unless (x_min < x_max && y_min < y_max && x_max <= 1 && y_max <= 1);
    n_roi++;
  }
  fail_unless_equals_int (n_roi, meta->n_detections);
  gst_buffer_unref (in);
  gst_buffer_unref (out);
}
GST_END_TEST;

static GstBuffer *
run_pipeline (const char *format, const char *tail)
{
  gchar *desc = g_strdup_printf ("videoconvert ! capsfilter "
      "caps=video/x-raw,format=%s ! %s maskrcnn mode=every-frame model=%s", format, tail,
      model_path ());
  GstHarness *h = harness_new (desc);
  GstBuffer *out = process (h, test_frame ());
  gst_harness_teardown (h);
  g_free (desc);
  return out;
}

/* Every accepted format negotiates, and the element sees what the RGB
 * run sees: the same pixels for the RGB layouts; for 4:2:0 YUV, the
 * pixels videoconvert makes of it, so the same detections as a run on
 * videoconvert's RGB. */
GST_START_TEST (test_all_formats)
{
  GstBuffer *rgb_buffer = reference_output ();
  for (gsize f = 0; f < G_N_ELEMENTS (formats); f++) {
    gboolean yuv = g_str_equal (formats[f], "NV12")
        || g_str_equal (formats[f], "I420");
    GstBuffer *ref_buffer = yuv ? run_pipeline (formats[f], "videoconvert ! "
        "capsfilter caps=video/x-raw,format=RGB !")
        : gst_buffer_ref (rgb_buffer);
    GstBuffer *out = run_pipeline (formats[f], "");
    GstMaskRcnnMeta *ref = meta_of (ref_buffer), *meta = meta_of (out);
    guint n = matched (ref, meta, 0.99);
    GST_INFO ("%s: %u detections, %u of %u reference ones matched",
        formats[f], meta->n_detections, n, ref->n_detections);
    fail_unless (ref->n_detections >= 10);
    fail_unless (n == ref->n_detections
        && meta->n_detections == ref->n_detections,
        "%s: %u of %u matched (%u found)", formats[f], n, ref->n_detections,
        meta->n_detections);
    gst_buffer_unref (out);
    gst_buffer_unref (ref_buffer);
  }
  gst_buffer_unref (rgb_buffer);
}
GST_END_TEST;

GST_START_TEST (test_odd_sizes)
{
  static const int sizes[][2] = { {16, 16}, {17, 33}, {641, 359}, {8192, 16} };
  for (gsize s = 0; s < G_N_ELEMENTS (sizes); s++)
    for (int yuv = 0; yuv < 2; yuv++) {
      gchar *desc = g_strdup_printf ("maskrcnn mode=every-frame model=%s", model_path ());
      GstHarness *h = gst_harness_new_parse (desc);
      gchar *caps = g_strdup_printf ("video/x-raw,format=%s,width=%d,"
          "height=%d,framerate=30/1", yuv ? "I420" : "RGB", sizes[s][0],
          sizes[s][1]);
      gst_harness_set_src_caps_str (h, caps);
      GstVideoInfo info;
      GstCaps *c = gst_caps_from_string (caps);
      gst_video_info_from_caps (&info, c);
      gst_caps_unref (c);
      GstBuffer *in = gst_buffer_new_allocate (NULL, info.size, NULL);
      gst_buffer_memset (in, 0, 90, info.size);
      GstBuffer *out = process (h, in);
      GstMaskRcnnMeta *meta = meta_of (out);
      fail_unless_equals_int (meta->frame_width, sizes[s][0]);
      fail_unless_equals_int (meta->frame_height, sizes[s][1]);
      for (guint i = 0; i < meta->n_detections; i++) {
        const GstMaskRcnnDetection *d = &meta->detections[i];
        fail_unless (d->mask_x + d->mask_width <= meta->frame_width);
        fail_unless (d->mask_y + d->mask_height <= meta->frame_height);
      }
      gst_buffer_unref (out);
      gst_harness_teardown (h);
      g_free (caps);
      g_free (desc);
    }
}
GST_END_TEST;

GST_START_TEST (test_zero_detections_have_meta)
{
  gchar *desc = g_strdup_printf ("maskrcnn mode=every-frame model=%s score-threshold=1",
      model_path ());
  GstHarness *h = harness_new (desc);
  GstBuffer *out = process (h, test_frame ());
  GstMaskRcnnMeta *meta = meta_of (out);
  fail_unless_equals_int (meta->n_detections, 0);
  fail_if (meta->repeated);
  fail_unless (gst_buffer_get_meta (out,
          GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE) == NULL);
  gst_buffer_unref (out);
  gst_harness_teardown (h);
  g_free (desc);
}
GST_END_TEST;

static gboolean
same_detections (const GstMaskRcnnMeta *a, const GstMaskRcnnMeta *b)
{
  if (a->n_detections != b->n_detections)
    return FALSE;
  for (guint i = 0; i < a->n_detections; i++) {
    const GstMaskRcnnDetection *x = &a->detections[i], *y = &b->detections[i];
    if (x->class_id != y->class_id || x->score != y->score || x->x != y->x
        || x->mask_width != y->mask_width || x->mask_height != y->mask_height
        || memcmp (x->mask, y->mask, (gsize) x->mask_width * x->mask_height))
      return FALSE;
  }
  return TRUE;
}

/* How many of a frame's detections are of class `name`. */
static guint
count_class (const GstMaskRcnnMeta *meta, const char *name)
{
  guint n = 0;
  for (guint i = 0; i < meta->n_detections; i++)
    n += g_str_equal (meta->detections[i].class_name, name);
  return n;
}

/* interval=2: frames 0 and 3 analysed, 1, 2, 4 and 5 carry their results.
 * The frames alternate between the test frame and a grey one, so carried
 * results are told apart from fresh ones. */
GST_START_TEST (test_interval)
{
  gchar *desc = g_strdup_printf ("maskrcnn mode=every-frame model=%s interval=2",
      model_path ());
  GstHarness *h = harness_new (desc);
  GstBuffer *out[6];
  for (int i = 0; i < 6; i++)
    out[i] = process (h, i % 2 ? uniform_frame (128) : test_frame ());
  GstMaskRcnnMeta *m[6];
  for (int i = 0; i < 6; i++)
    m[i] = meta_of (out[i]);
  fail_unless (m[0]->n_detections >= 10);
  fail_if (m[0]->repeated);
  fail_unless (m[1]->repeated && m[2]->repeated);
  fail_if (m[3]->repeated);
  fail_unless (m[4]->repeated && m[5]->repeated);
  fail_unless (same_detections (m[0], m[1]) && same_detections (m[0], m[2]));
  fail_unless (same_detections (m[3], m[4]) && same_detections (m[3], m[5]));
  /* frame 3 is grey: its own analysis, not frame 0's */
  fail_if (same_detections (m[0], m[3]));
  for (int i = 0; i < 6; i++)
    gst_buffer_unref (out[i]);
  gst_harness_teardown (h);
  g_free (desc);
}
GST_END_TEST;

GST_START_TEST (test_classes_filter)
{
  GstBuffer *ref_buffer = reference_output ();
  GstMaskRcnnMeta *ref = meta_of (ref_buffer);
  guint boxes = count_class (ref, "box"), discs = count_class (ref, "disc");
  fail_unless (boxes > 0 && discs > 0 && boxes + discs < ref->n_detections,
      "the test frame should show boxes, discs and other classes");

  gchar *desc = g_strdup_printf ("maskrcnn mode=every-frame model=%s classes=\"box\"",
      model_path ());
  GstHarness *h = harness_new (desc);
  GstBuffer *out = process (h, test_frame ());
  GstMaskRcnnMeta *meta = meta_of (out);
  fail_unless_equals_int (meta->n_detections, boxes);
  for (guint i = 0; i < meta->n_detections; i++)
    fail_unless_equals_string (meta->detections[i].class_name, "box");
  gst_buffer_unref (out);

  /* changed while playing: applies from the next frame */
  GstElement *e = gst_harness_find_element (h, "maskrcnn");
  g_object_set (e, "classes", " disc , box", NULL);
  out = process (h, test_frame ());
  fail_unless_equals_int (meta_of (out)->n_detections, boxes + discs);
  gst_buffer_unref (out);
  g_object_set (e, "classes", "", NULL);
  gst_object_unref (e);
  out = process (h, test_frame ());
  fail_unless_equals_int (meta_of (out)->n_detections, ref->n_detections);
  gst_buffer_unref (out);

  gst_harness_teardown (h);
  gst_buffer_unref (ref_buffer);
  g_free (desc);
}
GST_END_TEST;

GST_START_TEST (test_thresholds_live)
{
  gchar *desc = g_strdup_printf ("maskrcnn mode=every-frame model=%s",
      model_path ());
  GstHarness *h = harness_new (desc);
  GstBuffer *first = process (h, test_frame ());
  GstElement *e = gst_harness_find_element (h, "maskrcnn");
  g_object_set (e, "score-threshold", 0.5f, "max-detections", 5, NULL);
  GstBuffer *second = process (h, test_frame ());
  GstMaskRcnnMeta *a = meta_of (first), *b = meta_of (second);
  guint above = 0;
  for (guint i = 0; i < a->n_detections; i++)
    above += a->detections[i].score > 0.5f;
  fail_unless (above > 5);
  fail_unless_equals_int (b->n_detections, 5);
  for (guint i = 0; i < b->n_detections; i++)
    fail_unless (b->detections[i].score > 0.5f);

  g_object_set (e, "soft-masks", TRUE, NULL);
  GstBuffer *third = process (h, test_frame ());
  GstMaskRcnnMeta *c = meta_of (third);
  fail_unless (c->soft_masks);
  const GstMaskRcnnDetection *d = &c->detections[0];
  gboolean graded = FALSE;
  for (gsize p = 0; p < (gsize) d->mask_width * d->mask_height; p++)
    graded |= d->mask[p] > 0 && d->mask[p] < 255;
  fail_unless (graded, "soft mask has no intermediate values");
  gst_object_unref (e);
  gst_buffer_unref (first);
  gst_buffer_unref (second);
  gst_buffer_unref (third);
  gst_harness_teardown (h);
  g_free (desc);
}
GST_END_TEST;

GST_START_TEST (test_labels_file)
{
  gchar *path = NULL;
  int fd = g_file_open_tmp ("labels-XXXXXX.txt", &path, NULL);
  const char *text = "round thing\nsquare thing\npointy thing\nlong thing\n";
  fail_unless (write (fd, text, strlen (text)) == (gssize) strlen (text));
  close (fd);
  GstBuffer *ref_buffer = reference_output ();
  gchar *desc = g_strdup_printf ("maskrcnn mode=every-frame model=%s labels=%s "
      "classes=\"square thing\"", model_path (), path);
  GstHarness *h = harness_new (desc);
  GstBuffer *out = process (h, test_frame ());
  GstMaskRcnnMeta *ref = meta_of (ref_buffer), *meta = meta_of (out);
  fail_unless_equals_int (meta->n_detections, count_class (ref, "box"));
  for (guint i = 0; i < meta->n_detections; i++)
    fail_unless_equals_string (meta->detections[i].class_name,
        "square thing");
  gst_buffer_unref (out);
  gst_buffer_unref (ref_buffer);
  gst_harness_teardown (h);
  g_unlink (path);
  g_free (path);
  g_free (desc);
}
GST_END_TEST;

GST_START_TEST (test_meta_survives_copy)
{
  GstBuffer *out = reference_output ();
  GstBuffer *copy = gst_buffer_copy (out);
  GstMaskRcnnMeta *a = meta_of (out), *b = meta_of (copy);
  fail_unless (a != b);
  fail_unless (same_detections (a, b));
  fail_unless (a->detections[0].mask != b->detections[0].mask);
  fail_unless (a->detections[0].class_name != b->detections[0].class_name);
  /* the copy stays valid once the original is gone */
  guint n = a->n_detections;
  gst_buffer_unref (out);
  fail_unless_equals_int (b->n_detections, n);
  check_detection_is_sane (b, &b->detections[n - 1]);
  gst_buffer_unref (copy);
}
GST_END_TEST;

/* videoscale halves the frame: boxes and masks follow. */
GST_START_TEST (test_meta_scaled)
{
  GstBuffer *ref_buffer = reference_output ();
  gchar *desc = g_strdup_printf ("maskrcnn mode=every-frame model=%s ! videoscale ! "
      "capsfilter caps=video/x-raw,width=320,height=240", model_path ());
  GstHarness *h = harness_new (desc);
  GstBuffer *out = process (h, test_frame ());
  GstMaskRcnnMeta *ref = meta_of (ref_buffer), *meta = meta_of (out);
  fail_unless_equals_int (meta->frame_width, 320);
  fail_unless_equals_int (meta->frame_height, 240);
  fail_unless_equals_int (meta->n_detections, ref->n_detections);
  for (guint i = 0; i < meta->n_detections; i++) {
    const GstMaskRcnnDetection *a = &ref->detections[i];
    const GstMaskRcnnDetection *b = &meta->detections[i];
    fail_unless (fabsf (b->x - a->x / 2) < 1e-3 && fabsf (b->width - a->width
            / 2) < 1e-3);
    fail_unless (abs ((int) b->mask_width * 2 - (int) a->mask_width) <= 2);
    /* the mask's share of its rectangle is kept */
    gsize on_a = 0, on_b = 0;
    for (gsize p = 0; p < (gsize) a->mask_width * a->mask_height; p++)
      on_a += a->mask[p] != 0;
    for (gsize p = 0; p < (gsize) b->mask_width * b->mask_height; p++)
      on_b += b->mask[p] != 0;
    fail_unless (fabs (4.0 * on_b - on_a) <= 0.1 * on_a + 2 * (a->mask_width
            + a->mask_height), "mask %u: %zu px scaled to %zu", i, on_a,
        on_b);
  }
  gst_buffer_unref (out);
  gst_buffer_unref (ref_buffer);
  gst_harness_teardown (h);
  g_free (desc);
}
GST_END_TEST;

/* Chained maskrcnn elements add a meta each: walked in their order, picked
 * by model name, the order kept by a copy. */
GST_START_TEST (test_meta_of_chained_models)
{
  static const char *const models[] = { "people.safetensors",
    "cars.h5", "people.safetensors"
  };
  GstBuffer *buffer = gst_buffer_new_allocate (NULL, 16, NULL);
  gpointer state = NULL;
  fail_unless (gst_buffer_iterate_mask_rcnn_meta (buffer, &state) == NULL);
  fail_unless (gst_buffer_get_mask_rcnn_metas (buffer) == NULL);
  fail_unless (gst_buffer_get_mask_rcnn_meta_for_model (buffer,
          models[0]) == NULL);
  GstMaskRcnnMeta *added[G_N_ELEMENTS (models)];
  for (gsize i = 0; i < G_N_ELEMENTS (models); i++) {
    added[i] = gst_buffer_add_mask_rcnn_meta (buffer, 64, 48);
    gst_mask_rcnn_meta_set_source (added[i], "camera", models[i]);
    for (gsize k = 0; k <= i; k++)
      gst_mask_rcnn_meta_add_detection (added[i], 1, "thing", 0.5f, 1, 2, 3,
          4, 0, 0, 0, 0, NULL);
    /* a meta of another API between them is skipped */
    if (i == 0)
      gst_buffer_add_video_region_of_interest_meta (buffer, "thing", 1, 2, 3,
          4);
  }

  GstBuffer *copy = gst_buffer_copy (buffer);
  GstBuffer *buffers[] = { buffer, copy };
  for (gsize b = 0; b < G_N_ELEMENTS (buffers); b++) {
    GstMaskRcnnMeta *meta;
    guint n = 0;
    state = NULL;
    while ((meta = gst_buffer_iterate_mask_rcnn_meta (buffers[b], &state))) {
      fail_unless (n < G_N_ELEMENTS (models));
      fail_unless_equals_string (meta->model_name, models[n]);
      fail_unless_equals_int (meta->n_detections, n + 1);
      fail_unless (b == 1 || meta == added[n]);
      n++;
    }
    fail_unless_equals_int (n, G_N_ELEMENTS (models));
    GList *metas = gst_buffer_get_mask_rcnn_metas (buffers[b]);
    fail_unless_equals_int (g_list_length (metas), G_N_ELEMENTS (models));
    n = 0;
    for (GList *l = metas; l; l = l->next, n++)
      fail_unless_equals_int (((GstMaskRcnnMeta *) l->data)->n_detections,
          n + 1);
    /* the first of a name; the first meta of all for the plain getter */
    fail_unless (gst_buffer_get_mask_rcnn_meta_for_model (buffers[b],
            models[0]) == metas->data);
    fail_unless (gst_buffer_get_mask_rcnn_meta_for_model (buffers[b],
            models[1]) == metas->next->data);
    fail_unless (gst_buffer_get_mask_rcnn_meta_for_model (buffers[b],
            "people") == NULL);
    fail_unless (gst_buffer_get_mask_rcnn_meta (buffers[b]) == metas->data);
    g_list_free (metas);
  }
  gst_buffer_unref (copy);
  gst_buffer_unref (buffer);
}
GST_END_TEST;

/* Geometry the meta cannot follow (a rotation, a crop) drops it rather
 * than leave it wrong. */
GST_START_TEST (test_meta_dropped_when_geometry_changes)
{
  static const char *const tails[] = { "videoflip video-direction=90r",
    "videocrop left=10 top=20"
  };
  for (gsize t = 0; t < G_N_ELEMENTS (tails); t++) {
    gchar *desc = g_strdup_printf ("maskrcnn mode=every-frame model=%s ! %s", model_path (),
        tails[t]);
    GstHarness *h = harness_new (desc);
    GstBuffer *out = process (h, test_frame ());
    fail_unless (gst_buffer_get_mask_rcnn_meta (out) == NULL,
        "%s kept the meta", tails[t]);
    gst_buffer_unref (out);
    gst_harness_teardown (h);
    g_free (desc);
  }
}
GST_END_TEST;

/* matterport's Keras weights with a sidecar: class names and input size
 * come from it. */
GST_START_TEST (test_matterport_model)
{
  gchar *desc = g_strdup_printf ("videoconvert ! capsfilter "
      "caps=video/x-raw,format=NV12 ! maskrcnn mode=every-frame model=%s config=%s",
      g_getenv ("MRCNN_TEST_H5"), g_getenv ("MRCNN_TEST_H5_CONFIG"));
  GstHarness *h = harness_new (desc);
  GstBuffer *out = process (h, test_frame ());
  GstMaskRcnnMeta *meta = meta_of (out);
  fail_unless (meta->n_detections >= 3, "%u detections", meta->n_detections);
  static const char *const names[] = { "disc", "box", "wedge", "stripe" };
  for (guint i = 0; i < meta->n_detections; i++) {
    const GstMaskRcnnDetection *d = &meta->detections[i];
    check_detection_is_sane (meta, d);
    fail_unless (d->class_id >= 1 && d->class_id <= 4);
    fail_unless_equals_string (d->class_name, names[d->class_id - 1]);
    /* matterport's boxes are whole pixels, the mask exactly the box */
    fail_unless (d->x == floorf (d->x) && d->width == floorf (d->width));
    fail_unless_equals_int (d->mask_x, (int) d->x);
    fail_unless_equals_int (d->mask_width, (guint) d->width);
    fail_unless (d->score >= 0.7f);
  }
  gst_buffer_unref (out);
  gst_harness_teardown (h);
  g_free (desc);
}
GST_END_TEST;

/* The ERROR message a pipeline posts when it fails to start or run. */
static gchar *
pipeline_error (const gchar *description)
{
  GError *error = NULL;
  GstElement *pipeline = gst_parse_launch (description, &error);
  fail_unless (pipeline != NULL, "%s", error ? error->message : "");
  gst_element_set_state (pipeline, GST_STATE_PLAYING);
  GstBus *bus = gst_element_get_bus (pipeline);
  GstMessage *msg = gst_bus_timed_pop_filtered (bus, 60 * GST_SECOND,
      GST_MESSAGE_ERROR | GST_MESSAGE_EOS);
  gchar *text = NULL;
  if (msg && GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR) {
    gst_message_parse_error (msg, &error, NULL);
    text = g_strdup (error->message);
    g_error_free (error);
  }
  if (msg)
    gst_message_unref (msg);
  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_object_unref (bus);
  gst_object_unref (pipeline);
  return text;
}

#define SOURCE "videotestsrc num-buffers=2 ! video/x-raw,width=64,height=48 ! "

GST_START_TEST (test_error_no_model)
{
  gchar *text = pipeline_error (SOURCE "maskrcnn ! fakesink");
  fail_unless (text && strstr (text, "No model given"), "%s", text);
  g_free (text);
}
GST_END_TEST;

GST_START_TEST (test_error_missing_model)
{
  gchar *text = pipeline_error (SOURCE
      "maskrcnn mode=every-frame model=/nonexistent/model.safetensors ! fakesink");
  fail_unless (text && strstr (text, "/nonexistent/model.safetensors")
      && strstr (text, "No such file"), "%s", text);
  g_free (text);
}
GST_END_TEST;

GST_START_TEST (test_error_corrupt_model)
{
  gchar *path = NULL;
  int fd = g_file_open_tmp ("corrupt-XXXXXX.safetensors", &path, NULL);
  const char junk[] = "this is not a weights file at all, just some text";
  fail_unless (write (fd, junk, sizeof junk) == sizeof junk);
  close (fd);
  gchar *desc = g_strdup_printf (SOURCE "maskrcnn mode=every-frame model=%s ! fakesink", path);
  gchar *text = pipeline_error (desc);
  fail_unless (text && strstr (text, path)
      && strstr (text, "Could not load the Mask R-CNN model"), "%s", text);
  g_unlink (path);
  g_free (path);
  g_free (desc);
  g_free (text);
}
GST_END_TEST;

GST_START_TEST (test_error_bad_config)
{
  gchar *path = NULL;
  int fd = g_file_open_tmp ("sidecar-XXXXXX.cfg", &path, NULL);
  const char text[] = "IMAGE_MAX_DIM = 256\nDETECTION_MIN_CONFIDENSE = 0.9\n";
  fail_unless (write (fd, text, strlen (text)) == (gssize) strlen (text));
  close (fd);
  gchar *desc = g_strdup_printf (SOURCE "maskrcnn mode=every-frame model=%s config=%s ! "
      "fakesink", g_getenv ("MRCNN_TEST_H5"), path);
  gchar *text_out = pipeline_error (desc);
  fail_unless (text_out && strstr (text_out, "DETECTION_MIN_CONFIDENSE")
      && strstr (text_out, path), "%s", text_out);
  g_unlink (path);
  g_free (path);
  g_free (desc);
  g_free (text_out);
}
GST_END_TEST;

GST_START_TEST (test_error_unknown_class)
{
  gchar *desc = g_strdup_printf (SOURCE "maskrcnn mode=every-frame model=%s classes=box,cat "
      "! fakesink", model_path ());
  gchar *text = pipeline_error (desc);
  fail_unless (text && strstr (text, "\"cat\" is not a class")
      && strstr (text, "disc, box, wedge, stripe"), "%s", text);
  g_free (desc);
  g_free (text);
}
GST_END_TEST;

GST_START_TEST (test_error_labels_count)
{
  gchar *path = NULL;
  int fd = g_file_open_tmp ("labels-XXXXXX.txt", &path, NULL);
  fail_unless (write (fd, "a\nb\n", 4) == 4);
  close (fd);
  gchar *desc = g_strdup_printf (SOURCE "maskrcnn mode=every-frame model=%s labels=%s ! "
      "fakesink", model_path (), path);
  gchar *text = pipeline_error (desc);
  fail_unless (text && strstr (text, "has 2 labels")
      && strstr (text, "5 classes"), "%s", text);
  g_unlink (path);
  g_free (path);
  g_free (desc);
  g_free (text);
}
GST_END_TEST;

GST_START_TEST (test_error_cuda_without_gpu)
{
  gchar *desc = g_strdup_printf (SOURCE "maskrcnn mode=every-frame model=%s backend=cuda ! "
      "fakesink", model_path ());
  gchar *text = pipeline_error (desc);
  /* where a GPU and the CUDA backend exist, the pipeline simply runs */
  if (text)
    fail_unless (strstr (text, "CUDA") != NULL, "%s", text);
  g_free (desc);
  g_free (text);
}
GST_END_TEST;

/* Fixed caps outside the templates: refused, with a warning that says
 * what is accepted. */
GST_START_TEST (test_error_refused_caps)
{
  gchar *desc = g_strdup_printf ("maskrcnn mode=every-frame model=%s", model_path ());
  GstHarness *h = gst_harness_new_parse (desc);
  GstBus *bus = gst_bus_new ();
  gst_element_set_bus (h->element, bus);
  gst_harness_push_event (h, gst_event_new_stream_start ("refused"));
  GstCaps *gray = gst_caps_from_string ("video/x-raw,format=GRAY8,"
      "width=64,height=48,framerate=30/1");
  gst_harness_push_event (h, gst_event_new_caps (gray));
  gst_caps_unref (gray);
  GstMessage *msg = gst_bus_pop_filtered (bus, GST_MESSAGE_WARNING);
  fail_unless (msg != NULL);
  GError *error;
  gst_message_parse_warning (msg, &error, NULL);
  fail_unless (strstr (error->message, "GRAY8")
      && strstr (error->message, "NV12"), "%s", error->message);
  g_error_free (error);
  gst_message_unref (msg);
  gst_element_set_bus (h->element, NULL);
  gst_object_unref (bus);
  gst_harness_teardown (h);
  g_free (desc);
}
GST_END_TEST;

/* A frame at frame index i of a 30 fps stream. */
static GstBuffer *
timed (GstBuffer *buffer, int i)
{
  GST_BUFFER_PTS (buffer) = gst_util_uint64_scale (i, GST_SECOND, 30);
  GST_BUFFER_DURATION (buffer) = GST_SECOND / 30;
  return buffer;
}

/* max-detections keeps the best N of the classes kept: the best detection
 * of a class that is not among the model's top N is still found. */
GST_START_TEST (test_classes_before_max_detections)
{
  GstBuffer *ref_buffer = reference_output ();
  GstMaskRcnnMeta *ref = meta_of (ref_buffer);
  /* the class whose best detection ranks lowest */
  guint last = 0;
  for (guint i = 1; i < ref->n_detections; i++) {
    gboolean first_of_class = TRUE;
    for (guint j = 0; j < i; j++)
      first_of_class &= ref->detections[j].class_id
          != ref->detections[i].class_id;
    if (first_of_class)
      last = i;
  }
  const GstMaskRcnnDetection *best = &ref->detections[last];
  fail_unless (last >= 2, "the test frame should rank classes apart");

  gchar *desc = g_strdup_printf ("maskrcnn mode=every-frame model=%s "
      "classes=%s max-detections=2", model_path (), best->class_name);
  GstHarness *h = harness_new (desc);
  GstBuffer *out = process (h, test_frame ());
  GstMaskRcnnMeta *meta = meta_of (out);
  guint of_class = 0;
  for (guint i = 0; i < ref->n_detections; i++)
    of_class += ref->detections[i].class_id == best->class_id;
  fail_unless_equals_int (meta->n_detections, MIN (of_class, 2));
  fail_unless_equals_string (meta->detections[0].class_name,
      best->class_name);
  fail_unless (meta->detections[0].score == best->score
      && meta->detections[0].x == best->x);
  gst_buffer_unref (out);
  gst_harness_teardown (h);
  gst_buffer_unref (ref_buffer);
  g_free (desc);
}
GST_END_TEST;

/* A caps change and a flush start over: the next frame is analysed (interval
 * restarts), no frame carries results of the other size or from before. */
GST_START_TEST (test_results_reset_at_caps_and_flush)
{
  gchar *desc = g_strdup_printf ("maskrcnn mode=every-frame model=%s "
      "interval=10", model_path ());
  GstHarness *h = harness_new (desc);
  GstBuffer *out = process (h, timed (test_frame (), 0));
  fail_unless (meta_of (out)->n_detections >= 10);
  gst_buffer_unref (out);
  out = process (h, timed (test_frame (), 1));
  fail_unless (meta_of (out)->repeated);
  fail_unless_equals_int (meta_of (out)->frame_number, 1);
  fail_unless_equals_int (meta_of (out)->result_frame_number, 0);
  fail_unless_equals_uint64 (meta_of (out)->result_age, GST_SECOND / 30);
  gst_buffer_unref (out);

  gst_harness_set_src_caps_str (h,
      "video/x-raw,format=RGB,width=320,height=240,framerate=30/1");
  GstBuffer *small = gst_buffer_new_allocate (NULL, 320 * 240 * 3, NULL);
  gst_buffer_memset (small, 0, 128, 320 * 240 * 3);
  out = process (h, timed (small, 2));
  GstMaskRcnnMeta *meta = meta_of (out);
  fail_if (meta->repeated);
  fail_unless_equals_int (meta->frame_width, 320);
  fail_unless_equals_int (meta->frame_height, 240);
  fail_unless_equals_int (meta->frame_number, 2);
  gst_buffer_unref (out);

  /* a flushing seek: frames count from 0 again, analysed afresh */
  gst_harness_set_src_caps_str (h, RGB_CAPS);
  out = process (h, timed (test_frame (), 3));
  fail_if (meta_of (out)->repeated);
  gst_buffer_unref (out);
  fail_unless (gst_harness_push_event (h, gst_event_new_flush_start ()));
  fail_unless (gst_harness_push_event (h, gst_event_new_flush_stop (TRUE)));
  GstSegment segment;
  gst_segment_init (&segment, GST_FORMAT_TIME);
  fail_unless (gst_harness_push_event (h, gst_event_new_segment (&segment)));
  out = process (h, timed (uniform_frame (128), 90));
  meta = meta_of (out);
  fail_if (meta->repeated);
  fail_unless_equals_int (meta->frame_number, 0);
  fail_unless_equals_uint64 (meta->result_pts, 3 * GST_SECOND);
  fail_unless (meta->n_detections < 10);
  gst_buffer_unref (out);
  gst_harness_teardown (h);
  g_free (desc);
}
GST_END_TEST;

/* qos=true: a frame downstream reports as late is not analysed but passes
 * on with the previous results marked repeated, and a QoS message counts
 * it; without qos it would be analysed. */
GST_START_TEST (test_qos_late_frames_pass_on)
{
  gchar *desc = g_strdup_printf ("maskrcnn mode=every-frame model=%s qos=true",
      model_path ());
  GstHarness *h = harness_new (desc);
  GstBus *bus = gst_bus_new ();
  gst_element_set_bus (h->element, bus);
  GstBuffer *out = process (h, timed (test_frame (), 0));
  GstMaskRcnnMeta *first = meta_of (out);
  fail_if (first->repeated);
  /* the sink was 1 s late on frame 0: frames up to 1 s are late */
  fail_unless (gst_harness_push_upstream_event (h, gst_event_new_qos
          (GST_QOS_TYPE_UNDERFLOW, 0.5, GST_SECOND, 0)));
  GstBuffer *late = process (h, timed (uniform_frame (128), 3));
  GstMaskRcnnMeta *meta = meta_of (late);
  fail_unless (meta->repeated);
  fail_unless_equals_int (meta->result_frame_number, 0);
  fail_unless (same_detections (first, meta));
  GstMessage *msg = gst_bus_pop_filtered (bus, GST_MESSAGE_QOS);
  fail_unless (msg != NULL, "no QoS message");
  GstFormat format;
  guint64 processed, dropped;
  gst_message_parse_qos_stats (msg, &format, &processed, &dropped);
  fail_unless_equals_int (format, GST_FORMAT_BUFFERS);
  fail_unless_equals_uint64 (processed, 1);
  fail_unless_equals_uint64 (dropped, 1);
  gst_message_unref (msg);
  /* a frame after the late ones is analysed */
  GstBuffer *in_time = process (h, timed (uniform_frame (128), 40));
  fail_if (meta_of (in_time)->repeated);
  fail_if (same_detections (first, meta_of (in_time)));
  gst_buffer_unref (out);
  gst_buffer_unref (late);
  gst_buffer_unref (in_time);
  gst_element_set_bus (h->element, NULL);
  gst_object_unref (bus);
  gst_harness_teardown (h);
  g_free (desc);
}
GST_END_TEST;

/* mode=live: frames come back without waiting for the model, carrying the
 * newest finished results of an earlier frame, marked with it. */
GST_START_TEST (test_live_mode)
{
  gchar *desc = g_strdup_printf ("maskrcnn mode=live model=%s",
      model_path ());
  GstHarness *h = harness_new (desc);
  GstMaskRcnnMeta *meta = NULL;
  GstBuffer *out = NULL;
  int i;
  for (i = 0; i < 3000 && !meta; i++) {
    gst_clear_buffer (&out);
    out = process (h, timed (test_frame (), i));
    meta = gst_buffer_get_mask_rcnn_meta (out);
    if (!meta)
      g_usleep (2000);
  }
  fail_unless (meta != NULL, "no results after %d frames", i);
  fail_unless (meta->repeated);
  fail_unless (meta->result_frame_number < meta->frame_number);
  fail_unless_equals_uint64 (meta->result_age,
      GST_BUFFER_PTS (out) - meta->result_pts);
  fail_unless (meta->n_detections >= 10);
  for (guint d = 0; d < meta->n_detections; d++)
    check_detection_is_sane (meta, &meta->detections[d]);
  gst_buffer_unref (out);

  /* after a caps change, nothing of the old size */
  gst_harness_set_src_caps_str (h,
      "video/x-raw,format=RGB,width=320,height=240,framerate=30/1");
  meta = NULL;
  out = NULL;
  for (int j = 0; j < 3000 && !meta; j++) {
    gst_clear_buffer (&out);
    GstBuffer *small = gst_buffer_new_allocate (NULL, 320 * 240 * 3, NULL);
    gst_buffer_memset (small, 0, 128, 320 * 240 * 3);
    out = process (h, timed (small, i + j));
    meta = gst_buffer_get_mask_rcnn_meta (out);
    if (!meta)
      g_usleep (2000);
  }
  fail_unless (meta != NULL);
  fail_unless_equals_int (meta->frame_width, 320);
  fail_unless (meta->result_pts >= gst_util_uint64_scale (i, GST_SECOND, 30));
  gst_buffer_unref (out);
  gst_harness_teardown (h);
  g_free (desc);
}
GST_END_TEST;

/* Models set while playing: frames go on with the old model while the new
 * one loads; a model that fails to load gives a WARNING and the old one
 * goes on; one that loads replaces it between frames. */
GST_START_TEST (test_model_swap_while_playing)
{
  gchar *desc = g_strdup_printf ("maskrcnn mode=every-frame model=%s",
      model_path ());
  GstHarness *h = harness_new (desc);
  GstElement *e = gst_harness_find_element (h, "maskrcnn");
  GstBus *bus = gst_bus_new ();
  gst_element_set_bus (e, bus);
  GstBuffer *ref = process (h, test_frame ());

  /* a "model" that takes as long to read as the test wants: a FIFO */
  gchar *dir = g_dir_make_tmp ("maskrcnn-swap-XXXXXX", NULL);
  gchar *fifo = g_build_filename (dir, "slow.safetensors", NULL);
  fail_unless (mkfifo (fifo, 0600) == 0);
  g_object_set (e, "model", fifo, NULL);
  for (int i = 0; i < 3; i++) {
    GstBuffer *out = process (h, test_frame ());
    fail_unless (same_detections (meta_of (ref), meta_of (out)));
    gst_buffer_unref (out);
  }
  /* the loader reads the FIFO's first bytes (none), then opens the path
   * again: by then a file that is no model */
  int fd = open (fifo, O_WRONLY);
  fail_unless (fd >= 0);
  g_unlink (fifo);
  fail_unless (g_file_set_contents (fifo, "no model", -1, NULL));
  close (fd);
  GstMessage *msg = gst_bus_timed_pop_filtered (bus, 30 * GST_SECOND,
      GST_MESSAGE_WARNING | GST_MESSAGE_ERROR);
  fail_unless (msg && GST_MESSAGE_TYPE (msg) == GST_MESSAGE_WARNING);
  GError *error;
  gst_message_parse_warning (msg, &error, NULL);
  fail_unless (strstr (error->message, "running model goes on")
      && strstr (error->message, fifo), "%s", error->message);
  g_error_free (error);
  gst_message_unref (msg);
  GstBuffer *out = process (h, test_frame ());
  fail_unless (same_detections (meta_of (ref), meta_of (out)));
  gst_buffer_unref (out);

  /* matterport's model with other names for its classes: integer boxes */
  gchar *labels = g_build_filename (dir, "labels.txt", NULL);
  fail_unless (g_file_set_contents (labels, "A\nB\nC\nD\n", -1, NULL));
  g_object_set (e, "config", g_getenv ("MRCNN_TEST_H5_CONFIG"), "labels",
      labels, "model", g_getenv ("MRCNN_TEST_H5"), NULL);
  gboolean swapped = FALSE;
  /* (frames far apart: under valgrind, which runs one thread at a time,
   * the load needs the time between them) */
  for (int i = 0; i < 300 && !swapped; i++) {
    out = process (h, test_frame ());
    GstMaskRcnnMeta *meta = meta_of (out);
    swapped = meta->n_detections > 0
        && strlen (meta->detections[0].class_name) == 1;
    if (swapped)
      for (guint d = 0; d < meta->n_detections; d++) {
        fail_unless (strchr ("ABCD", meta->detections[d].class_name[0]));
        fail_unless (meta->detections[d].x == floorf (meta->detections[d].x));
      }
    else
      fail_unless (same_detections (meta_of (ref), meta));
    gst_buffer_unref (out);
    if (!swapped)
      g_usleep (200000);
  }
  fail_unless (swapped, "the new model never replaced the old one");
  msg = gst_bus_pop_filtered (bus, GST_MESSAGE_WARNING | GST_MESSAGE_ERROR);
  fail_if (msg != NULL, "unexpected %" GST_PTR_FORMAT, msg);

  gst_element_set_bus (e, NULL);
  gst_object_unref (bus);
  gst_object_unref (e);
  gst_buffer_unref (ref);
  g_unlink (labels);
  g_unlink (fifo);
  g_rmdir (dir);
  g_free (labels);
  g_free (fifo);
  g_free (dir);
  gst_harness_teardown (h);
  g_free (desc);
}
GST_END_TEST;

/* engine-id: elements share one engine, each with its own settings; they
 * start and stop in any order; results equal those of an engine of their
 * own. */
GST_START_TEST (test_shared_engine)
{
  GstBuffer *ref_buffer = reference_output ();
  GstMaskRcnnMeta *ref = meta_of (ref_buffer);
  guint boxes = count_class (ref, "box");
  gchar *all = g_strdup_printf ("maskrcnn mode=every-frame model=%s "
      "engine-id=shared-test", model_path ());
  gchar *only_boxes = g_strdup_printf ("maskrcnn mode=every-frame model=%s "
      "engine-id=shared-test classes=box", model_path ());
  GRand *rand = g_rand_new_with_seed (7);
  for (int round = 0; round < 3; round++) {
    GstHarness *h[3] = { harness_new (all), harness_new (only_boxes),
      harness_new (all) };
    for (int i = 0; i < 3; i++) {
      GstBuffer *out = process (h[i], test_frame ());
      GstMaskRcnnMeta *meta = meta_of (out);
      if (i == 1) {
        fail_unless_equals_int (meta->n_detections, boxes);
      } else {
        fail_unless (same_detections (ref, meta));
      }
      gst_buffer_unref (out);
    }
    /* stopped in a random order, the others go on */
    int order[3] = { 0, 1, 2 };
    for (int i = 2; i > 0; i--) {
      int j = g_rand_int_range (rand, 0, i + 1), t = order[i];
      order[i] = order[j];
      order[j] = t;
    }
    for (int k = 0; k < 3; k++) {
      gst_harness_teardown (h[order[k]]);
      h[order[k]] = NULL;
      for (int i = 0; i < 3; i++) {
        if (!h[i])
          continue;
        GstBuffer *out = process (h[i], test_frame ());
        fail_unless_equals_int (meta_of (out)->n_detections,
            i == 1 ? boxes : ref->n_detections);
        gst_buffer_unref (out);
      }
    }
  }
  g_rand_free (rand);
  g_free (all);
  g_free (only_boxes);
  gst_buffer_unref (ref_buffer);
}
GST_END_TEST;

/* The top-left width x height of a test-size frame, tightly packed RGB. */
static GstBuffer *
cropped_frame (GstBuffer *frame, int width, int height)
{
  GstBuffer *out = gst_buffer_new_allocate (NULL, width * height * 3, NULL);
  GstMapInfo in, map;
  gst_buffer_map (frame, &in, GST_MAP_READ);
  gst_buffer_map (out, &map, GST_MAP_WRITE);
  for (int y = 0; y < height; y++)
    memcpy (map.data + y * width * 3, in.data + y * WIDTH * 3, width * 3);
  gst_buffer_unmap (out, &map);
  gst_buffer_unmap (frame, &in);
  return out;
}

typedef struct {
  GstHarness *h;
  GstBuffer *in, *out;
} StreamPush;

static gpointer
push_one (gpointer data)
{
  StreamPush *p = data;
  p->out = process (p->h, p->in);
  return NULL;
}

/* The frame through an element of its own with `threads` (0: one per
 * core), at `caps`. */
static GstBuffer *
own_output (const char *caps, GstBuffer *frame, int threads)
{
  gchar *desc = g_strdup_printf ("maskrcnn mode=every-frame model=%s "
      "threads=%d", model_path (), threads);
  GstHarness *h = gst_harness_new_parse (desc);
  gst_harness_set_src_caps_str (h, caps);
  GstBuffer *out = process (h, frame);
  gst_harness_teardown (h);
  g_free (desc);
  return out;
}

/* The frames of three streams (two frame sizes, one with a class filter)
 * on an engine-id with `lanes` and `batch_size`, each with its element's
 * settings: batch-size 3 runs them as one batch, batch-size 1 each as it
 * comes on a free lane.  Each result is the same, bit for bit, as from an
 * engine of the element's own with a lane's threads (the elements ask for
 * two).  Batches run without the timeout (far longer than the test): a
 * batch of 3 because it is full; with batch-size 2 the third frame alone
 * beside the running batch of the other two, as no more can come. */
#define SMALL_W 480
#define SMALL_H 352
static void
check_three_streams_batched (guint lanes, guint batch_size)
{
  int lane_threads = MAX (2 / (int) lanes, 1);
  gchar *small_caps = g_strdup_printf ("video/x-raw,format=RGB,width=%d,"
      "height=%d,framerate=30/1", SMALL_W, SMALL_H);
  GstBuffer *frame = test_frame ();
  GstBuffer *ref_buffer = own_output (RGB_CAPS, gst_buffer_ref (frame),
      lane_threads);
  GstMaskRcnnMeta *ref = meta_of (ref_buffer);
  guint boxes = count_class (ref, "box");
  fail_unless (boxes > 0 && boxes < ref->n_detections);
  GstBuffer *small_ref = own_output (small_caps, cropped_frame (frame,
          SMALL_W, SMALL_H), lane_threads);
  fail_unless (meta_of (small_ref)->n_detections > 5);

  const char *batched = "maskrcnn mode=every-frame model=%s "
      "engine-id=batch-test-%u-%u batch-size=%u batch-timeout=9000000000 "
      "lanes=%u threads=2 %s";
  gchar *all = g_strdup_printf (batched, model_path (), lanes, batch_size,
      batch_size, lanes, "");
  gchar *only_boxes = g_strdup_printf (batched, model_path (), lanes,
      batch_size, batch_size, lanes, "classes=box");
  StreamPush p[3] = {
    { harness_new (all), gst_buffer_ref (frame) },
    { harness_new (only_boxes), gst_buffer_ref (frame) },
    { gst_harness_new_parse (all), cropped_frame (frame, SMALL_W, SMALL_H) },
  };
  gst_harness_set_src_caps_str (p[2].h, small_caps);
  for (int round = 0; round < 2; round++) {
    GThread *threads[3];
    for (int i = 0; i < 3; i++) {
      if (round > 0)
        p[i].in = i == 2 ? cropped_frame (frame, SMALL_W, SMALL_H)
            : gst_buffer_ref (frame);
      threads[i] = g_thread_new ("stream", push_one, &p[i]);
    }
    for (int i = 0; i < 3; i++)
      g_thread_join (threads[i]);
    GstMaskRcnnMeta *m[3];
    for (int i = 0; i < 3; i++)
      m[i] = meta_of (p[i].out);
    fail_unless (same_detections (ref, m[0]));
    fail_unless_equals_int (m[1]->n_detections, boxes);
    fail_unless_equals_int (count_class (m[1], "box"), boxes);
    fail_unless (same_detections (meta_of (small_ref), m[2]));
    /* run as a full batch (or as they came), not let go by the timeout */
    for (int i = 0; i < 3; i++) {
      fail_unless (m[i]->inference_time < 8 * GST_SECOND);
      gst_clear_buffer (&p[i].out);
    }
  }
  for (int i = 0; i < 3; i++)
    gst_harness_teardown (p[i].h);
  g_free (all);
  g_free (only_boxes);
  g_free (small_caps);
  gst_buffer_unref (frame);
  gst_buffer_unref (small_ref);
  gst_buffer_unref (ref_buffer);
}

/* batch-size, frames of a batch one after another.  A frame waits for
 * the batch to fill only while another element sharing the engine may
 * still hand one over: a lone stream's frames run at once, and a frame
 * waiting beside an idle sharer runs at batch-timeout, or at once when
 * that sharer stops. */
GST_START_TEST (test_shared_engine_batched)
{
  check_three_streams_batched (1, 3);

  GstBuffer *ref_buffer = reference_output ();
  const char *desc = "maskrcnn mode=every-frame model=%s engine-id=%s "
      "batch-size=4 batch-timeout=%s";
  gchar *lone = g_strdup_printf (desc, model_path (), "lone-test",
      "9000000000");
  GstHarness *h = harness_new (lone);
  for (int i = 0; i < 2; i++) {
    GstBuffer *out = process (h, test_frame ());
    fail_unless (same_detections (meta_of (ref_buffer), meta_of (out)));
    fail_unless (meta_of (out)->inference_time < 8 * GST_SECOND);
    gst_buffer_unref (out);
  }
  gst_harness_teardown (h);

  /* beside an idle sharer: the timeout */
  gchar *shared = g_strdup_printf (desc, model_path (), "idle-test",
      "300000000");
  h = harness_new (shared);
  GstHarness *idle = harness_new (shared);
  GstBuffer *out = process (h, test_frame ());
  fail_unless (same_detections (meta_of (ref_buffer), meta_of (out)));
  fail_unless (meta_of (out)->inference_time >= 300 * GST_MSECOND);
  gst_buffer_unref (out);
  gst_harness_teardown (idle);
  gst_harness_teardown (h);

  /* the idle sharer stops while the frame waits: it runs */
  gchar *stopping = g_strdup_printf (desc, model_path (), "stop-test",
      "9000000000");
  StreamPush p = { harness_new (stopping), test_frame () };
  idle = harness_new (stopping);
  GThread *thread = g_thread_new ("stream", push_one, &p);
  g_usleep (200 * G_TIME_SPAN_MILLISECOND);
  gst_harness_teardown (idle);
  g_thread_join (thread);
  fail_unless (same_detections (meta_of (ref_buffer), meta_of (p.out)));
  fail_unless (meta_of (p.out)->inference_time < 8 * GST_SECOND);
  gst_buffer_unref (p.out);
  gst_harness_teardown (p.h);

  g_free (stopping);
  g_free (shared);
  g_free (lone);
  gst_buffer_unref (ref_buffer);
}
GST_END_TEST;

/* lanes=2: a batch's frames side by side, or the streams' frames each on
 * a free lane as it comes; results as alone.  lanes=3 and batch-size=2:
 * the first two frames run as a batch, and the third at once on the free
 * lane (its sharers have their frames running: none can come to fill its
 * batch). */
GST_START_TEST (test_shared_engine_lanes)
{
  check_three_streams_batched (2, 3);
  check_three_streams_batched (2, 1);
  check_three_streams_batched (3, 2);
}
GST_END_TEST;

/* Whether meta holds, exactly, the classes, scores and boxes the engine
 * alone gives for `frame` (tightly packed RGB, the test size) on
 * `threads` threads. */
static gboolean
engine_alone_gives (const GstMaskRcnnMeta *meta, GstBuffer *frame,
    int threads)
{
  GError *error = NULL;
  MrcnnModel *model = mrcnn_model_load (model_path (), &error);
  fail_unless (model != NULL, "%s", error ? error->message : "");
  MrcnnOptions options;
  mrcnn_options_init (&options);
  options.threads = threads;
  MrcnnEngine *engine = mrcnn_engine_new (model, &options, &error);
  fail_unless (engine != NULL, "%s", error ? error->message : "");
  GstMapInfo map;
  gst_buffer_map (frame, &map, GST_MAP_READ);
  MrcnnImage image = { map.data, WIDTH, HEIGHT, WIDTH * 3 };
  MrcnnResult r;
  mrcnn_result_init (&r);
  fail_unless (mrcnn_engine_detect (engine, &image, &r, &error), "%s",
      error ? error->message : "");
  gst_buffer_unmap (frame, &map);
  gboolean same = r.n_detections > 10
      && (guint) r.n_detections == meta->n_detections;
  for (int i = 0; same && i < r.n_detections; i++) {
    const MrcnnDetection *d = &r.detections[i];
    const GstMaskRcnnDetection *m = &meta->detections[i];
    float w = d->box[2] - d->box[0], h = d->box[3] - d->box[1];
    same = m->class_id == d->label_id && m->score == d->score
        && m->x == d->box[0] && m->y == d->box[1] && m->width == w
        && m->height == h;
  }
  mrcnn_result_clear (&r);
  mrcnn_engine_free (engine);
  mrcnn_model_free (model);
  return same;
}

/* Elements with other threads on one engine (a batch of both): each
 * frame runs with its element's threads, exactly as the engine alone with
 * them (oneDNN computes some layers differently by thread count, so a
 * frame that ran with its neighbour's threads would differ). */
GST_START_TEST (test_shared_engine_threads)
{
  GstBuffer *frame = test_frame ();
  StreamPush p[2];
  for (int i = 0; i < 2; i++) {
    gchar *desc = g_strdup_printf ("maskrcnn mode=every-frame model=%s "
        "engine-id=threads-test batch-size=2 batch-timeout=9000000000 "
        "threads=%d", model_path (), i + 1);
    p[i] = (StreamPush) { harness_new (desc), gst_buffer_ref (frame) };
    g_free (desc);
  }
  GThread *threads[2];
  for (int i = 0; i < 2; i++)
    threads[i] = g_thread_new ("stream", push_one, &p[i]);
  for (int i = 0; i < 2; i++)
    g_thread_join (threads[i]);
  for (int i = 0; i < 2; i++) {
    fail_unless (engine_alone_gives (meta_of (p[i].out), frame, i + 1),
        "the element with threads=%d", i + 1);
    fail_unless (meta_of (p[i].out)->inference_time < 8 * GST_SECOND);
    gst_buffer_unref (p[i].out);
    gst_harness_teardown (p[i].h);
  }
  gst_buffer_unref (frame);
}
GST_END_TEST;

/* Another model under an engine-id in use: an ERROR that says both. */
GST_START_TEST (test_shared_engine_mismatch)
{
  gchar *desc = g_strdup_printf ("maskrcnn mode=every-frame model=%s "
      "engine-id=mismatch-test", model_path ());
  GstHarness *h = harness_new (desc);
  GstBuffer *out = process (h, test_frame ());
  gst_buffer_unref (out);
  gchar *other = g_strdup_printf (SOURCE "maskrcnn engine-id=mismatch-test "
      "model=%s config=%s ! fakesink", g_getenv ("MRCNN_TEST_H5"),
      g_getenv ("MRCNN_TEST_H5_CONFIG"));
  gchar *text = pipeline_error (other);
  fail_unless (text && strstr (text, "engine-id \"mismatch-test\" runs")
      && strstr (text, g_getenv ("MRCNN_TEST_H5")), "%s", text);
  g_free (text);
  g_free (other);
  /* the same model with another batch size */
  other = g_strdup_printf (SOURCE "maskrcnn engine-id=mismatch-test "
      "model=%s batch-size=2 ! fakesink", model_path ());
  text = pipeline_error (other);
  fail_unless (text && strstr (text, "batch-size=2")
      && strstr (text, "batch-size, batch-timeout and lanes"), "%s", text);
  g_free (text);
  g_free (other);
  /* and with other lanes */
  other = g_strdup_printf (SOURCE "maskrcnn engine-id=mismatch-test "
      "model=%s lanes=2 ! fakesink", model_path ());
  text = pipeline_error (other);
  fail_unless (text && strstr (text, "lanes=2") && strstr (text, "lanes=1"),
      "%s", text);
  g_free (text);
  g_free (other);
  gst_harness_teardown (h);
  g_free (desc);
}
GST_END_TEST;

static Suite *
maskrcnn_suite (void)
{
  Suite *s = suite_create ("maskrcnn");
  TCase *tc = tcase_create ("general");
  tcase_set_timeout (tc, 600);
  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_rgb_detections);
  tcase_add_test (tc, test_all_formats);
  tcase_add_test (tc, test_odd_sizes);
  tcase_add_test (tc, test_zero_detections_have_meta);
  tcase_add_test (tc, test_interval);
  tcase_add_test (tc, test_classes_filter);
  tcase_add_test (tc, test_thresholds_live);
  tcase_add_test (tc, test_labels_file);
  tcase_add_test (tc, test_meta_survives_copy);
  tcase_add_test (tc, test_meta_scaled);
  tcase_add_test (tc, test_meta_dropped_when_geometry_changes);
  tcase_add_test (tc, test_meta_of_chained_models);
  tcase_add_test (tc, test_matterport_model);
  tcase_add_test (tc, test_error_no_model);
  tcase_add_test (tc, test_error_bad_config);
  tcase_add_test (tc, test_error_missing_model);
  tcase_add_test (tc, test_error_corrupt_model);
  tcase_add_test (tc, test_error_unknown_class);
  tcase_add_test (tc, test_error_labels_count);
  tcase_add_test (tc, test_error_cuda_without_gpu);
  tcase_add_test (tc, test_error_refused_caps);
  tcase_add_test (tc, test_classes_before_max_detections);
  tcase_add_test (tc, test_results_reset_at_caps_and_flush);
  tcase_add_test (tc, test_qos_late_frames_pass_on);
  tcase_add_test (tc, test_live_mode);
  tcase_add_test (tc, test_model_swap_while_playing);
  tcase_add_test (tc, test_shared_engine);
  tcase_add_test (tc, test_shared_engine_batched);
  tcase_add_test (tc, test_shared_engine_lanes);
  tcase_add_test (tc, test_shared_engine_threads);
  tcase_add_test (tc, test_shared_engine_mismatch);
  return s;
}

GST_CHECK_MAIN (maskrcnn);
