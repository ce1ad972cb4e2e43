/* Tracking by mask overlap: the motion model, the IoU costs, the Hungarian
 * assignment and the track life cycle (masktracker.h). */
#include "masktracker.h"

#include <math.h>
#include <string.h>

/* The cost of a pair that may not match: more than any full matching of
 * allowed pairs costs (each at most 1), so the assignment takes as many
 * allowed pairs as it can, then the cheapest. */
#define FORBIDDEN 1e9

/* A track's velocity follows its matches with this weight on the newest
 * measurement: one bad box does not throw it off, a turn is followed
 * within a few frames. */
#define VELOCITY_WEIGHT 0.5f

/* A matched box smaller than this share of its track's (by area) shows
 * the object partly hidden, or cut by the frame's edge: evidence that the
 * track goes on, not of its size, place or speed, which stay as predicted
 * (the track keeps the box of the whole object) so that the whole object
 * is found again where it comes out.  An object that really shrinks, going
 * away, does so by less from one analysed frame to the next. */
#define PARTIAL_AREA 0.9

typedef struct {
  guint64 id;                /* 0 while tentative */
  int class_id;
  guint hits;                /* matches in a row */
  guint64 last_frame;        /* of the last match */
  float box[4];              /* at last_frame */
  float velocity[2];         /* the box's move per frame; its size is
                                kept */
  /* the last matched mask, 0/1 per pixel; width 0: none; it keeps its
   * place relative to the box (mask_offset) when the box moves alone */
  int mask_x, mask_y, mask_width, mask_height;
  float mask_offset[2];
  guint8 *mask;
  gsize mask_capacity;
  guint64 mask_area;
} Track;

struct _MaskTracker {
  MaskTrackerSettings settings;
  GArray *tracks;            /* of Track */
  guint64 *next_id;          /* &own_next_id or the stream's shared one */
  guint64 own_next_id;
  /* per-update workspace, grown when a frame needs more, never shrunk */
  double *cost, *work_d;
  int *assignment, *work_i, *det_track;
  /* one stage's part of the costs: its tracks' rows (row_track), the
   * detections left (col_det) */
  double *stage_cost;
  int *row_track, *col_det, *stage_assignment;
  guint64 *det_area;
  gsize cost_size, work_size, det_size, track_size;
};

MaskTracker *
mask_tracker_new (const MaskTrackerSettings *settings, guint64 *next_id)
{
  MaskTracker *t = g_new0 (MaskTracker, 1);
  t->settings = *settings;
  t->tracks = g_array_new (FALSE, TRUE, sizeof (Track));
  t->own_next_id = 1;
  t->next_id = next_id ? next_id : &t->own_next_id;
  return t;
}

static void
track_clear (Track *track)
{
  g_free (track->mask);
  memset (track, 0, sizeof *track);
}

void
mask_tracker_reset (MaskTracker *t)
{
  for (guint i = 0; i < t->tracks->len; i++)
    track_clear (&g_array_index (t->tracks, Track, i));
  g_array_set_size (t->tracks, 0);
  t->own_next_id = 1;
}

void
mask_tracker_free (MaskTracker *t)
{
  if (!t)
    return;
  mask_tracker_reset (t);
  g_array_unref (t->tracks);
  g_free (t->cost);
  g_free (t->work_d);
  g_free (t->assignment);
  g_free (t->work_i);
  g_free (t->det_track);
  g_free (t->det_area);
  g_free (t->stage_cost);
  g_free (t->row_track);
  g_free (t->col_det);
  g_free (t->stage_assignment);
  g_free (t);
}

void
mask_tracker_set_settings (MaskTracker *t, const MaskTrackerSettings *settings)
{
  t->settings = *settings;
}

guint
mask_tracker_n_tracks (const MaskTracker *t)
{
  return t->tracks->len;
}

/* ---- assignment ---------------------------------------------------------- */

gsize
mask_tracker_assign_work_size (guint rows, guint cols)
{
  gsize s = MAX (rows, cols);
  return (gsize) rows * cols + 4 * (s + 1);
}

/* Kuhn-Munkres with potentials, O(n^2 m) for n <= m rows: each row in turn
 * joins the matching along the shortest augmenting path (Dijkstra on the
 * reduced costs).  p[j]: the row (1-based) holding column j; column 0 is
 * the path's root. */
