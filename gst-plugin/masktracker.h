/* Multi-object tracking by mask overlap, without GStreamer: the state and
 * arithmetic behind the maskrcnntracker element.
 *
 * Each frame's detections are matched to the tracks by an optimal
 * assignment (Hungarian algorithm) on 1 - IoU, where the IoU is that of the
 * detection's mask with the track's last mask moved to where the track's
 * constant-velocity motion model puts it (box IoU where a mask is absent
 * or association is by box).  Only pairs of the same class whose IoU
 * reaches min_iou can match.  A new track is tentative until it has been
 * matched confirm_hits times in a row, then it gets the next id of the
 * stream; a confirmed track that goes unmatched is kept, moving with its
 * motion model, for max_lost frames; a tentative one that goes unmatched is
 * dropped. */
#ifndef MASK_TRACKER_H
#define MASK_TRACKER_H

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  MASK_TRACKER_MASK,   /* mask IoU (box IoU for detections without mask) */
  MASK_TRACKER_BOX,    /* box IoU only */
} MaskTrackerAssociation;

typedef struct {
  MaskTrackerAssociation association;
  double min_iou;      /* smallest IoU a match may have, in (0, 1] */
  guint confirm_hits;  /* matches in a row that confirm a track, >= 1 */
  guint max_lost;      /* frames a confirmed track outlives its last match */
} MaskTrackerSettings;

/* One detection: its box (x1, y1, x2, y2) in frame pixels and its mask,
 * mask_width x mask_height bytes at (mask_x, mask_y), a pixel in the object
 * when >= 128; mask NULL: none. */
typedef struct {
  int class_id;
  float box[4];
  int mask_x, mask_y, mask_width, mask_height;
  const guint8 *mask;
} MaskTrackerDetection;

typedef struct _MaskTracker MaskTracker;

/* next_id: where the ids come from, the counter of a stream whose
 * detections several trackers follow (one per model), its owner's to
 * reset; NULL: the tracker's own, from 1. */
MaskTracker *mask_tracker_new (const MaskTrackerSettings *settings,
    guint64 *next_id);
void mask_tracker_free (MaskTracker *tracker);
/* Takes effect from the next update; existing tracks stay. */
void mask_tracker_set_settings (MaskTracker *tracker,
    const MaskTrackerSettings *settings);
/* Forgets every track; its own ids start again from 1 (a new stream). */
void mask_tracker_reset (MaskTracker *tracker);

/* Associates the n detections seen at frame (frame numbers increase; a gap
 * is frames without new evidence, which the motion model bridges) and
 * writes each one's track id to ids[i]: 0 while its track is tentative. */
void mask_tracker_update (MaskTracker *tracker, guint64 frame,
    const MaskTrackerDetection *detections, guint n, guint64 *ids);

/* Tracks held (tentative, confirmed and lost ones), for tests and stats. */
guint mask_tracker_n_tracks (const MaskTracker *tracker);

/* The Hungarian algorithm on a rows x cols cost matrix (row-major):
 * assignment[r] is the column given to row r, or -1, minimising the total
 * cost over a full matching of the smaller side.  work holds
 * mask_tracker_assign_work_size (rows, cols) doubles and ints.  Exposed for
 * tests. */
gsize mask_tracker_assign_work_size (guint rows, guint cols);
void mask_tracker_assign (const double *cost, guint rows, guint cols,
    int *assignment, double *work_d, int *work_i);

G_END_DECLS

#endif
