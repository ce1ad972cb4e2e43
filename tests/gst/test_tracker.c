/* The tracker: its assignment against brute force, the track life cycle on
 * hand-made detections (birth, confirmation, occlusion, re-appearance,
 * crossing paths, classes), and the maskrcnntracker element (ids in the
 * meta and the ROI meta, repeated results, resets, memory over a long
 * run). */
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/video/video.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "gstmaskrcnnmeta.h"
#include "masktracker.h"

#define W 320
#define H 240

/* ---- assignment ---------------------------------------------------------- */

/* The least total cost of a full matching of the smaller side, by trying
 * every one: rows <= cols here. */
static double
brute_force (const double *cost, int rows, int cols, int row, guint used)
{
  if (row == rows)
    return 0;
  double best = INFINITY;
  for (int c = 0; c < cols; c++) {
    if (used & (1u << c))
      continue;
    double rest = brute_force (cost, rows, cols, row + 1, used | (1u << c));
    best = MIN (best, cost[row * cols + c] + rest);
  }
  return best;
}

static double
assigned_cost (const double *cost, int rows, int cols, const int *assignment)
{
  double total = 0;
  guint used = 0;
  int n = 0;
  for (int r = 0; r < rows; r++) {
    if (assignment[r] < 0)
      continue;
    fail_unless (assignment[r] < cols);
    fail_if (used & (1u << assignment[r]), "column %d assigned twice",
        assignment[r]);
    used |= 1u << assignment[r];
    total += cost[r * cols + assignment[r]];
    n++;
  }
  fail_unless_equals_int (n, MIN (rows, cols));
  return total;
}

GST_START_TEST (test_assign_beats_greedy)
{
  /* greedy takes (0, 0) first and then pays 1 for row 1 */
  const double cost[9] = { 0.1, 0.2, 1, 0.15, 1, 1, 1, 1, 0.3 };
  int assignment[3];
  gsize work = mask_tracker_assign_work_size (3, 3);
  double *wd = g_new (double, work);
  int *wi = g_new (int, work);
  mask_tracker_assign (cost, 3, 3, assignment, wd, wi);
  fail_unless_equals_int (assignment[0], 1);
  fail_unless_equals_int (assignment[1], 0);
  fail_unless_equals_int (assignment[2], 2);
  g_free (wd);
  g_free (wi);
}

GST_END_TEST;

GST_START_TEST (test_assign_matches_brute_force)
{
  GRand *rand = g_rand_new_with_seed (7);
  for (int trial = 0; trial < 300; trial++) {
    int rows = g_rand_int_range (rand, 1, 7), cols = g_rand_int_range (rand,
        1, 7);
    double cost[36], transposed[36];
    for (int i = 0; i < rows * cols; i++)
      cost[i] = g_rand_int_range (rand, 0, 4) == 0 ? 1e9
          : g_rand_double (rand);
    for (int r = 0; r < rows; r++)
      for (int c = 0; c < cols; c++)
        transposed[c * rows + r] = cost[r * cols + c];
    int assignment[6];
    gsize work = mask_tracker_assign_work_size (rows, cols);
    double *wd = g_new (double, work);
    int *wi = g_new (int, work);
    mask_tracker_assign (cost, rows, cols, assignment, wd, wi);
    double got = assigned_cost (cost, rows, cols, assignment);
    double want = rows <= cols ? brute_force (cost, rows, cols, 0, 0)
        : brute_force (transposed, cols, rows, 0, 0);
    fail_unless (fabs (got - want) <= 1e-9 * MAX (1, want),
        "%dx%d: total %g, the best is %g", rows, cols, got, want);
    g_free (wd);
    g_free (wi);
  }
  g_rand_free (rand);
}

GST_END_TEST;

/* ---- life cycle ---------------------------------------------------------- */

/* A hand-made object: a box and, where part is set, a mask filling only the
 * top (1) or bottom (2) half of the box, or all of it (3). */
typedef struct {
  int class_id;
  float x, y, size;
  int part;
} Obj;

typedef struct {
  MaskTrackerDetection d[8];
  guint8 masks[8][64 * 64];
} Frame;

