/* GstHarness tests of maskrcnnexport: frames carrying hand-made detections
 * (binary, soft, without a mask, partly off the frame edge) are written as
 * JSON Lines and COCO results; the masks decode back to the same pixels,
 * the polygons fill back to the mask, lines are on disk as frames pass,
 * and bad locations give an error naming the file. */
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <json-glib/json-glib.h>
#include <glib/gstdio.h>
#include <string.h>

#include "gstmaskrcnnmeta.h"
#include "mrcnn.h"

#define W 64
#define H 48

static gchar *tmpdir;

static void
setup (void)
{
  tmpdir = g_dir_make_tmp ("maskrcnnexport-XXXXXX", NULL);
  fail_unless (tmpdir != NULL);
}

static void
teardown (void)
{
  GDir *dir = g_dir_open (tmpdir, 0, NULL);
  const gchar *name;
  while ((name = g_dir_read_name (dir))) {
    gchar *path = g_build_filename (tmpdir, name, NULL);
    g_unlink (path);
    g_free (path);
  }
  g_dir_close (dir);
  g_rmdir (tmpdir);
  g_clear_pointer (&tmpdir, g_free);
}

/* A ring (a disc with a hole) in the rectangle (8, 6, 30, 24), and apart
 * from it a blob: two parts, one hole. */
static guint8
ring_value (int x, int y)
{
  double dx = (x - 15.0) / 7.0, dy = (y - 12.0) / 6.0, r = dx * dx + dy * dy;
  if (r <= 1.0 && r > 0.2)
    return 255;
  return x >= 28 && x < 36 && y >= 20 && y < 28 ? 255 : 0;
}

typedef enum { RING, GRADIENT, FULL, NO_MASK } Pattern;

typedef struct {
  int class_id;
  const char *name;
  float score;
  int mask_x, mask_y, mask_w, mask_h;
  Pattern pattern;
} Spec;

static const Spec specs[] = {
  { 3, "ring", 0.875f, 8, 6, 30, 24, RING },
  /* soft, values 0..255: set where >= 128 */
  { 1, "soft", 0.5f, 40, 10, 20, 30, GRADIENT },
  /* at the bottom-right corner of the frame */
  { 3, "ring", 0.25f, W - 10, H - 8, 10, 8, FULL },
  { 2, "nomask", 0.125f, 0, 0, 5, 5, NO_MASK },
};

static guint8
spec_value (const Spec *s, int x, int y)
{
  switch (s->pattern) {
    case RING:
      return ring_value (x, y);
    case GRADIENT:
      return (guint8) ((x * 7 + y * 13) % 256);
    case FULL:
      return 255;
    default:
      return 0;
  }
}

/* The full-frame 0/1 mask that a detection must export as. */
static guint8 *
expected_mask (const Spec *s)
{
  guint8 *m = g_new0 (guint8, W * H);
  if (s->pattern == NO_MASK)
    return m;
  for (int y = 0; y < s->mask_h; y++)
    for (int x = 0; x < s->mask_w; x++)
      m[(s->mask_y + y) * W + s->mask_x + x] = spec_value (s, x, y) >= 128;
  return m;
}

static GstBuffer *
frame_buffer (GstClockTime pts, gboolean with_meta, guint n_specs)
{
  GstBuffer *buffer = gst_buffer_new_allocate (NULL, W * H * 3, NULL);
  gst_buffer_memset (buffer, 0, 77, W * H * 3);
  GST_BUFFER_PTS (buffer) = pts;
  if (!with_meta)
    return buffer;
  GstMaskRcnnMeta *meta = gst_buffer_add_mask_rcnn_meta (buffer, W, H);
  for (guint i = 0; i < n_specs; i++) {
    const Spec *s = &specs[i];
    guint8 *mask = g_new (guint8, s->mask_w * s->mask_h);
    for (int y = 0; y < s->mask_h; y++)
      for (int x = 0; x < s->mask_w; x++)
        mask[y * s->mask_w + x] = spec_value (s, x, y);
    gst_mask_rcnn_meta_add_detection (meta, s->class_id, s->name, s->score,
        s->mask_x + 0.5f, s->mask_y + 0.25f, s->mask_w - 1.0f, s->mask_h - 0.5f,
        s->mask_x, s->mask_y, s->pattern == NO_MASK ? 0 : s->mask_w,
        s->pattern == NO_MASK ? 0 : s->mask_h,
        s->pattern == NO_MASK ? NULL : mask);
    g_free (mask);
  }
  meta->soft_masks = n_specs > 1;     /* specs[1] is soft */
  return buffer;
}

