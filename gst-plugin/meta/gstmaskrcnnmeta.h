/* GstMaskRcnnMeta: Mask R-CNN detections attached to a video buffer.
 *
 * The maskrcnn element adds one to every buffer it analyses, also when it
 * found nothing, so a consumer can tell "nothing found" (n_detections 0)
 * from "not analysed" (no meta).  Applications read it from a pad probe:
 *
 *   GstMaskRcnnMeta *meta = gst_buffer_get_mask_rcnn_meta (buffer);
 *   for (guint i = 0; meta && i < meta->n_detections; i++) {
 *     const GstMaskRcnnDetection *d = &meta->detections[i];
 *     ... d->class_name, d->score, d->x, d->y, d->width, d->height,
 *         d->mask[row * d->mask_width + col] ...
 *   }
 *
 * Chained maskrcnn elements (two models on one stream) add a meta each,
 * told apart by model_name: gst_buffer_get_mask_rcnn_meta_for_model()
 * picks one, gst_buffer_iterate_mask_rcnn_meta() walks them all
 * (bindings: gst_buffer_get_mask_rcnn_metas()).
 *
 * Bindings (Python through GObject-Introspection) use the accessor
 * functions below instead of the arrays: an array whose length is another
 * field, or the product of two, cannot be described to
 * GObject-Introspection (PyGObject fails or aborts on such fields), so
 * `detections` and `mask` sit behind "private" markers, which only the
 * introspection scanner reads: for bindings they are not writable and
 * read as placeholders; for C they are public, as above.
 *
 * Applications only read the meta; the producer fills it.  For bindings
 * the installed typelib marks the geometry read-only (frame size,
 * n_detections, boxes and mask rectangles: meta/gir_read_only.py, as
 * g-ir-scanner has no annotation for it), since a wrong value would send
 * readers out of bounds; PyGObject still replaces string fields (the old
 * string leaks).
 */
#ifndef GST_MASK_RCNN_META_H
#define GST_MASK_RCNN_META_H

#include <gst/gst.h>

G_BEGIN_DECLS

#define GST_MASK_RCNN_META_API_TYPE (gst_mask_rcnn_meta_api_get_type ())
#define GST_MASK_RCNN_META_INFO (gst_mask_rcnn_meta_get_info ())

typedef struct _GstMaskRcnnMeta GstMaskRcnnMeta;
typedef struct _GstMaskRcnnDetection GstMaskRcnnDetection;

/**
 * GstMaskRcnnDetection:
 * @class_id: the model's class index (background is 0 and never reported)
 * @class_name: the class name, owned by the meta
 * @score: confidence in [0, 1]
 * @x: left edge of the box, in frame pixels
 * @y: top edge of the box, in frame pixels
 * @width: box width, in frame pixels
 * @height: box height, in frame pixels
 * @mask_x: frame column of the mask's first column
 * @mask_y: frame row of the mask's first row
 * @mask_width: mask columns (the box's extent in whole pixels, clipped to
 *   the frame)
 * @mask_height: mask rows
 * @mask: mask_width x mask_height bytes, row-major, one per frame
 *   pixel: 0 or 255 (binary), or 0..255 probabilities (soft, see
 *   #GstMaskRcnnMeta.soft_masks); pixels outside this rectangle are 0; %NULL
 *   when the rectangle is empty.  Bindings read it with
 *   gst_mask_rcnn_detection_get_mask() or, pasted into a whole frame,
 *   gst_mask_rcnn_detection_dup_full_mask()
 * @track_id: the object's identity across frames, given by the
 *   maskrcnntracker element: the same for every detection of one object
 *   while it is tracked, numbered from 1 per stream; 0 when not tracked
 *   (no tracker, or a track not yet confirmed)
 *
 * One detected instance, owned by its #GstMaskRcnnMeta (name and mask
 * included); read-only for applications.
 */
struct _GstMaskRcnnDetection {
  gint class_id;
  gchar *class_name;
  gfloat score;
  gfloat x, y, width, height;
  gint mask_x, mask_y;
  guint mask_width, mask_height;
  /* public for C; hidden from bindings (see the top of this file) */
  /*< private >*/
  guint8 *mask;
  /*< public >*/
  guint64 track_id;
};