static void
hungarian (const double *a, int n, int m, int *row_col, double *u, double *v,
    double *minv, int *p, int *way, int *used)
{
  for (int j = 0; j <= m; j++) {
    v[j] = 0;
    p[j] = 0;
  }
  for (int i = 0; i <= n; i++)
    u[i] = 0;
  for (int i = 1; i <= n; i++) {
    p[0] = i;
    int j0 = 0;
    for (int j = 0; j <= m; j++) {
      minv[j] = INFINITY;
      used[j] = 0;
    }
    do {
      used[j0] = 1;
      int i0 = p[j0], j1 = 0;
      double delta = INFINITY;
      for (int j = 1; j <= m; j++) {
        if (used[j])
          continue;
        double cur = a[(gsize) (i0 - 1) * m + (j - 1)] - u[i0] - v[j];
        if (cur < minv[j]) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j] < delta) {
          delta = minv[j];
          j1 = j;
        }
      }
      for (int j = 0; j <= m; j++) {
        if (used[j]) {
          u[p[j]] += delta;
          v[j] -= delta;
        } else {
          minv[j] -= delta;
        }
      }
      j0 = j1;
    } while (p[j0] != 0);
    do {
      int j1 = way[j0];
      p[j0] = p[j1];
      j0 = j1;
    } while (j0);
  }
  for (int i = 0; i < n; i++)
    row_col[i] = -1;
  for (int j = 1; j <= m; j++)
    if (p[j])
      row_col[p[j] - 1] = j - 1;
}

void
mask_tracker_assign (const double *cost, guint rows, guint cols,
    int *assignment, double *work_d, int *work_i)
{
  for (guint r = 0; r < rows; r++)
    assignment[r] = -1;
  if (rows == 0 || cols == 0)
    return;
  gsize s = MAX (rows, cols);
  double *a = work_d, *u = a + (gsize) rows * cols, *v = u + s + 1,
      *minv = v + s + 1;
  int *p = work_i, *way = p + s + 1, *used = way + s + 1,
      *row_col = used + s + 1;
  if (rows <= cols) {
    memcpy (a, cost, sizeof (double) * rows * cols);
    hungarian (a, rows, cols, assignment, u, v, minv, p, way, used);
    return;
  }
  /* more rows than columns: assign the columns to rows instead */
  for (guint r = 0; r < rows; r++)
    for (guint c = 0; c < cols; c++)
      a[(gsize) c * rows + r] = cost[(gsize) r * cols + c];
  hungarian (a, cols, rows, row_col, u, v, minv, p, way, used);
  for (guint c = 0; c < cols; c++)
    if (row_col[c] >= 0)
      assignment[row_col[c]] = c;
}

/* ---- costs --------------------------------------------------------------- */

static double
box_iou (const float *a, const float *b)
{
  double iw = MIN (a[2], b[2]) - MAX (a[0], b[0]);
  double ih = MIN (a[3], b[3]) - MAX (a[1], b[1]);
  if (iw <= 0 || ih <= 0)
    return 0;
  double inter = iw * ih;
  double area_a = ((double) a[2] - a[0]) * ((double) a[3] - a[1]);
  double area_b = ((double) b[2] - b[0]) * ((double) b[3] - b[1]);
  double uni = area_a + area_b - inter;
  return uni > 0 ? inter / uni : 0;
}

static guint64
mask_area (const MaskTrackerDetection *d)
{
  guint64 area = 0;
  gsize size = (gsize) d->mask_width * d->mask_height;
  for (gsize i = 0; i < size; i++)
    area += d->mask[i] >= 128;
  return area;
}

/* IoU of the track's mask moved by (dx, dy) with the detection's. */
static double
mask_iou (const Track *tr, int dx, int dy, const MaskTrackerDetection *d,
    guint64 det_area)
{
  int ax = tr->mask_x + dx, ay = tr->mask_y + dy;
  int x0 = MAX (ax, d->mask_x), y0 = MAX (ay, d->mask_y);
  int x1 = MIN (ax + tr->mask_width, d->mask_x + d->mask_width);
  int y1 = MIN (ay + tr->mask_height, d->mask_y + d->mask_height);
  guint64 inter = 0;
  for (int y = y0; y < y1; y++) {
    const guint8 *ra = tr->mask + (gsize) (y - ay) * tr->mask_width - ax;
    const guint8 *rb = d->mask + (gsize) (y - d->mask_y) * d->mask_width
        - d->mask_x;
    for (int x = x0; x < x1; x++)
      inter += ra[x] && rb[x] >= 128;
  }
  guint64 uni = tr->mask_area + det_area - inter;
  return uni ? (double) inter / uni : 0;
}

/* ---- life cycle ---------------------------------------------------------- */

static gboolean
has_mask (const MaskTrackerDetection *d)
{
  return d->mask && d->mask_width > 0 && d->mask_height > 0;
}

