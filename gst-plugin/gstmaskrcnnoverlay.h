/* maskrcnnoverlay: draws the GstMaskRcnnMeta of each frame onto it, in
 * place: masks, their contours, boxes and labels. */
#ifndef GST_MASK_RCNN_OVERLAY_H
#define GST_MASK_RCNN_OVERLAY_H

#include <gst/video/gstvideofilter.h>
#include <gst/video/video.h>
#include <pango/pangocairo.h>

G_BEGIN_DECLS

/* What picks an instance's colour. */
typedef enum {
  GST_MASK_RCNN_OVERLAY_COLOUR_CLASS,
  GST_MASK_RCNN_OVERLAY_COLOUR_TRACK,
} GstMaskRcnnOverlayColour;

#define GST_TYPE_MASK_RCNN_OVERLAY (gst_mask_rcnn_overlay_get_type ())
G_DECLARE_FINAL_TYPE (GstMaskRcnnOverlay, gst_mask_rcnn_overlay, GST,
    MASK_RCNN_OVERLAY, GstVideoFilter)

struct _GstMaskRcnnOverlay {
  GstVideoFilter parent;

  /* properties, under the object lock */
  gboolean draw_masks, draw_contours, draw_boxes, draw_labels;
  gdouble mask_alpha;
  guint line_width;
  GstMaskRcnnOverlayColour colour_by;

  /* scratch reused from frame to frame */
  guint8 *scratch;
  gsize scratch_size;
  PangoLayout *layout; /* label text, font sized to font_px */
  int font_px;
};

GST_ELEMENT_REGISTER_DECLARE (maskrcnnoverlay);

G_END_DECLS

#endif
