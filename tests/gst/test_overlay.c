/* GstHarness tests of maskrcnnoverlay: on a flat frame carrying a
 * hand-made detection, exactly the pixels under the mask and the box
 * outline change, in RGB layouts and in YUV 4:2:0. */
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/video/video.h>
#include <string.h>

#include "gstmaskrcnnmeta.h"

#define W 160
#define H 120
/* the detection: box [20, 80) x [30, 70); an elliptic mask in the
 * rectangle [25, 75) x [35, 65) */
#define BOX_X 20
#define BOX_Y 30
#define BOX_W 60
#define BOX_H 40
#define MASK_X 25
#define MASK_Y 35
#define MASK_W 50
#define MASK_H 30
#define LINE 2

static const char *const formats[] = { "RGB", "BGR", "RGBx", "BGRx", "xRGB",
  "xBGR", "RGBA", "BGRA", "ARGB", "ABGR", "NV12", "I420",
};

static gboolean
in_mask (int x, int y)
{
  double dx = (x - MASK_X - MASK_W / 2.0 + 0.5) / (MASK_W / 2.0);
  double dy = (y - MASK_Y - MASK_H / 2.0 + 0.5) / (MASK_H / 2.0);
  return x >= MASK_X && x < MASK_X + MASK_W && y >= MASK_Y
      && y < MASK_Y + MASK_H && dx * dx + dy * dy <= 1.0;
}

static gboolean
on_box_outline (int x, int y)
{
  gboolean inside = x >= BOX_X && x < BOX_X + BOX_W && y >= BOX_Y
      && y < BOX_Y + BOX_H;
  gboolean core = x >= BOX_X + LINE && x < BOX_X + BOX_W - LINE
      && y >= BOX_Y + LINE && y < BOX_Y + BOX_H - LINE;
  return inside && !core;
}

/* A meta with the detection, moved dx to the right. */
static void
add_detection_at (GstBuffer *buffer, int frame_w, int frame_h, int dx)
{
  GstMaskRcnnMeta *meta = gst_buffer_add_mask_rcnn_meta (buffer, frame_w,
      frame_h);
  guint8 mask[MASK_W * MASK_H];
  for (int y = 0; y < MASK_H; y++)
    for (int x = 0; x < MASK_W; x++)
      mask[y * MASK_W + x] = in_mask (MASK_X + x, MASK_Y + y) ? 255 : 0;
  gst_mask_rcnn_meta_add_detection (meta, 3, "wedge", 0.875f, BOX_X + dx,
      BOX_Y, BOX_W, BOX_H, MASK_X + dx, MASK_Y, MASK_W, MASK_H, mask);
}

static void
add_detection (GstBuffer *buffer, int frame_w, int frame_h)
{
  add_detection_at (buffer, frame_w, frame_h, 0);
}

static GstBuffer *
flat_frame (const GstVideoInfo *info)
{
  GstBuffer *buffer = gst_buffer_new_allocate (NULL, info->size, NULL);
  /* mid grey in RGB; Y = U = V = 110 in YUV (a greenish grey) */
  gst_buffer_memset (buffer, 0, 110, info->size);
  return buffer;
}

static GstHarness *
overlay_harness (const char *format, const char *properties,
    GstVideoInfo *info)
{
  gchar *desc = g_strdup_printf ("maskrcnnoverlay %s", properties);
  gchar *caps = g_strdup_printf ("video/x-raw,format=%s,width=%d,height=%d,"
      "framerate=30/1", format, W, H);
  GstHarness *h = gst_harness_new_parse (desc);
  gst_harness_set_src_caps_str (h, caps);
  GstCaps *c = gst_caps_from_string (caps);
  gst_video_info_from_caps (info, c);
  gst_caps_unref (c);
  g_free (caps);
  g_free (desc);
  return h;
}

/* Whether the frame pixel (x, y) differs between a and b in any colour
 * component (luma only for YUV; alpha and padding bytes ignored). */
static gboolean
pixel_changed (GstVideoFrame *a, GstVideoFrame *b, int comp, int x, int y)
{
  const guint8 *pa = GST_VIDEO_FRAME_COMP_DATA (a, comp);
  const guint8 *pb = GST_VIDEO_FRAME_COMP_DATA (b, comp);
  int stride = GST_VIDEO_FRAME_COMP_STRIDE (a, comp);
  int ps = GST_VIDEO_FRAME_COMP_PSTRIDE (a, comp);
  return pa[y * stride + x * ps] != pb[y * stride + x * ps];
}

static gboolean
frame_changed_at (GstVideoFrame *a, GstVideoFrame *b, int x, int y)
{
  int n = GST_VIDEO_INFO_IS_RGB (&a->info) ? 3 : 1;
  for (int c = 0; c < n; c++)
    if (pixel_changed (a, b, c, x, y))
      return TRUE;
  return FALSE;
}