static void
make_frame (Frame *f, const Obj *objs, guint n)
{
  for (guint i = 0; i < n; i++) {
    const Obj *o = &objs[i];
    int s = (int) o->size;
    g_assert (s <= 64);
    MaskTrackerDetection *d = &f->d[i];
    *d = (MaskTrackerDetection) {
      .class_id = o->class_id,
      .box = { o->x, o->y, o->x + s, o->y + s },
      .mask_x = (int) lrintf (o->x), .mask_y = (int) lrintf (o->y),
      .mask_width = s, .mask_height = s,
      .mask = o->part ? f->masks[i] : NULL,
    };
    for (int y = 0; y < s; y++)
      for (int x = 0; x < s; x++)
        f->masks[i][y * s + x] = (o->part & 1 && y < s / 2)
            || (o->part & 2 && y >= s / 2) ? 255 : 0;
  }
}

static MaskTracker *
new_tracker (MaskTrackerAssociation association, guint confirm,
    guint max_lost)
{
  MaskTrackerSettings s = { association, 0.2, confirm, max_lost };
  return mask_tracker_new (&s, NULL);
}

static void
step (MaskTracker *t, guint64 frame, const Obj *objs, guint n, guint64 *ids)
{
  static Frame f;
  make_frame (&f, objs, n);
  mask_tracker_update (t, frame, f.d, n, ids);
}

GST_START_TEST (test_birth_and_confirmation)
{
  MaskTracker *t = new_tracker (MASK_TRACKER_MASK, 3, 30);
  guint64 id;
  for (int f = 0; f < 10; f++) {
    Obj o = { 1, 20.0f + 5 * f, 50, 40, 3 };
    step (t, f, &o, 1, &id);
    /* tentative for two frames, then id 1 for good */
    fail_unless_equals_uint64 (id, f < 2 ? 0 : 1);
  }
  fail_unless_equals_int (mask_tracker_n_tracks (t), 1);
  /* a detection seen once and never again is dropped, without an id */
  Obj pair[2] = { { 1, 70, 50, 40, 3 }, { 2, 200, 150, 30, 3 } };
  guint64 ids[2];
  step (t, 10, pair, 2, ids);
  fail_unless_equals_uint64 (ids[0], 1);
  fail_unless_equals_uint64 (ids[1], 0);
  step (t, 11, pair, 1, ids);
  fail_unless_equals_int (mask_tracker_n_tracks (t), 1);
  mask_tracker_free (t);
}

GST_END_TEST;

/* An object moving at 6 px a frame, hidden for `hidden` frames, then seen
 * again where its motion puts it. */
static guint64
reappear (guint hidden, guint max_lost)
{
  MaskTracker *t = new_tracker (MASK_TRACKER_MASK, 2, max_lost);
  guint64 id = 0, first = 0;
  guint f = 0;
  for (; f < 8; f++) {
    Obj o = { 1, 10.0f + 6 * f, 60, 40, 3 };
    step (t, f, &o, 1, &id);
  }
  first = id;
  fail_unless (first > 0);
  for (; f < 8 + hidden; f++)
    step (t, f, NULL, 0, NULL);
  Obj o = { 1, 10.0f + 6 * f, 60, 40, 3 };
  step (t, f, &o, 1, &id);
  step (t, f + 1, &o, 1, &id);
  mask_tracker_free (t);
  return id == first ? 0 : id;
}

GST_START_TEST (test_occlusion_and_reappearance)
{
  /* hidden 10 frames, kept 30: the same id, 36 px on from where it hid */
  fail_unless_equals_uint64 (reappear (10, 30), 0);
  /* hidden longer than kept: a new track, a new id */
  fail_unless_equals_uint64 (reappear (10, 5), 2);
}

GST_END_TEST;

/* An object moving right at 6 px a frame passes behind a wall (x 150 to
 * 260): seen shrinking, then not at all for 12 frames, then growing out of
 * the other side.  The shrinking boxes must not teach the track a wrong
 * size or speed. */
