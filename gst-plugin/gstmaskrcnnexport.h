/* maskrcnnexport: writes the GstMaskRcnnMeta of each buffer to a file, as
 * JSON Lines (one object per frame, as frames pass), as a COCO results
 * array (at EOS) or as MOTChallenge tracking lines; buffers pass through
 * untouched. */
#ifndef GST_MASK_RCNN_EXPORT_H
#define GST_MASK_RCNN_EXPORT_H

#include <stdio.h>

#include <gst/base/gstbasetransform.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

typedef enum {
  GST_MASK_RCNN_EXPORT_FORMAT_JSONL,
  GST_MASK_RCNN_EXPORT_FORMAT_COCO,
  GST_MASK_RCNN_EXPORT_FORMAT_MOT,
} GstMaskRcnnExportFormat;

typedef enum {
  GST_MASK_RCNN_EXPORT_MASK_RLE,
  GST_MASK_RCNN_EXPORT_MASK_POLYGON,
} GstMaskRcnnExportMaskEncoding;

#define GST_TYPE_MASK_RCNN_EXPORT (gst_mask_rcnn_export_get_type ())
G_DECLARE_FINAL_TYPE (GstMaskRcnnExport, gst_mask_rcnn_export, GST,
    MASK_RCNN_EXPORT, GstBaseTransform)

struct _GstMaskRcnnExport {
  GstBaseTransform parent;

  /* properties, under the object lock */
  gchar *location;
  gchar *categories_location;
  GstMaskRcnnExportFormat format;
  GstMaskRcnnExportMaskEncoding mask_encoding;

  /* from start to stop: the properties as they were at start */
  gchar *path, *categories_path;
  GstMaskRcnnExportFormat active_format;
  GstMaskRcnnExportMaskEncoding active_encoding;
  FILE *file, *categories_file;
  guint64 frame;          /* index of the next buffer in the stream */
  JsonArray *results;     /* coco: every detection so far */
  /* the classes seen, each model's apart (chained maskrcnn elements may
   * number their classes alike): "model\nid" -> ExportCategory */
  GHashTable *categories;
  gboolean pending;       /* results or categories not written yet */
  gboolean file_written, categories_written;
};

GST_ELEMENT_REGISTER_DECLARE (maskrcnnexport);

G_END_DECLS

#endif