static void
check_only_mask_and_box_changed (const char *format, GstVideoFrame *in,
    GstVideoFrame *out)
{
  int expected = 0, changed = 0;
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) {
      gboolean want = in_mask (x, y) || on_box_outline (x, y);
      gboolean got = frame_changed_at (in, out, x, y);
      fail_unless (want == got, "%s: pixel (%d, %d) %s", format, x, y,
          want ? "not drawn" : "changed outside the mask and box");
      expected += want;
      changed += got;
    }
  fail_unless (expected > 1000 && changed == expected);
  if (GST_VIDEO_INFO_IS_YUV (&in->info)) {
    /* a chroma sample changes where it covers a drawn pixel, only there */
    gboolean some = FALSE;
    for (int c = 1; c < 3; c++)
      for (int cy = 0; cy < H / 2; cy++)
        for (int cx = 0; cx < W / 2; cx++) {
          gboolean covered = FALSE;
          for (int k = 0; k < 4; k++) {
            int x = 2 * cx + (k & 1), y = 2 * cy + (k >> 1);
            covered |= in_mask (x, y) || on_box_outline (x, y);
          }
          gboolean got = pixel_changed (in, out, c, cx, cy);
          fail_unless (!got || covered, "%s: chroma (%d, %d) changed",
              format, cx, cy);
          some |= got;
        }
    fail_unless (some, "%s: no chroma drawn", format);
  }
}

GST_START_TEST (test_exact_pixels_every_format)
{
  for (gsize f = 0; f < G_N_ELEMENTS (formats); f++) {
    GstVideoInfo info;
    GstHarness *h = overlay_harness (formats[f], "draw-labels=false "
        "line-width=2", &info);
    GstBuffer *in = flat_frame (&info);
    GstBuffer *reference = gst_buffer_copy_deep (in);
    add_detection (in, W, H);
    GstBuffer *out = gst_harness_push_and_pull (h, in);
    fail_unless (out != NULL);
    GstVideoFrame a, b;
    fail_unless (gst_video_frame_map (&a, &info, reference, GST_MAP_READ));
    fail_unless (gst_video_frame_map (&b, &info, out, GST_MAP_READ));
    check_only_mask_and_box_changed (formats[f], &a, &b);
    gst_video_frame_unmap (&a);
    gst_video_frame_unmap (&b);
    gst_buffer_unref (reference);
    gst_buffer_unref (out);
    gst_harness_teardown (h);
  }
}
GST_END_TEST;

/* Each part can be switched off on its own. */
GST_START_TEST (test_switches)
{
  GstVideoInfo info;
  GstHarness *h = overlay_harness ("RGB", "draw-labels=false "
      "draw-boxes=false line-width=2", &info);
  GstBuffer *in = flat_frame (&info);
  GstBuffer *reference = gst_buffer_copy_deep (in);
  add_detection (in, W, H);
  GstBuffer *out = gst_harness_push_and_pull (h, in);
  GstVideoFrame a, b;
  gst_video_frame_map (&a, &info, reference, GST_MAP_READ);
  gst_video_frame_map (&b, &info, out, GST_MAP_READ);
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++)
      fail_unless (frame_changed_at (&a, &b, x, y) == in_mask (x, y));
  gst_video_frame_unmap (&b);
  gst_buffer_unref (out);

  /* masks off too: nothing left to draw */
  GstElement *overlay = gst_harness_find_element (h, "maskrcnnoverlay");
  g_object_set (overlay, "draw-masks", FALSE, NULL);
  gst_object_unref (overlay);
  in = flat_frame (&info);
  add_detection (in, W, H);
  out = gst_harness_push_and_pull (h, in);
  gst_video_frame_map (&b, &info, out, GST_MAP_READ);
  fail_unless (memcmp (GST_VIDEO_FRAME_PLANE_DATA (&a, 0),
          GST_VIDEO_FRAME_PLANE_DATA (&b, 0), info.size) == 0);
  gst_video_frame_unmap (&a);
  gst_video_frame_unmap (&b);
  gst_buffer_unref (reference);
  gst_buffer_unref (out);
  gst_harness_teardown (h);
}
GST_END_TEST;