static GstHarness *
export_harness (const gchar *properties)
{
  gchar *desc = g_strdup_printf ("maskrcnnexport %s", properties);
  GstHarness *h = gst_harness_new_parse (desc);
  g_free (desc);
  gst_harness_set_src_caps_str (h, "video/x-raw,format=RGB,width=64,"
      "height=48,framerate=25/1");
  return h;
}

/* Pushes a buffer and checks that the same buffer, untouched, comes out. */
static void
push_through (GstHarness *h, GstBuffer *buffer)
{
  gst_buffer_ref (buffer);
  fail_unless_equals_int (gst_harness_push (h, buffer), GST_FLOW_OK);
  GstBuffer *out = gst_harness_pull (h);
  fail_unless (out == buffer);
  GstMapInfo map;
  gst_buffer_map (out, &map, GST_MAP_READ);
  for (gsize i = 0; i < map.size; i++)
    fail_unless_equals_int (map.data[i], 77);
  gst_buffer_unmap (out, &map);
  gst_buffer_unref (out);
  gst_buffer_unref (buffer);
}

static gchar **
read_lines (const gchar *path, guint *n)
{
  gchar *text;
  fail_unless (g_file_get_contents (path, &text, NULL, NULL));
  /* every line ends in a newline: the last piece is empty */
  fail_unless (g_str_has_suffix (text, "\n") || text[0] == '\0');
  gchar **lines = g_strsplit (text, "\n", -1);
  g_free (text);
  *n = g_strv_length (lines) - 1;
  return lines;
}

static gchar *
read_text (const gchar *path)
{
  gchar *text;
  fail_unless (g_file_get_contents (path, &text, NULL, NULL));
  return text;
}

static JsonNode *
parse (const gchar *text)
{
  GError *error = NULL;
  JsonNode *node = json_from_string (text, &error);
  fail_unless (node != NULL, "%s: %s", error ? error->message : "empty", text);
  return node;
}

static void
check_rle (JsonObject *segmentation, const Spec *s)
{
  JsonArray *size = json_object_get_array_member (segmentation, "size");
  fail_unless_equals_int (json_array_get_length (size), 2);
  fail_unless_equals_int (json_array_get_int_element (size, 0), H);
  fail_unless_equals_int (json_array_get_int_element (size, 1), W);
  guint8 *back = g_new (guint8, W * H), *expected = expected_mask (s);
  fail_unless (mrcnn_rle_decode (json_object_get_string_member (segmentation,
              "counts"), W, H, back));
  fail_unless (memcmp (back, expected, W * H) == 0, "mask of %s differs",
      s->name);
  g_free (back);
  g_free (expected);
}

static void
check_detection (JsonObject *d, const Spec *s)
{
  fail_unless_equals_int (json_object_get_int_member (d, "category_id"),
      s->class_id);
  fail_unless_equals_float (json_object_get_double_member (d, "score"),
      s->score);
  JsonArray *bbox = json_object_get_array_member (d, "bbox");
  fail_unless_equals_int (json_array_get_length (bbox), 4);
  fail_unless_equals_float (json_array_get_double_element (bbox, 0),
      s->mask_x + 0.5);
  fail_unless_equals_float (json_array_get_double_element (bbox, 1),
      s->mask_y + 0.25);
  fail_unless_equals_float (json_array_get_double_element (bbox, 2),
      s->mask_w - 1.0);
  fail_unless_equals_float (json_array_get_double_element (bbox, 3),
      s->mask_h - 0.5);
}