GST_START_TEST (test_partly_hidden)
{
  for (int by_mask = 0; by_mask < 2; by_mask++) {
    MaskTracker *t = new_tracker (by_mask ? MASK_TRACKER_MASK
        : MASK_TRACKER_BOX, 2, 30);
    guint64 id, first = 0;
    int frames_with_id = 0, seen = 0;
    for (int f = 0; f < 50; f++) {
      float x0 = 10.0f + 6 * f, x1 = x0 + 40;
      float v0 = x0, v1 = x1;      /* the visible part */
      if (x1 > 150 && x0 < 150)
        v1 = 150;
      else if (x0 >= 150 && x1 <= 260)
        v1 = v0;
      else if (x0 < 260 && x1 > 260)
        v0 = 260;
      if (v1 - v0 < 2) {
        step (t, f, NULL, 0, NULL);
        continue;
      }
      /* a square seen in part: its box and mask cut at the wall */
      Frame fr;
      Obj o = { 1, x0, 60, 40, 3 };
      make_frame (&fr, &o, 1);
      int w = (int) lrintf (v1 - v0), skip = (int) lrintf (v0 - x0);
      guint8 cut[40 * 40];
      for (int y = 0; y < 40; y++)
        memcpy (cut + y * w, fr.masks[0] + y * 40 + skip, w);
      fr.d[0].box[0] = v0;
      fr.d[0].box[2] = v1;
      fr.d[0].mask_x += skip;
      fr.d[0].mask_width = w;
      fr.d[0].mask = cut;
      mask_tracker_update (t, f, fr.d, 1, &id);
      seen++;
      if (!first)
        first = id;
      frames_with_id += id != 0;
      fail_unless (id == 0 || id == first, "%s: frame %d has id %"
          G_GUINT64_FORMAT ", first %" G_GUINT64_FORMAT,
          by_mask ? "mask" : "box", f, id, first);
    }
    fail_unless (first == 1 && frames_with_id >= seen - 3, "%d of %d",
        frames_with_id, seen);
    mask_tracker_free (t);
  }
}

GST_END_TEST;

/* Two objects of one class meet, their boxes all but coinciding, and turn
 * back; one fills the top half of its box, the other the bottom half.
 * Returns whether each kept its id. */
static gboolean
crossing_keeps_ids (MaskTrackerAssociation association)
{
  MaskTracker *t = new_tracker (association, 1, 30);
  guint64 ids[2], a = 0, b = 0;
  gboolean kept = TRUE;
  for (int f = 0; f < 20; f++) {
    /* towards each other at 4 px a frame until frame 10, then back */
    int k = f <= 10 ? f : 20 - f;
    Obj objs[2] = { { 1, 60.0f + 4 * k, 80, 40, 1 },
      { 1, 144.0f - 4 * k, 80, 40, 2 } };
    step (t, f, objs, 2, ids);
    if (f == 0) {
      a = ids[0];
      b = ids[1];
    }
    kept = kept && ids[0] == a && ids[1] == b;
  }
  fail_unless (a && b && a != b);
  mask_tracker_free (t);
  return kept;
}

GST_START_TEST (test_crossing_paths)
{
  /* the masks never overlap, so no swap; the boxes predicted to go on
   * overlap the other object's more than their own, so box IoU swaps */
  fail_unless (crossing_keeps_ids (MASK_TRACKER_MASK));
  fail_if (crossing_keeps_ids (MASK_TRACKER_BOX));
}

GST_END_TEST;

GST_START_TEST (test_class_kept)
{
  MaskTracker *t = new_tracker (MASK_TRACKER_MASK, 1, 30);
  guint64 id;
  Obj o = { 1, 100, 100, 40, 3 };
  step (t, 0, &o, 1, &id);
  fail_unless_equals_uint64 (id, 1);
  /* the same place, another class: another object */
  o.class_id = 2;
  step (t, 1, &o, 1, &id);
  fail_unless_equals_uint64 (id, 2);
  /* detections without masks match by box */
  Obj boxes[2] = { { 1, 102, 100, 40, 0 }, { 2, 101, 100, 40, 0 } };
  guint64 ids[2];
  step (t, 2, boxes, 2, ids);
  fail_unless_equals_uint64 (ids[0], 1);
  fail_unless_equals_uint64 (ids[1], 2);
  mask_tracker_free (t);
}