/* The label goes just above the box; nothing else moves. */
GST_START_TEST (test_label)
{
  GstVideoInfo info;
  GstHarness *h = overlay_harness ("I420", "line-width=2", &info);
  GstBuffer *in = flat_frame (&info);
  GstBuffer *reference = gst_buffer_copy_deep (in);
  add_detection (in, W, H);
  GstBuffer *out = gst_harness_push_and_pull (h, in);
  GstVideoFrame a, b;
  gst_video_frame_map (&a, &info, reference, GST_MAP_READ);
  gst_video_frame_map (&b, &info, out, GST_MAP_READ);
  int above = 0;
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) {
      if (!frame_changed_at (&a, &b, x, y) || in_mask (x, y)
          || on_box_outline (x, y))
        continue;
      fail_unless (y < BOX_Y && y >= BOX_Y - 20 && x >= BOX_X,
          "pixel (%d, %d) changed outside the label's place", x, y);
      above++;
    }
  fail_unless (above > 200, "no label drawn (%d pixels)", above);
  gst_video_frame_unmap (&a);
  gst_video_frame_unmap (&b);
  gst_buffer_unref (reference);
  gst_buffer_unref (out);
  gst_harness_teardown (h);
}
GST_END_TEST;

/* The mask centre's colour and the number of label pixels drawn for a
 * detection with track_id under the given properties. */
static void
draw_tracked (const char *properties, guint64 track_id, guint8 rgb[3],
    int *label_pixels)
{
  GstVideoInfo info;
  GstHarness *h = overlay_harness ("RGB", properties, &info);
  GstBuffer *in = flat_frame (&info);
  GstBuffer *reference = gst_buffer_copy_deep (in);
  add_detection (in, W, H);
  gst_buffer_get_mask_rcnn_meta (in)->detections[0].track_id = track_id;
  GstBuffer *out = gst_harness_push_and_pull (h, in);
  GstVideoFrame a, b;
  gst_video_frame_map (&a, &info, reference, GST_MAP_READ);
  gst_video_frame_map (&b, &info, out, GST_MAP_READ);
  const guint8 *p = GST_VIDEO_FRAME_PLANE_DATA (&b, 0);
  int stride = GST_VIDEO_FRAME_PLANE_STRIDE (&b, 0);
  memcpy (rgb, p + (MASK_Y + MASK_H / 2) * stride + (MASK_X + MASK_W / 2) * 3,
      3);
  *label_pixels = 0;
  for (int y = 0; y < BOX_Y; y++)
    for (int x = 0; x < W; x++)
      *label_pixels += frame_changed_at (&a, &b, x, y);
  gst_video_frame_unmap (&a);
  gst_video_frame_unmap (&b);
  gst_buffer_unref (reference);
  gst_buffer_unref (out);
  gst_harness_teardown (h);
}

/* colour-by=track: a colour per track id, the class colour while
 * untracked; the label says "#id" first. */
GST_START_TEST (test_colour_by_track)
{
  guint8 by_class[3], tracked[3], other[3], untracked[3];
  int label_plain, label_tracked, ignore;
  draw_tracked ("line-width=2", 5, by_class, &label_tracked);
  draw_tracked ("line-width=2", 0, untracked, &label_plain);
  fail_unless (memcmp (by_class, untracked, 3) == 0);
  fail_unless (label_tracked > label_plain + 50, "label pixels: %d with "
      "\"#5\", %d without", label_tracked, label_plain);
  draw_tracked ("line-width=2 colour-by=track", 5, tracked, &ignore);
  draw_tracked ("line-width=2 colour-by=track", 6, other, &ignore);
  fail_if (memcmp (tracked, by_class, 3) == 0);
  fail_if (memcmp (tracked, other, 3) == 0);
  draw_tracked ("line-width=2 colour-by=track", 0, untracked, &ignore);
  fail_unless (memcmp (untracked, by_class, 3) == 0);
}
GST_END_TEST;

/* Two metas (chained maskrcnn elements, the same class id in both): both
 * drawn, in different colours; pixels outside the two masks untouched. */
GST_START_TEST (test_two_models)
{
  GstVideoInfo info;
  GstHarness *h = overlay_harness ("RGB", "draw-boxes=false "
      "draw-labels=false draw-contours=false", &info);
  GstBuffer *in = flat_frame (&info);
  GstBuffer *reference = gst_buffer_copy_deep (in);
  const int dx = 70;
  add_detection_at (in, W, H, 0);
  add_detection_at (in, W, H, dx);
  GstBuffer *out = gst_harness_push_and_pull (h, in);
  GstVideoFrame a, b;
  gst_video_frame_map (&a, &info, reference, GST_MAP_READ);
  gst_video_frame_map (&b, &info, out, GST_MAP_READ);
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) {
      gboolean want = in_mask (x, y) || in_mask (x - dx, y);
      fail_unless_equals_int (frame_changed_at (&a, &b, x, y), want);
    }
  const guint8 *p = GST_VIDEO_FRAME_PLANE_DATA (&b, 0);
  int stride = GST_VIDEO_FRAME_PLANE_STRIDE (&b, 0);
  const guint8 *first = p + (MASK_Y + MASK_H / 2) * stride
      + (MASK_X + MASK_W / 2) * 3;
  fail_if (memcmp (first, first + dx * 3, 3) == 0,
      "both models' class 3 drawn in one colour");
  gst_video_frame_unmap (&a);
  gst_video_frame_unmap (&b);
  gst_buffer_unref (reference);
  gst_buffer_unref (out);
  gst_harness_teardown (h);
}
GST_END_TEST;