GST_START_TEST (test_jsonl)
{
  gchar *path = g_build_filename (tmpdir, "out.jsonl", NULL);
  gchar *props = g_strdup_printf ("location=%s", path);
  GstHarness *h = export_harness (props);
  guint n;

  /* written and flushed as each frame passes */
  push_through (h, frame_buffer (0, TRUE, G_N_ELEMENTS (specs)));
  g_strfreev (read_lines (path, &n));
  fail_unless_equals_int (n, 1);
  push_through (h, frame_buffer (40 * GST_MSECOND, FALSE, 0));
  push_through (h, frame_buffer (GST_CLOCK_TIME_NONE, TRUE, 0));
  gchar **lines = read_lines (path, &n);
  fail_unless_equals_int (n, 3);

  JsonNode *node = parse (lines[0]);
  JsonObject *o = json_node_get_object (node);
  fail_unless_equals_int (json_object_get_int_member (o, "frame"), 0);
  fail_unless_equals_int (json_object_get_int_member (o, "pts"), 0);
  fail_unless (json_object_get_boolean_member (o, "analysed"));
  fail_unless_equals_int (json_object_get_int_member (o, "width"), W);
  fail_unless_equals_int (json_object_get_int_member (o, "height"), H);
  fail_if (json_object_get_boolean_member (o, "repeated"));
  JsonArray *dets = json_object_get_array_member (o, "detections");
  fail_unless_equals_int (json_array_get_length (dets), G_N_ELEMENTS (specs));
  for (guint i = 0; i < G_N_ELEMENTS (specs); i++) {
    JsonObject *d = json_array_get_object_element (dets, i);
    check_detection (d, &specs[i]);
    fail_unless_equals_string (json_object_get_string_member (d, "label"),
        specs[i].name);
    check_rle (json_object_get_object_member (d, "segmentation"), &specs[i]);
    /* a meta without model_name: no "model" */
    fail_if (json_object_has_member (d, "model"));
  }
  json_node_unref (node);

  /* not analysed: said so, and no detections to mistake for none found */
  node = parse (lines[1]);
  o = json_node_get_object (node);
  fail_unless_equals_int (json_object_get_int_member (o, "frame"), 1);
  fail_unless_equals_int (json_object_get_int_member (o, "pts"),
      40 * GST_MSECOND);
  fail_if (json_object_get_boolean_member (o, "analysed"));
  fail_if (json_object_has_member (o, "detections"));
  json_node_unref (node);

  node = parse (lines[2]);
  o = json_node_get_object (node);
  fail_unless_equals_int (json_object_get_int_member (o, "frame"), 2);
  fail_unless (json_object_get_null_member (o, "pts"));
  fail_unless_equals_int (json_array_get_length (json_object_get_array_member
          (o, "detections")), 0);
  json_node_unref (node);
  g_strfreev (lines);

  gst_harness_teardown (h);
  g_free (props);
  g_free (path);
}

GST_END_TEST;

/* Track ids (maskrcnntracker): "track_id" in the JSON of tracked
 * detections only; format=mot writes one MOTChallenge line per tracked
 * detection, frames from 1. */
GST_START_TEST (test_track_ids)
{
  gchar *path = g_build_filename (tmpdir, "tracks.jsonl", NULL);
  gchar *mot_path = g_build_filename (tmpdir, "tracks.txt", NULL);
  gchar *props = g_strdup_printf ("location=%s", path);
  gchar *mot_props = g_strdup_printf ("location=%s format=mot", mot_path);
  GstHarness *h = export_harness (props), *mot = export_harness (mot_props);
  for (int f = 0; f < 2; f++) {
    GstBuffer *buffer = frame_buffer (f * 40 * GST_MSECOND, TRUE, 3);
    GstMaskRcnnMeta *meta = gst_buffer_get_mask_rcnn_meta (buffer);
    meta->detections[0].track_id = 7;
    meta->detections[2].track_id = 12 + f;
    push_through (h, gst_buffer_ref (buffer));
    push_through (mot, buffer);
  }
  gst_harness_push (mot, frame_buffer (80 * GST_MSECOND, FALSE, 0));
  gst_buffer_unref (gst_harness_pull (mot));
  guint n;
  gchar **lines = read_lines (path, &n);
  fail_unless_equals_int (n, 2);
  JsonNode *node = parse (lines[1]);
  JsonArray *dets = json_object_get_array_member (json_node_get_object (node),
      "detections");
  fail_unless_equals_int (json_object_get_int_member
      (json_array_get_object_element (dets, 0), "track_id"), 7);
  fail_if (json_object_has_member (json_array_get_object_element (dets, 1),
          "track_id"));
  fail_unless_equals_int (json_object_get_int_member
      (json_array_get_object_element (dets, 2), "track_id"), 13);
  json_node_unref (node);
  g_strfreev (lines);

  lines = read_lines (mot_path, &n);
  fail_unless_equals_int (n, 4);
  fail_unless_equals_string (lines[0], "1,7,8.50,6.25,29.00,23.50,0.8750,"
      "-1,-1,-1");
  fail_unless_equals_string (lines[1], "1,12,54.50,40.25,9.00,7.50,"
      "0.2500,-1,-1,-1");
  fail_unless (g_str_has_prefix (lines[2], "2,7,"));
  fail_unless (g_str_has_prefix (lines[3], "2,13,"));
  g_strfreev (lines);
  gst_harness_teardown (h);
  gst_harness_teardown (mot);
  g_free (props);
  g_free (mot_props);
  g_free (path);
  g_free (mot_path);
}