GST_END_TEST;

GST_START_TEST (test_tracks_bounded)
{
  /* objects born at random and moving at random for 10 000 frames */
  MaskTracker *t = new_tracker (MASK_TRACKER_MASK, 3, 30);
  GRand *rand = g_rand_new_with_seed (3);
  guint most = 0;
  for (int f = 0; f < 10000; f++) {
    Obj objs[8];
    guint n = g_rand_int_range (rand, 0, 9);
    for (guint i = 0; i < n; i++)
      objs[i] = (Obj) { g_rand_int_range (rand, 1, 4),
        (float) g_rand_double_range (rand, 0, W - 40),
        (float) g_rand_double_range (rand, 0, H - 40), 40,
        g_rand_int_range (rand, 1, 4) };
    guint64 ids[8];
    step (t, f, objs, n, ids);
    most = MAX (most, mask_tracker_n_tracks (t));
  }
  /* at most the detections of the last 31 frames */
  fail_unless (most <= 8 * 31, "%u tracks held", most);
  g_rand_free (rand);
  mask_tracker_free (t);
}

GST_END_TEST;

/* ---- the element --------------------------------------------------------- */

static GstHarness *
new_harness (const gchar *properties)
{
  gchar *launch = g_strdup_printf ("maskrcnntracker %s", properties);
  GstHarness *h = gst_harness_new_parse (launch);
  g_free (launch);
  gst_harness_set_src_caps_str (h, "video/x-raw, format=RGB, width=320, "
      "height=240, framerate=30/1");
  return h;
}

/* maskrcnn's metas for objs on buffer: a GstMaskRcnnMeta of `model` (NULL:
 * unknown) and an ROI meta per detection (ROI id = detection index), the
 * results computed on frame result_frame. */
static void
add_results (GstBuffer *buffer, const Obj *objs, guint n, guint64 frame,
    guint64 result_frame, const gchar *model)
{
  GstMaskRcnnMeta *meta = gst_buffer_add_mask_rcnn_meta (buffer, W, H);
  meta->frame_number = frame;
  meta->result_frame_number = result_frame;
  meta->repeated = frame != result_frame;
  gst_mask_rcnn_meta_set_source (meta, NULL, model);
  Frame f;
  make_frame (&f, objs, n);
  for (guint i = 0; i < n; i++) {
    const MaskTrackerDetection *d = &f.d[i];
    float w = d->box[2] - d->box[0], h = d->box[3] - d->box[1];
    gst_mask_rcnn_meta_add_detection (meta, d->class_id, "thing", 0.9f,
        d->box[0], d->box[1], w, h, d->mask_x, d->mask_y, d->mask_width,
        d->mask_height, d->mask);
    GstVideoRegionOfInterestMeta *roi =
        gst_buffer_add_video_region_of_interest_meta (buffer, "thing",
        (guint) d->box[0], (guint) d->box[1], (guint) w, (guint) h);
    roi->id = i;
    gst_video_region_of_interest_meta_add_param (roi,
        gst_structure_new ("detection", "label_id", G_TYPE_INT,
            d->class_id, "model", G_TYPE_STRING, model, NULL));
  }
}

static GstBuffer *
frame_with (const Obj *objs, guint n, guint64 frame, guint64 result_frame)
{
  GstBuffer *buffer = gst_buffer_new_allocate (NULL, W * H * 3, NULL);
  GST_BUFFER_PTS (buffer) = frame * GST_SECOND / 30;
  add_results (buffer, objs, n, frame, result_frame, NULL);
  return buffer;
}

/* The track id of each detection out of the element, and checks that the
 * ROI metas carry the same as DL Streamer's object_id. */