/**
 * GstMaskRcnnMeta:
 * @meta: parent #GstMeta
 * @frame_width: width of the frame the coordinates refer to
 * @frame_height: height of the frame the coordinates refer to
 * @repeated: %TRUE when the model did not run on this frame and the
 *   results were computed on an earlier frame (@result_frame_number):
 *   frames skipped by `interval`, frames that came late (QoS) and, in the
 *   live mode, every frame, since results arrive after their frame
 * @soft_masks: %TRUE when masks hold probabilities (0..255) rather than
 *   0/255
 * @inference_time: time the analysis took (of the frame it was made on)
 * @n_detections: number of detections, sorted by score, descending
 * @detections: the detections, @n_detections of them (bindings use
 *   gst_mask_rcnn_meta_get_n_detections() and
 *   gst_mask_rcnn_meta_get_detection())
 * @frame_number: this frame's number in its stream, from 0 at the stream's
 *   start and after each flush (seek)
 * @result_frame_number: number of the frame the results were computed on
 *   (equal to @frame_number unless @repeated)
 * @result_pts: presentation timestamp of that frame
 * @result_age: how much older than this frame that frame is (this frame's
 *   timestamp minus @result_pts; 0 unless @repeated; %GST_CLOCK_TIME_NONE
 *   when a frame has no timestamp)
 * @stream_id: (nullable): the stream-id of the stream the frame belongs to
 *   (as in the stream-start event), owned by the meta; %NULL when unknown
 * @model_name: (nullable): which model computed the results (tells apart
 *   the results of two chained maskrcnn elements), owned by the meta;
 *   %NULL when unknown.  Both are set with gst_mask_rcnn_meta_set_source()
 *
 * Detections of one video frame.  Results are never carried across a caps
 * change, a flush or a new stream: a frame with no results that apply to it
 * carries no #GstMaskRcnnMeta.  Read-only for applications.
 */
struct _GstMaskRcnnMeta {
  GstMeta meta;
  guint frame_width, frame_height;
  gboolean repeated;
  gboolean soft_masks;
  GstClockTime inference_time;
  guint n_detections;
  /* public for C; hidden from bindings (see the top of this file) */
  /*< private >*/
  GstMaskRcnnDetection *detections;
  /*< public >*/
  guint64 frame_number;
  guint64 result_frame_number;
  GstClockTime result_pts;
  GstClockTime result_age;
  gchar *stream_id;
  gchar *model_name;
  /*< private >*/
  guint capacity;
};

GType gst_mask_rcnn_meta_api_get_type (void);
const GstMetaInfo *gst_mask_rcnn_meta_get_info (void);

GstMaskRcnnMeta *gst_buffer_get_mask_rcnn_meta (GstBuffer *buffer);
GstMaskRcnnMeta *gst_buffer_iterate_mask_rcnn_meta (GstBuffer *buffer,
    gpointer *state);
GList *gst_buffer_get_mask_rcnn_metas (GstBuffer *buffer);
GstMaskRcnnMeta *gst_buffer_get_mask_rcnn_meta_for_model (GstBuffer *buffer,
    const gchar *model_name);
GstMaskRcnnMeta *gst_buffer_add_mask_rcnn_meta (GstBuffer *buffer,
    guint frame_width, guint frame_height);

GstMaskRcnnDetection *gst_mask_rcnn_meta_add_detection (GstMaskRcnnMeta *meta,
    gint class_id, const gchar *class_name, gfloat score, gfloat x, gfloat y,
    gfloat width, gfloat height, gint mask_x, gint mask_y, guint mask_width,
    guint mask_height, const guint8 *mask);
GstMaskRcnnDetection *gst_mask_rcnn_meta_add_detection_len (
    GstMaskRcnnMeta *meta, gint class_id, const gchar *class_name,
    gfloat score, gfloat x, gfloat y, gfloat width, gfloat height,
    gint mask_x, gint mask_y, guint mask_width, guint mask_height,
    const guint8 *mask, gsize mask_size);

void gst_mask_rcnn_meta_set_source (GstMaskRcnnMeta *meta,
    const gchar *stream_id, const gchar *model_name);
const gchar *gst_mask_rcnn_meta_get_stream_id (GstMaskRcnnMeta *meta);
const gchar *gst_mask_rcnn_meta_get_model_name (GstMaskRcnnMeta *meta);

guint gst_mask_rcnn_meta_get_n_detections (GstMaskRcnnMeta *meta);
GstMaskRcnnDetection *gst_mask_rcnn_meta_get_detection (GstMaskRcnnMeta *meta,
    guint index);

const gchar *gst_mask_rcnn_detection_get_class_name (
    GstMaskRcnnDetection *detection);
void gst_mask_rcnn_detection_get_box (GstMaskRcnnDetection *detection,
    gfloat *x, gfloat *y, gfloat *width, gfloat *height);
guint64 gst_mask_rcnn_detection_get_track_id (
    GstMaskRcnnDetection *detection);
void gst_mask_rcnn_detection_get_mask_rect (GstMaskRcnnDetection *detection,
    gint *x, gint *y, guint *width, guint *height);
const guint8 *gst_mask_rcnn_detection_get_mask (
    GstMaskRcnnDetection *detection, gsize *size);
void gst_mask_rcnn_detection_get_full_mask (GstMaskRcnnDetection *detection,
    guint frame_width, guint frame_height, guint8 *out);
guint8 *gst_mask_rcnn_detection_dup_full_mask (
    GstMaskRcnnDetection *detection, guint frame_width, guint frame_height,
    gsize *size);

G_END_DECLS

#endif
