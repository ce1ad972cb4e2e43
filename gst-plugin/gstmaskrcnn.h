/* maskrcnn: runs Mask R-CNN on video frames and attaches the detections as
 * GstMaskRcnnMeta (and GstVideoRegionOfInterestMeta); pixels pass through
 * untouched. */
#ifndef GST_MASK_RCNN_H
#define GST_MASK_RCNN_H

#include <gst/base/gstbasetransform.h>
#include <gst/video/video.h>

#include "mrcnn.h"

G_BEGIN_DECLS

#define GST_TYPE_MASK_RCNN (gst_mask_rcnn_get_type ())
G_DECLARE_FINAL_TYPE (GstMaskRcnn, gst_mask_rcnn, GST, MASK_RCNN,
    GstBaseTransform)

typedef enum {
  GST_MASK_RCNN_MODE_AUTO,
  GST_MASK_RCNN_MODE_EVERY_FRAME,
  GST_MASK_RCNN_MODE_LIVE,
} GstMaskRcnnMode;

/* A loaded model, its engine and class names (gstmaskrcnn.c). */
typedef struct _GstMaskRcnnAnalyzer GstMaskRcnnAnalyzer;

/* What the worker is doing with the frame handed to it. */
typedef enum {
  GST_MASK_RCNN_JOB_NONE,    /* nothing: a frame may be handed over */
  GST_MASK_RCNN_JOB_READY,   /* handed over, not taken yet */
  GST_MASK_RCNN_JOB_RUNNING, /* being analysed */
} GstMaskRcnnJobState;

typedef struct {
  MrcnnImage image;
  GstBuffer *rgb;       /* holds image.data */
  guint64 frame_number;
  GstClockTime pts;
  guint epoch;
  gboolean live;        /* handed over in live mode */
} GstMaskRcnnJob;

struct _GstMaskRcnn {
  GstBaseTransform parent;

  /* properties, under the object lock */
  gchar *model_path;
  gchar *config_path;
  gchar *labels_path;
  gchar *classes;
  MrcnnBackendKind backend;
  gint device_id;
  MrcnnPrecision precision;
  gfloat score_threshold, nms_threshold, mask_threshold;
  gint max_detections;
  guint interval;
  gboolean soft_masks;
  gboolean roi_meta;
  GstMaskRcnnMode mode;
  gboolean qos;
  gint threads;
  gchar *engine_id;
  guint batch_size;
  GstClockTime batch_timeout;
  guint lanes;
  gboolean thresholds_changed, classes_changed;
  guint settings_serial; /* bumped when a model property changes */
  gboolean reload_pending; /* a model property changed, the notifications
                              not dispatched yet */
  /* also under the object lock: QoS and latency */
  GstClockTime earliest_time; /* running time; frames before it are late */
  GstClockTime latency;       /* what the LATENCY query adds */
  gboolean upstream_live;

  /* shared by the streaming thread, the worker and the loader: under
   * `lock`, see "Threads" in gstmaskrcnn.c */
  GMutex lock;
  GCond cond;
  GThread *worker, *loader;
  gboolean quit, loading, reload_wanted, failed, flushing;
  GstMaskRcnnAnalyzer *next;   /* loaded in the background, not yet used */
  GstMaskRcnnJobState job_state;
  GstMaskRcnnJob job;
  guint64 jobs_submitted, jobs_done;
  guint epoch;
  struct {
    gboolean valid;
    guint epoch;
    MrcnnResult result;
    GstMaskRcnnAnalyzer *analyzer; /* whose class names the result uses */
    guint64 frame_number;
    GstClockTime pts;
    GstClockTime inference_time;
  } latest;

  /* the worker's own while it runs (and start/stop's when it does not) */
  GstMaskRcnnAnalyzer *analyzer;
  MrcnnResult work_result;
  gchar *applied_classes;       /* the last valid `classes` */
  gboolean *keep_class;         /* its filter on the analyzer's model */
  MrcnnFrameSettings frame_settings; /* thresholds, filter, threads */

  /* the streaming thread's own (window_*: under the object lock) */
  guint64 frame_count;     /* frames of this stream */
  gchar *stream_id;        /* upstream's, from STREAM_START */
  guint skip_left;         /* frames `interval` still skips */
  gboolean stream_started; /* upstream_live queried for this stream */
  guint64 analysed, skipped_late;
  GstClockTime window_max; /* longest frame of the latency window */
  guint window_frames;
  GstVideoInfo info;
  GstVideoConverter *converter; /* NULL when the input is packed RGB */
  GstVideoInfo rgb_info;
  GstBuffer *rgb_buffer;        /* the RGB frame handed to the worker */
};

GST_ELEMENT_REGISTER_DECLARE (maskrcnn);

G_END_DECLS

#endif