static void
pull_ids (GstHarness *h, guint64 *ids, guint n)
{
  GstBuffer *out = gst_harness_pull (h);
  GstMaskRcnnMeta *meta = gst_buffer_get_mask_rcnn_meta (out);
  fail_unless (meta != NULL);
  fail_unless_equals_int (meta->n_detections, n);
  for (guint i = 0; i < n; i++)
    ids[i] = gst_mask_rcnn_detection_get_track_id (&meta->detections[i]);
  gpointer state = NULL;
  GstMeta *m;
  guint rois = 0;
  while ((m = gst_buffer_iterate_meta_filtered (out, &state,
              GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE))) {
    GstVideoRegionOfInterestMeta *roi = (GstVideoRegionOfInterestMeta *) m;
    GstStructure *s = gst_video_region_of_interest_meta_get_param (roi,
        "object_id");
    gint id = 0;
    fail_unless_equals_int (s != NULL, ids[roi->id] != 0);
    if (s)
      fail_unless (gst_structure_get_int (s, "id", &id));
    fail_unless_equals_uint64 ((guint64) id, ids[roi->id]);
    rois++;
  }
  fail_unless_equals_int (rois, n);
  gst_buffer_unref (out);
}

/* Behind two chained maskrcnn elements (a meta per model, the same class
 * ids and places in both): each model's detections are tracked on their
 * own, with ids unique in the stream, and each ROI gets the id of its own
 * model's detection. */
GST_START_TEST (test_element_two_models)
{
  GstHarness *h = new_harness ("confirm-frames=1");
  for (int f = 0; f < 4; f++) {
    Obj people[2] = { { 1, 20.0f + 4 * f, 40, 40, 3 },
      { 1, 200.0f - 4 * f, 150, 50, 3 } };
    Obj cars[1] = { { 1, 20.0f + 4 * f, 40, 40, 3 } };
    GstBuffer *in = gst_buffer_new_allocate (NULL, W * H * 3, NULL);
    add_results (in, people, 2, f, f, "people.safetensors");
    /* the second model's results are a frame older from frame 2 on */
    add_results (in, cars, 1, f, f < 2 ? f : f - 1, "cars.safetensors");
    gst_harness_push (h, in);
    GstBuffer *out = gst_harness_pull (h);
    guint64 ids[3];
    guint k = 0;
    gpointer state = NULL;
    GstMeta *m;
    while ((m = gst_buffer_iterate_meta_filtered (out, &state,
                GST_MASK_RCNN_META_API_TYPE))) {
      GstMaskRcnnMeta *meta = (GstMaskRcnnMeta *) m;
      for (guint i = 0; i < meta->n_detections; i++)
        ids[k++] = meta->detections[i].track_id;
    }
    fail_unless_equals_int (k, 3);
    /* people 1 and 2, the car 3, every frame */
    fail_unless_equals_uint64 (ids[0], 1);
    fail_unless_equals_uint64 (ids[1], 2);
    fail_unless_equals_uint64 (ids[2], 3);
    guint rois = 0;
    state = NULL;
    while ((m = gst_buffer_iterate_meta_filtered (out, &state,
                GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE))) {
      GstVideoRegionOfInterestMeta *roi = (GstVideoRegionOfInterestMeta *) m;
      const gchar *model = gst_structure_get_string
          (gst_video_region_of_interest_meta_get_param (roi, "detection"),
          "model");
      gint id = 0;
      fail_unless (gst_structure_get_int
          (gst_video_region_of_interest_meta_get_param (roi, "object_id"),
              "id", &id));
      fail_unless_equals_int (id, g_str_equal (model, "cars.safetensors")
          ? 3 : roi->id + 1);
      rois++;
    }
    fail_unless_equals_int (rois, 3);
    gst_buffer_unref (out);
  }

  /* the second model's frame numbers go back (it restarted): every track
   * starts again before any id is given, so ids stay unique on the frame */
  Obj people[2] = { { 1, 40, 40, 40, 3 }, { 1, 180, 150, 50, 3 } };
  Obj cars[1] = { { 1, 40, 40, 40, 3 } };
  GstBuffer *in = gst_buffer_new_allocate (NULL, W * H * 3, NULL);
  add_results (in, people, 2, 4, 4, "people.safetensors");
  add_results (in, cars, 1, 4, 0, "cars.safetensors");
  GstBuffer *out = gst_harness_push_and_pull (h, in);
  guint64 ids[3];
  guint k = 0;
  gpointer state = NULL;
  GstMeta *m;
  while ((m = gst_buffer_iterate_meta_filtered (out, &state,
              GST_MASK_RCNN_META_API_TYPE)))
    for (guint i = 0; i < ((GstMaskRcnnMeta *) m)->n_detections; i++)
      ids[k++] = ((GstMaskRcnnMeta *) m)->detections[i].track_id;
  fail_unless_equals_int (k, 3);
  fail_unless (ids[0] != ids[1] && ids[0] != ids[2] && ids[1] != ids[2],
      "ids %" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT,
      ids[0], ids[1], ids[2]);
  gst_buffer_unref (out);

  /* one frame with the same model twice, then frames with it once: its
   * ROIs are tagged again */
  in = gst_buffer_new_allocate (NULL, W * H * 3, NULL);
  add_results (in, people, 2, 5, 5, "people.safetensors");
  add_results (in, cars, 1, 5, 5, "people.safetensors");
  gst_buffer_unref (gst_harness_push_and_pull (h, in));
  in = gst_buffer_new_allocate (NULL, W * H * 3, NULL);
  add_results (in, people, 2, 6, 6, "people.safetensors");
  out = gst_harness_push_and_pull (h, in);
  guint tagged = 0;
  state = NULL;
  while ((m = gst_buffer_iterate_meta_filtered (out, &state,
              GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE)))
    tagged += gst_video_region_of_interest_meta_get_param
        ((GstVideoRegionOfInterestMeta *) m, "object_id") != NULL;
  fail_unless_equals_int (tagged, 2);
  gst_buffer_unref (out);
  gst_harness_teardown (h);
}