/* Labels grow with the frame: readable at 480p and at 2160p. */
GST_START_TEST (test_label_size_follows_frame)
{
  static const int sizes[][3] = { {640, 480, 12}, {3840, 2160, 48} };
  for (gsize k = 0; k < G_N_ELEMENTS (sizes); k++) {
    int w = sizes[k][0], h = sizes[k][1];
    gchar *caps = g_strdup_printf ("video/x-raw,format=I420,width=%d,"
        "height=%d,framerate=30/1", w, h);
    GstHarness *hr = gst_harness_new_parse ("maskrcnnoverlay draw-masks=false "
        "draw-boxes=false");
    gst_harness_set_src_caps_str (hr, caps);
    GstVideoInfo info;
    GstCaps *c = gst_caps_from_string (caps);
    gst_video_info_from_caps (&info, c);
    gst_caps_unref (c);
    GstBuffer *in = flat_frame (&info);
    GstMaskRcnnMeta *meta = gst_buffer_add_mask_rcnn_meta (in, w, h);
    gst_mask_rcnn_meta_add_detection (meta, 1, "circle", 0.5f, w / 4, h / 2,
        w / 4, h / 4, 0, 0, 0, 0, NULL);
    GstBuffer *out = gst_harness_push_and_pull (hr, in);
    GstVideoFrame f;
    gst_video_frame_map (&f, &info, out, GST_MAP_READ);
    /* rows and columns of the label band above the box (luma != flat) */
    int top = h, bottom = -1, left = w, right = -1;
    const guint8 *y = GST_VIDEO_FRAME_COMP_DATA (&f, 0);
    int stride = GST_VIDEO_FRAME_COMP_STRIDE (&f, 0);
    for (int r = 0; r < h; r++)
      for (int col = 0; col < w; col++)
        if (y[r * stride + col] != 110) {
          top = MIN (top, r);
          bottom = MAX (bottom, r);
          left = MIN (left, col);
          right = MAX (right, col);
        }
    gst_video_frame_unmap (&f);
    fail_unless (bottom == h / 2 - 1, "%dx%d: label ends at row %d", w, h,
        bottom);
    fail_unless (bottom - top + 1 >= sizes[k][2], "%dx%d: label %d px high",
        w, h, bottom - top + 1);
    fail_unless (right - left + 1 > 3 * (bottom - top + 1),
        "%dx%d: label %d px wide", w, h, right - left + 1);
    gst_buffer_unref (out);
    gst_harness_teardown (hr);
    g_free (caps);
  }
}
GST_END_TEST;

/* Frames without detections, or with detections for another frame size,
 * pass untouched. */
GST_START_TEST (test_untouched)
{
  GstVideoInfo info;
  GstHarness *h = overlay_harness ("NV12", "", &info);
  for (int with_meta = 0; with_meta < 2; with_meta++) {
    GstBuffer *in = flat_frame (&info);
    GstBuffer *reference = gst_buffer_copy_deep (in);
    if (with_meta)
      add_detection (in, 2 * W, 2 * H);
    GstBuffer *out = gst_harness_push_and_pull (h, in);
    GstMapInfo a, b;
    gst_buffer_map (reference, &a, GST_MAP_READ);
    gst_buffer_map (out, &b, GST_MAP_READ);
    fail_unless (memcmp (a.data, b.data, a.size) == 0);
    gst_buffer_unmap (reference, &a);
    gst_buffer_unmap (out, &b);
    gst_buffer_unref (reference);
    gst_buffer_unref (out);
  }
  gst_harness_teardown (h);
}
GST_END_TEST;

static Suite *
overlay_suite (void)
{
  Suite *s = suite_create ("maskrcnnoverlay");
  TCase *tc = tcase_create ("general");
  /* sanitizer and valgrind builds on a busy machine are slow */
  tcase_set_timeout (tc, 600);
  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_exact_pixels_every_format);
  tcase_add_test (tc, test_switches);
  tcase_add_test (tc, test_label);
  tcase_add_test (tc, test_colour_by_track);
  tcase_add_test (tc, test_two_models);
  tcase_add_test (tc, test_label_size_follows_frame);
  tcase_add_test (tc, test_untouched);
  return s;
}

GST_CHECK_MAIN (overlay);
