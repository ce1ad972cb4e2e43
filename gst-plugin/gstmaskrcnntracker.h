/* maskrcnntracker: gives each detection of the GstMaskRcnnMetas a track id
 * that stays the same while its object stays in view, matching detections
 * to tracks by mask overlap (masktracker.h). */
#ifndef GST_MASK_RCNN_TRACKER_H
#define GST_MASK_RCNN_TRACKER_H

#include <gst/base/gstbasetransform.h>

#include "masktracker.h"

G_BEGIN_DECLS

#define GST_TYPE_MASK_RCNN_TRACKER (gst_mask_rcnn_tracker_get_type ())
G_DECLARE_FINAL_TYPE (GstMaskRcnnTracker, gst_mask_rcnn_tracker, GST,
    MASK_RCNN_TRACKER, GstBaseTransform)

struct _GstMaskRcnnTracker {
  GstBaseTransform parent;

  /* properties, under the object lock; read at each frame with new
   * results */
  MaskTrackerSettings settings;

  /* Owned by the streaming thread (transform_ip, sink_event, set_caps),
   * and by start/stop, which run while no buffer flows: no lock. */
  GPtrArray *models;      /* ModelTracks: one per model whose results the
                             stream carries (chained maskrcnn elements) */
  guint64 next_id;        /* the stream's next track id, for all of them */
  GArray *detections;     /* MaskTrackerDetection, an update's input */
  GArray *frame_metas;    /* FrameMeta: the frame's metas, per buffer */
};

GST_ELEMENT_REGISTER_DECLARE (maskrcnntracker);

G_END_DECLS

#endif