GST_END_TEST;

GST_START_TEST (test_element_ids)
{
  GstHarness *h = new_harness ("confirm-frames=2");
  guint64 ids[2];
  for (int f = 0; f < 6; f++) {
    Obj objs[2] = { { 1, 20.0f + 4 * f, 40, 40, 3 },
      { 2, 200.0f - 4 * f, 150, 50, 3 } };
    gst_harness_push (h, frame_with (objs, 2, f, f));
    pull_ids (h, ids, 2);
    fail_unless_equals_uint64 (ids[0], f == 0 ? 0 : 1);
    fail_unless_equals_uint64 (ids[1], f == 0 ? 0 : 2);
  }
  /* a frame without results passes untouched */
  gst_harness_push (h, gst_buffer_new_allocate (NULL, W * H * 3, NULL));
  GstBuffer *out = gst_harness_pull (h);
  fail_if (gst_buffer_get_mask_rcnn_meta (out));
  gst_buffer_unref (out);
  gst_harness_teardown (h);
}

GST_END_TEST;

GST_START_TEST (test_element_repeated_results)
{
  GstHarness *h = new_harness ("confirm-frames=3");
  guint64 id;
  Obj o = { 1, 50, 50, 40, 3 };
  /* the results of frame 0 repeated on frames 1 to 5 (interval=6, or the
   * live mode) are one piece of evidence: the track stays tentative */
  for (int f = 0; f < 6; f++) {
    gst_harness_push (h, frame_with (&o, 1, f, 0));
    pull_ids (h, &id, 1);
    fail_unless_equals_uint64 (id, 0);
  }
  /* new results on frames 6 and 12 confirm it; frames between repeat */
  for (int f = 6; f < 18; f++) {
    guint64 result = f - f % 6;
    Obj moved = { 1, 50.0f + result, 50, 40, 3 };
    gst_harness_push (h, frame_with (&moved, 1, f, result));
    pull_ids (h, &id, 1);
    fail_unless_equals_uint64 (id, f < 12 ? 0 : 1);
  }
  gst_harness_teardown (h);
}

GST_END_TEST;