GST_END_TEST;

/* Behind two chained maskrcnn elements (a meta of each model): every
 * format writes the detections of both, jsonl and coco each with its
 * "model" (written whenever the meta names its model). */
GST_START_TEST (test_two_models)
{
  const gchar *formats[] = { "jsonl", "coco", "mot" };
  gchar *paths[3];
  GstHarness *h[3];
  for (int k = 0; k < 3; k++) {
    gchar *name = g_strdup_printf ("two-models.%s", formats[k]);
    paths[k] = g_build_filename (tmpdir, name, NULL);
    gchar *props = g_strdup_printf ("location=%s format=%s", paths[k],
        formats[k]);
    h[k] = export_harness (props);
    g_free (props);
    g_free (name);
  }
  /* specs 0 and 1 from model a, spec 2 from model b; one of each tracked */
  GstBuffer *buffer = frame_buffer (0, TRUE, 2);
  GstMaskRcnnMeta *a = gst_buffer_get_mask_rcnn_meta (buffer);
  gst_mask_rcnn_meta_set_source (a, "cam", "a.safetensors");
  a->detections[0].track_id = 1;
  GstMaskRcnnMeta *b = gst_buffer_add_mask_rcnn_meta (buffer, W, H);
  gst_mask_rcnn_meta_set_source (b, "cam", "b.safetensors");
  const Spec *s = &specs[2];
  guint8 *mask = g_new (guint8, s->mask_w * s->mask_h);
  for (int y = 0; y < s->mask_h; y++)
    for (int x = 0; x < s->mask_w; x++)
      mask[y * s->mask_w + x] = spec_value (s, x, y);
  gst_mask_rcnn_meta_add_detection (b, s->class_id, s->name, s->score,
      s->mask_x + 0.5f, s->mask_y + 0.25f, s->mask_w - 1.0f, s->mask_h - 0.5f,
      s->mask_x, s->mask_y, s->mask_w, s->mask_h, mask)->track_id = 2;
  g_free (mask);
  for (int k = 0; k < 3; k++)
    push_through (h[k], gst_buffer_ref (buffer));
  gst_buffer_unref (buffer);
  fail_unless (gst_harness_push_event (h[1], gst_event_new_eos ()));

  static const char *const models[] = { "a.safetensors", "a.safetensors",
    "b.safetensors" };
  guint n;
  gchar **lines = read_lines (paths[0], &n);
  fail_unless_equals_int (n, 1);
  JsonNode *node = parse (lines[0]);
  JsonArray *dets = json_object_get_array_member (json_node_get_object (node),
      "detections");
  fail_unless_equals_int (json_array_get_length (dets), 3);
  for (guint i = 0; i < 3; i++) {
    JsonObject *d = json_array_get_object_element (dets, i);
    check_detection (d, &specs[i]);
    fail_unless_equals_string (json_object_get_string_member (d, "model"),
        models[i]);
  }
  json_node_unref (node);
  g_strfreev (lines);

  gchar *text = read_text (paths[1]);
  node = parse (text);
  JsonArray *results = json_node_get_array (node);
  fail_unless_equals_int (json_array_get_length (results), 3);
  for (guint i = 0; i < 3; i++) {
    JsonObject *r = json_array_get_object_element (results, i);
    check_detection (r, &specs[i]);
    fail_unless_equals_string (json_object_get_string_member (r, "model"),
        models[i]);
  }
  json_node_unref (node);
  g_free (text);

  lines = read_lines (paths[2], &n);
  fail_unless_equals_int (n, 2);
  fail_unless (g_str_has_prefix (lines[0], "1,1,"));
  fail_unless (g_str_has_prefix (lines[1], "1,2,"));
  g_strfreev (lines);
  for (int k = 0; k < 3; k++) {
    gst_harness_teardown (h[k]);
    g_free (paths[k]);
  }
}

GST_END_TEST;