static void
track_take (Track *tr, const MaskTrackerDetection *d,
    guint64 frame, guint64 area)
{
  memcpy (tr->box, d->box, sizeof tr->box);
  tr->class_id = d->class_id;
  tr->last_frame = frame;
  tr->mask_width = 0;
  if (!has_mask (d))
    return;
  gsize size = (gsize) d->mask_width * d->mask_height;
  if (size > tr->mask_capacity) {
    tr->mask = g_realloc (tr->mask, size);
    tr->mask_capacity = size;
  }
  for (gsize i = 0; i < size; i++)
    tr->mask[i] = d->mask[i] >= 128;
  tr->mask_x = d->mask_x;
  tr->mask_y = d->mask_y;
  tr->mask_offset[0] = d->mask_x - d->box[0];
  tr->mask_offset[1] = d->mask_y - d->box[1];
  tr->mask_width = d->mask_width;
  tr->mask_height = d->mask_height;
  tr->mask_area = area;
}

static double
box_area (const float *b)
{
  return MAX (0.0, (double) b[2] - b[0]) * MAX (0.0, (double) b[3] - b[1]);
}

/* The track's box at frame: moved at its velocity, its size kept. */
static void
predict (const Track *tr, guint64 frame, float box[4])
{
  double dt = frame > tr->last_frame ? (double) (frame - tr->last_frame) : 0;
  float dx = (float) (tr->velocity[0] * dt), dy = (float) (tr->velocity[1] * dt);
  box[0] = tr->box[0] + dx;
  box[1] = tr->box[1] + dy;
  box[2] = tr->box[2] + dx;
  box[3] = tr->box[3] + dy;
}

/* A matched track takes its detection's box and mask, and learns its
 * speed from the move since its last match: per axis, the move of the
 * box's low edge, its high edge or its centre, whichever is nearest to the
 * move the track expected (an object partly hidden, or cut by the frame's
 * edge, has one edge stopped; one shrinking as it goes away moves both
 * edges inwards).  A detection much smaller than the track (the object
 * partly hidden) only places the track: its box keeps its size and moves
 * by that same measure, the mask with it. */
static void
follow (Track *tr, const MaskTrackerDetection *det, guint64 frame,
    guint64 det_area)
{
  double dt = frame > tr->last_frame ? (double) (frame - tr->last_frame) : 1;
  float moved[2];
  for (int c = 0; c < 2; c++) {
    float low = det->box[c] - tr->box[c], high = det->box[c + 2]
        - tr->box[c + 2], centre = (low + high) / 2;
    float expected = (float) (tr->velocity[c] * dt);
    moved[c] = centre;
    if (tr->hits > 1 && fabsf (low - expected) < fabsf (moved[c] - expected))
      moved[c] = low;
    if (tr->hits > 1 && fabsf (high - expected) < fabsf (moved[c] - expected))
      moved[c] = high;
    float measured = (float) (moved[c] / dt);
    tr->velocity[c] = tr->hits == 1 ? measured
        : (1 - VELOCITY_WEIGHT) * tr->velocity[c] + VELOCITY_WEIGHT * measured;
  }
  double ratio = box_area (det->box) / MAX (box_area (tr->box), 1e-6);
  if (ratio >= PARTIAL_AREA) {
    track_take (tr, det, frame, det_area);
    return;
  }
  for (int c = 0; c < 2; c++) {
    tr->box[c] += moved[c];
    tr->box[c + 2] += moved[c];
  }
  tr->mask_x = (int) lrintf (tr->box[0] + tr->mask_offset[0]);
  tr->mask_y = (int) lrintf (tr->box[1] + tr->mask_offset[1]);
  tr->last_frame = frame;
}

static void
grow (MaskTracker *t, guint n_tracks, guint n)
{
  gsize cost = (gsize) n_tracks * n;
  if (cost > t->cost_size) {
    t->cost = g_renew (double, t->cost, cost);
    t->stage_cost = g_renew (double, t->stage_cost, cost);
    t->cost_size = cost;
  }
  gsize work = mask_tracker_assign_work_size (n_tracks, n);
  if (work > t->work_size) {
    t->work_d = g_renew (double, t->work_d, work);
    t->work_i = g_renew (int, t->work_i, work);
    t->work_size = work;
  }
  if (n > t->det_size) {
    t->det_track = g_renew (int, t->det_track, n);
    t->det_area = g_renew (guint64, t->det_area, n);
    t->col_det = g_renew (int, t->col_det, n);
    t->det_size = n;
  }
  if (n_tracks > t->track_size) {
    t->assignment = g_renew (int, t->assignment, n_tracks);
    t->row_track = g_renew (int, t->row_track, n_tracks);
    t->stage_assignment = g_renew (int, t->stage_assignment, n_tracks);
    t->track_size = n_tracks;
  }
}