GST_START_TEST (test_element_restarts)
{
  GstHarness *h = new_harness ("confirm-frames=1");
  guint64 ids[2];
  Obj objs[2] = { { 1, 20, 40, 40, 3 }, { 2, 200, 150, 50, 3 } };
  gst_harness_push (h, frame_with (objs, 2, 0, 0));
  pull_ids (h, ids, 2);
  fail_unless (ids[0] == 1 && ids[1] == 2);
  /* a flush: tracks and ids start again */
  fail_unless (gst_harness_push_event (h, gst_event_new_flush_start ()));
  fail_unless (gst_harness_push_event (h, gst_event_new_flush_stop (TRUE)));
  GstSegment segment;
  gst_segment_init (&segment, GST_FORMAT_TIME);
  fail_unless (gst_harness_push_event (h, gst_event_new_segment (&segment)));
  Obj swapped[2] = { objs[1], objs[0] };
  gst_harness_push (h, frame_with (swapped, 2, 0, 0));
  pull_ids (h, ids, 2);
  fail_unless (ids[0] == 1 && ids[1] == 2);
  /* other caps */
  gst_harness_set_src_caps_str (h, "video/x-raw, format=RGB, width=320, "
      "height=240, framerate=15/1");
  gst_harness_push (h, frame_with (objs, 2, 1, 1));
  pull_ids (h, ids, 2);
  fail_unless (ids[0] == 1 && ids[1] == 2);
  /* frame numbers going back (a new stream) */
  gst_harness_push (h, frame_with (objs, 2, 2, 2));
  pull_ids (h, ids, 2);
  gst_harness_push (h, frame_with (swapped, 2, 0, 0));
  pull_ids (h, ids, 2);
  fail_unless (ids[0] == 1 && ids[1] == 2);
  gst_harness_teardown (h);
}

GST_END_TEST;

static gsize
resident_kib (void)
{
  gchar *text = NULL;
  gsize kib = 0;
  if (g_file_get_contents ("/proc/self/statm", &text, NULL, NULL)) {
    guint64 pages = 0, resident = 0;
    if (sscanf (text, "%" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT, &pages,
            &resident) == 2)
      kib = resident * (sysconf (_SC_PAGESIZE) / 1024);
  }
  g_free (text);
  return kib;
}

GST_START_TEST (test_element_soak)
{
  /* 10 000 frames of objects coming, moving and going: memory flat */
  GstHarness *h = new_harness ("");
  GRand *rand = g_rand_new_with_seed (11);
  gsize after_warmup = 0;
  for (int f = 0; f < 10000; f++) {
    Obj objs[6];
    guint n = g_rand_int_range (rand, 0, 7);
    for (guint i = 0; i < n; i++) {
      /* each slot an object moving across, replaced every 300 frames */
      int life = (f + 50 * i) % 300;
      objs[i] = (Obj) { 1 + i % 3, (float) (life % (W - 40)),
        (float) (i * 30 % (H - 40)), 40, 1 + i % 3 };
    }
    gst_harness_push (h, frame_with (objs, n, f, f));
    gst_buffer_unref (gst_harness_pull (h));
    if (f == 1000)
      after_warmup = resident_kib ();
  }
  gsize end = resident_kib ();
  /* AddressSanitizer holds freed memory in quarantine, so resident memory
   * grows there; LeakSanitizer checks for leaks instead */
#ifdef __SANITIZE_ADDRESS__
  gboolean sanitized = TRUE;
#else
  gboolean sanitized = FALSE;
#endif
  fail_unless (sanitized || end <= after_warmup + 1024, "resident %zu KiB at "
      "frame 1000, %zu KiB at 10 000", after_warmup, end);
  g_rand_free (rand);
  gst_harness_teardown (h);
}

GST_END_TEST;

static Suite *
tracker_suite (void)
{
  Suite *s = suite_create ("maskrcnntracker");
  TCase *tc = tcase_create ("general");
  tcase_set_timeout (tc, 600);
  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_assign_beats_greedy);
  tcase_add_test (tc, test_assign_matches_brute_force);
  tcase_add_test (tc, test_birth_and_confirmation);
  tcase_add_test (tc, test_occlusion_and_reappearance);
  tcase_add_test (tc, test_partly_hidden);
  tcase_add_test (tc, test_crossing_paths);
  tcase_add_test (tc, test_class_kept);
  tcase_add_test (tc, test_tracks_bounded);
  tcase_add_test (tc, test_element_ids);
  tcase_add_test (tc, test_element_two_models);
  tcase_add_test (tc, test_element_repeated_results);
  tcase_add_test (tc, test_element_restarts);
  tcase_add_test (tc, test_element_soak);
  return s;
}

GST_CHECK_MAIN (tracker);