/* Two models numbering their classes alike: the categories file lists each
 * model's classes apart, each with its model, by model then id. */
GST_START_TEST (test_categories_of_two_models)
{
  gchar *path = g_build_filename (tmpdir, "two-models-coco.json", NULL);
  gchar *cats = g_build_filename (tmpdir, "two-models-categories.json", NULL);
  gchar *props = g_strdup_printf ("location=%s format=coco "
      "categories-location=%s", path, cats);
  GstHarness *h = export_harness (props);
  /* model b first on the buffer: the file's order is not the buffer's */
  GstBuffer *buffer = frame_buffer (0, TRUE, 2);
  GstMaskRcnnMeta *b = gst_buffer_get_mask_rcnn_meta (buffer);
  gst_mask_rcnn_meta_set_source (b, "cam", "b.safetensors");
  GstMaskRcnnMeta *a = gst_buffer_add_mask_rcnn_meta (buffer, W, H);
  gst_mask_rcnn_meta_set_source (a, "cam", "a.safetensors");
  gst_mask_rcnn_meta_add_detection (a, 2, "car", 0.5f, 1, 1, 4, 4, 0, 0, 0,
      0, NULL);
  gst_mask_rcnn_meta_add_detection (a, 1, "person", 0.4f, 9, 9, 4, 4, 0, 0,
      0, 0, NULL);
  push_through (h, buffer);
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));

  gchar *text = read_text (cats);
  fail_unless_equals_string (text,
      "[{\"id\":1,\"name\":\"person\",\"model\":\"a.safetensors\"},"
      "{\"id\":2,\"name\":\"car\",\"model\":\"a.safetensors\"},"
      "{\"id\":1,\"name\":\"soft\",\"model\":\"b.safetensors\"},"
      "{\"id\":3,\"name\":\"ring\",\"model\":\"b.safetensors\"}]\n");
  g_free (text);
  gst_harness_teardown (h);
  g_free (props);
  g_free (cats);
  g_free (path);
}

GST_END_TEST;

/* Even-odd test of the pixel centre; vertices are integer corners. */
static gboolean
polygon_covers (JsonArray *p, int x, int y)
{
  guint n = json_array_get_length (p) / 2;
  double px = x + 0.5, py = y + 0.5;
  gboolean inside = FALSE;
  for (guint i = 0, j = n - 1; i < n; j = i++) {
    double xi = json_array_get_int_element (p, 2 * i);
    double yi = json_array_get_int_element (p, 2 * i + 1);
    double xj = json_array_get_int_element (p, 2 * j);
    double yj = json_array_get_int_element (p, 2 * j + 1);
    if ((yi > py) != (yj > py) && px < xi + (py - yi) * (xj - xi) / (yj - yi))
      inside = !inside;
  }
  return inside;
}

GST_START_TEST (test_polygons)
{
  gchar *path = g_build_filename (tmpdir, "poly.jsonl", NULL);
  gchar *props = g_strdup_printf ("location=%s mask-encoding=polygon", path);
  GstHarness *h = export_harness (props);
  push_through (h, frame_buffer (0, TRUE, G_N_ELEMENTS (specs)));
  guint n;
  gchar **lines = read_lines (path, &n);
  fail_unless_equals_int (n, 1);
  JsonNode *node = parse (lines[0]);
  JsonArray *dets = json_object_get_array_member (json_node_get_object (node),
      "detections");

  /* the ring and the blob: two outlines that fill the ring's hole too */
  JsonArray *ring = json_object_get_array_member (json_array_get_object_element
      (dets, 0), "segmentation");
  fail_unless_equals_int (json_array_get_length (ring), 2);
  int hole = 0;
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) {
      int mx = x - specs[0].mask_x, my = y - specs[0].mask_y;
      gboolean in_rect = mx >= 0 && my >= 0 && mx < specs[0].mask_w
          && my < specs[0].mask_h;
      gboolean set = in_rect && ring_value (mx, my);
      double dx = (mx - 15.0) / 7.0, dy = (my - 12.0) / 6.0;
      gboolean in_hole = in_rect && dx * dx + dy * dy <= 0.2;
      hole += in_hole;
      gboolean covered = polygon_covers (json_array_get_array_element (ring, 0),
          x, y) || polygon_covers (json_array_get_array_element (ring, 1), x,
          y);
      fail_unless_equals_int (covered, set || in_hole);
    }
  fail_unless (hole > 0);

  /* at the frame corner: inside the frame */
  JsonArray *corner = json_object_get_array_member
      (json_array_get_object_element (dets, 2), "segmentation");
  for (guint k = 0; k < json_array_get_length (corner); k++) {
    JsonArray *p = json_array_get_array_element (corner, k);
    for (guint i = 0; i < json_array_get_length (p); i++)
      fail_unless (json_array_get_int_element (p, i) <= (i % 2 ? H : W));
  }

  /* no pixel set: an empty RLE, since pycocotools reads no empty polygon
   * list */
  JsonObject *empty = json_object_get_object_member
      (json_array_get_object_element (dets, 3), "segmentation");
  fail_unless (empty != NULL);
  check_rle (empty, &specs[3]);

  json_node_unref (node);
  g_strfreev (lines);
  gst_harness_teardown (h);
  g_free (props);
  g_free (path);
}