/* The optimal assignment of the confirmed (or tentative) tracks to the
 * detections no track has taken yet. */
static void
assign_stage (MaskTracker *t, guint n, gboolean confirmed)
{
  guint rows = 0, cols = 0;
  for (guint k = 0; k < t->tracks->len; k++)
    if ((g_array_index (t->tracks, Track, k).id != 0) == confirmed)
      t->row_track[rows++] = (int) k;
  for (guint d = 0; d < n; d++)
    if (t->det_track[d] < 0)
      t->col_det[cols++] = (int) d;
  for (guint r = 0; r < rows; r++)
    for (guint c = 0; c < cols; c++)
      t->stage_cost[(gsize) r * cols + c] =
          t->cost[(gsize) t->row_track[r] * n + t->col_det[c]];
  mask_tracker_assign (t->stage_cost, rows, cols, t->stage_assignment,
      t->work_d, t->work_i);
  for (guint r = 0; r < rows; r++) {
    int c = t->stage_assignment[r];
    if (c < 0 || t->stage_cost[(gsize) r * cols + c] >= FORBIDDEN)
      continue;
    t->assignment[t->row_track[r]] = t->col_det[c];
    t->det_track[t->col_det[c]] = t->row_track[r];
  }
}

void
mask_tracker_update (MaskTracker *t, guint64 frame,
    const MaskTrackerDetection *dets, guint n, guint64 *ids)
{
  const MaskTrackerSettings *s = &t->settings;
  gboolean by_mask = s->association == MASK_TRACKER_MASK;
  guint n_tracks = t->tracks->len;
  grow (t, n_tracks, n);

  for (guint d = 0; d < n; d++) {
    /* also with association by box: the settings may change mid-stream */
    t->det_area[d] = has_mask (&dets[d]) ? mask_area (&dets[d]) : 0;
    t->det_track[d] = -1;
  }

  /* where each track should be now, and what each pair would cost */
  for (guint k = 0; k < n_tracks; k++) {
    Track *tr = &g_array_index (t->tracks, Track, k);
    float predicted[4];
    predict (tr, frame, predicted);
    int dx = (int) lrintf (predicted[0] - tr->box[0]);
    int dy = (int) lrintf (predicted[1] - tr->box[1]);
    for (guint d = 0; d < n; d++) {
      const MaskTrackerDetection *det = &dets[d];
      double iou = 0;
      if (det->class_id == tr->class_id)
        iou = by_mask && tr->mask_width > 0 && has_mask (det)
            ? mask_iou (tr, dx, dy, det, t->det_area[d])
            : box_iou (predicted, det->box);
      t->cost[(gsize) k * n + d] = iou >= s->min_iou ? 1 - iou : FORBIDDEN;
    }
  }
  /* confirmed tracks choose first: a tentative track born from a stray
   * detection (or from the edge of an object coming out from behind
   * another) does not take a confirmed track's object */
  for (guint k = 0; k < n_tracks; k++)
    t->assignment[k] = -1;
  assign_stage (t, n, TRUE);
  assign_stage (t, n, FALSE);

  /* matched tracks follow their detection; the others age */
  for (guint k = 0; k < n_tracks; k++) {
    Track *tr = &g_array_index (t->tracks, Track, k);
    int d = t->assignment[k];
    if (d < 0)
      continue;
    follow (tr, &dets[d], frame, t->det_area[d]);
    tr->hits++;
    if (!tr->id && tr->hits >= s->confirm_hits)
      tr->id = (*t->next_id)++;
    t->det_track[d] = (int) k;
    ids[d] = tr->id;
  }
  for (guint k = n_tracks; k-- > 0;) {
    Track *tr = &g_array_index (t->tracks, Track, k);
    if (tr->last_frame == frame)
      continue;
    tr->hits = 0;
    if (!tr->id || frame - tr->last_frame > s->max_lost) {
      track_clear (tr);
      g_array_remove_index_fast (t->tracks, k);
    }
  }
  for (guint d = 0; d < n; d++) {
    if (t->det_track[d] >= 0)
      continue;
    Track tr = { 0 };
    track_take (&tr, &dets[d], frame, t->det_area[d]);
    tr.hits = 1;
    if (s->confirm_hits <= 1)
      tr.id = (*t->next_id)++;
    g_array_append_val (t->tracks, tr);
    ids[d] = tr.id;
  }
}