GST_END_TEST;

GST_START_TEST (test_coco)
{
  gchar *path = g_build_filename (tmpdir, "results.json", NULL);
  gchar *cats = g_build_filename (tmpdir, "categories.json", NULL);
  gchar *props = g_strdup_printf ("location=%s format=coco "
      "categories-location=%s", path, cats);
  GstHarness *h = export_harness (props);

  push_through (h, frame_buffer (0, FALSE, 0));
  push_through (h, frame_buffer (40 * GST_MSECOND, TRUE,
          G_N_ELEMENTS (specs)));
  push_through (h, frame_buffer (80 * GST_MSECOND, TRUE, 1));
  /* nothing before EOS */
  gchar *text = read_text (path);
  fail_unless_equals_string (text, "");
  g_free (text);
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));

  text = read_text (path);
  JsonNode *node = parse (text);
  JsonArray *results = json_node_get_array (node);
  fail_unless_equals_int (json_array_get_length (results),
      G_N_ELEMENTS (specs) + 1);
  for (guint i = 0; i < json_array_get_length (results); i++) {
    JsonObject *r = json_array_get_object_element (results, i);
    const Spec *s = &specs[i < G_N_ELEMENTS (specs) ? i : 0];
    fail_unless_equals_int (json_object_get_int_member (r, "image_id"),
        i < G_N_ELEMENTS (specs) ? 1 : 2);
    check_detection (r, s);
    check_rle (json_object_get_object_member (r, "segmentation"), s);
    fail_if (json_object_has_member (r, "label"));
  }
  json_node_unref (node);
  g_free (text);

  text = read_text (cats);
  fail_unless_equals_string (text, "[{\"id\":1,\"name\":\"soft\"},"
      "{\"id\":2,\"name\":\"nomask\"},{\"id\":3,\"name\":\"ring\"}]\n");
  g_free (text);

  gst_harness_teardown (h);
  g_free (props);
  g_free (cats);
  g_free (path);
}

GST_END_TEST;

/* Stopped without EOS: the results are written at stop; after an EOS,
 * later frames are written over the first results at the next stop. */
GST_START_TEST (test_coco_without_eos)
{
  gchar *path = g_build_filename (tmpdir, "results.json", NULL);
  gchar *props = g_strdup_printf ("location=%s format=coco", path);
  GstHarness *h = export_harness (props);
  push_through (h, frame_buffer (0, TRUE, 1));
  gst_harness_teardown (h);
  gchar *text = read_text (path);
  JsonNode *node = parse (text);
  fail_unless_equals_int (json_array_get_length (json_node_get_array (node)),
      1);
  json_node_unref (node);
  g_free (text);

  h = export_harness (props);
  push_through (h, frame_buffer (0, TRUE, 1));
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  fail_unless (gst_harness_push_event (h, gst_event_new_flush_start ()));
  fail_unless (gst_harness_push_event (h, gst_event_new_flush_stop (TRUE)));
  GstSegment segment;
  gst_segment_init (&segment, GST_FORMAT_TIME);
  fail_unless (gst_harness_push_event (h, gst_event_new_segment (&segment)));
  push_through (h, frame_buffer (0, TRUE, 2));
  gst_harness_teardown (h);
  text = read_text (path);
  node = parse (text);
  JsonArray *results = json_node_get_array (node);
  fail_unless_equals_int (json_array_get_length (results), 3);
  fail_unless_equals_int (json_object_get_int_member
      (json_array_get_object_element (results, 2), "image_id"), 1);
  json_node_unref (node);
  g_free (text);
  g_free (props);
  g_free (path);
}

GST_END_TEST;

/* Runs `description` and returns the first error, or NULL at EOS. */
static GError *
pipeline_error (const gchar *description)
{
  GError *error = NULL;
  GstElement *pipeline = gst_parse_launch (description, &error);
  fail_unless (pipeline != NULL, "%s", error ? error->message : "");
  gst_element_set_state (pipeline, GST_STATE_PLAYING);
  GstBus *bus = gst_element_get_bus (pipeline);
  GstMessage *msg = gst_bus_timed_pop_filtered (bus, 60 * GST_SECOND,
      GST_MESSAGE_ERROR | GST_MESSAGE_EOS);
  fail_unless (msg != NULL);
  if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR)
    gst_message_parse_error (msg, &error, NULL);
  gst_message_unref (msg);
  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_object_unref (bus);
  gst_object_unref (pipeline);
  return error;
}

GST_START_TEST (test_error_unwritable)
{
  GError *error = pipeline_error ("videotestsrc num-buffers=2 ! "
      "maskrcnnexport location=/nonexistent/dir/out.jsonl ! fakesink");
  fail_unless (error != NULL);
  fail_unless (g_error_matches (error, GST_RESOURCE_ERROR,
          GST_RESOURCE_ERROR_OPEN_WRITE), "%s", error->message);
  fail_unless (strstr (error->message, "/nonexistent/dir/out.jsonl")
      && strstr (error->message, g_strerror (ENOENT)), "%s", error->message);
  g_error_free (error);

  /* the categories file too */
  gchar *path = g_build_filename (tmpdir, "out.json", NULL);
  gchar *desc = g_strdup_printf ("videotestsrc num-buffers=2 ! maskrcnnexport "
      "format=coco location=%s categories-location=/nonexistent/c.json ! "
      "fakesink", path);
  error = pipeline_error (desc);
  fail_unless (error != NULL);
  fail_unless (g_error_matches (error, GST_RESOURCE_ERROR,
          GST_RESOURCE_ERROR_OPEN_WRITE), "%s", error->message);
  fail_unless (strstr (error->message, "/nonexistent/c.json") != NULL, "%s",
      error->message);
  g_error_free (error);
  g_free (desc);
  g_free (path);

  error = pipeline_error ("videotestsrc num-buffers=2 ! maskrcnnexport ! "
      "fakesink");
  fail_unless (error != NULL);
  fail_unless (strstr (error->message, "location") != NULL, "%s",
      error->message);
  g_error_free (error);
}

GST_END_TEST;

/* A full disk: the first frame's write fails, and the error says so. */
GST_START_TEST (test_error_write)
{
  if (!g_file_test ("/dev/full", G_FILE_TEST_EXISTS))
    return;
  for (int format = 0; format < 2; format++) {
    GError *error = pipeline_error (format == 0 ? "videotestsrc "
        "num-buffers=2 ! maskrcnnexport location=/dev/full ! fakesink"
        : "videotestsrc num-buffers=2 ! maskrcnnexport location=/dev/full "
        "format=coco ! fakesink");
    fail_unless (error != NULL);
    fail_unless (g_error_matches (error, GST_RESOURCE_ERROR,
            GST_RESOURCE_ERROR_WRITE), "%s", error->message);
    fail_unless (strstr (error->message, "/dev/full")
        && strstr (error->message, g_strerror (ENOSPC)), "%s",
        error->message);
    g_error_free (error);
  }
}

GST_END_TEST;

static Suite *
export_suite (void)
{
  Suite *s = suite_create ("maskrcnnexport");
  TCase *tc = tcase_create ("general");
  /* sanitizer and valgrind builds on a busy machine are slow */
  tcase_set_timeout (tc, 600);
  tcase_add_checked_fixture (tc, setup, teardown);
  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_jsonl);
  tcase_add_test (tc, test_polygons);
  tcase_add_test (tc, test_coco);
  tcase_add_test (tc, test_track_ids);
  tcase_add_test (tc, test_two_models);
  tcase_add_test (tc, test_categories_of_two_models);
  tcase_add_test (tc, test_coco_without_eos);
  tcase_add_test (tc, test_error_unwritable);
  tcase_add_test (tc, test_error_write);
  return s;
}

GST_CHECK_MAIN (export);
