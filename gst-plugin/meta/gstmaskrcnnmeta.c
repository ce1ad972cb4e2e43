/* GstMaskRcnnMeta: see gstmaskrcnnmeta.h.  The meta owns its detections,
 * their class names and masks; it is deep-copied with the buffer, rescaled
 * (boxes and masks) by scaling elements such as videoscale, and dropped by
 * any other transformation it cannot follow. */
#include "gstmaskrcnnmeta.h"

#include <gst/video/video.h>
#include <math.h>
#include <string.h>

static gboolean
meta_init (GstMeta *meta, gpointer params, GstBuffer *buffer)
{
  GstMaskRcnnMeta *m = (GstMaskRcnnMeta *) meta;
  m->frame_width = m->frame_height = 0;
  m->repeated = m->soft_masks = FALSE;
  m->inference_time = GST_CLOCK_TIME_NONE;
  m->frame_number = m->result_frame_number = 0;
  m->result_pts = m->result_age = GST_CLOCK_TIME_NONE;
  m->n_detections = m->capacity = 0;
  m->detections = NULL;
  return TRUE;
}

static void
meta_free (GstMeta *meta, GstBuffer *buffer)
{
  GstMaskRcnnMeta *m = (GstMaskRcnnMeta *) meta;
  for (guint i = 0; i < m->n_detections; i++) {
    g_free (m->detections[i].class_name);
    g_free (m->detections[i].mask);
  }
  g_free (m->detections);
  m->detections = NULL;
  m->n_detections = m->capacity = 0;
}

static GstMaskRcnnMeta *
add_empty_like (GstBuffer *buffer, const GstMaskRcnnMeta *src, guint width,
    guint height)
{
  GstMaskRcnnMeta *m = gst_buffer_add_mask_rcnn_meta (buffer, width, height);
  m->repeated = src->repeated;
  m->soft_masks = src->soft_masks;
  m->inference_time = src->inference_time;
  m->frame_number = src->frame_number;
  m->result_frame_number = src->result_frame_number;
  m->result_pts = src->result_pts;
  m->result_age = src->result_age;
  return m;
}

/* Nearest-neighbour resampling of one detection to a frame scaled by
 * (sx, sy): the mask rectangle's edges are scaled and every new pixel takes
 * the value under its centre. */
static void
add_scaled (GstMaskRcnnMeta *dst, const GstMaskRcnnDetection *d, double sx,
    double sy)
{
  int x0 = (int) floor (d->mask_x * sx), y0 = (int) floor (d->mask_y * sy);
  int x1 = (int) ceil ((d->mask_x + (double) d->mask_width) * sx);
  int y1 = (int) ceil ((d->mask_y + (double) d->mask_height) * sy);
  x1 = MIN (x1, (int) dst->frame_width);
  y1 = MIN (y1, (int) dst->frame_height);
  guint w = x1 > x0 ? x1 - x0 : 0, h = y1 > y0 ? y1 - y0 : 0;
  GstMaskRcnnDetection *n = gst_mask_rcnn_meta_add_detection (dst,
      d->class_id, d->class_name, d->score, d->x * sx, d->y * sy,
      d->width * sx, d->height * sy, x0, y0, w, h, NULL);
  if (!d->mask || !d->mask_width || !d->mask_height)
    return;
  for (guint r = 0; r < h; r++) {
    int sr = (int) floor ((y0 + r + 0.5) / sy) - d->mask_y;
    sr = CLAMP (sr, 0, (int) d->mask_height - 1);
    for (guint c = 0; c < w; c++) {
      int sc = (int) floor ((x0 + c + 0.5) / sx) - d->mask_x;
      sc = CLAMP (sc, 0, (int) d->mask_width - 1);
      n->mask[r * w + c] = d->mask[(gsize) sr * d->mask_width + sc];
    }
  }
}

static gboolean
meta_transform (GstBuffer *dest, GstMeta *meta, GstBuffer *buffer,
    GQuark type, gpointer data)
{
  const GstMaskRcnnMeta *src = (const GstMaskRcnnMeta *) meta;

  if (GST_META_TRANSFORM_IS_COPY (type)) {
    GstMaskRcnnMeta *m = add_empty_like (dest, src, src->frame_width,
        src->frame_height);
    for (guint i = 0; i < src->n_detections; i++) {
      const GstMaskRcnnDetection *d = &src->detections[i];
      gst_mask_rcnn_meta_add_detection (m, d->class_id, d->class_name,
          d->score, d->x, d->y, d->width, d->height, d->mask_x, d->mask_y,
          d->mask_width, d->mask_height, d->mask);
    }
    return TRUE;
  }

  if (GST_VIDEO_META_TRANSFORM_IS_SCALE (type)) {
    const GstVideoMetaTransform *t = data;
    guint w = GST_VIDEO_INFO_WIDTH (t->out_info);
    guint h = GST_VIDEO_INFO_HEIGHT (t->out_info);
    if (!src->frame_width || !src->frame_height || !w || !h)
      return FALSE;
    double sx = (double) w / src->frame_width;
    double sy = (double) h / src->frame_height;
    GstMaskRcnnMeta *m = add_empty_like (dest, src, w, h);
    for (guint i = 0; i < src->n_detections; i++)
      add_scaled (m, &src->detections[i], sx, sy);
    return TRUE;
  }

  /* crops, rotations and anything else would leave the coordinates wrong */
  return FALSE;
}

GType
gst_mask_rcnn_meta_api_get_type (void)
{
  static GType type = 0;
  static const gchar *tags[] = { GST_META_TAG_VIDEO_STR,
    GST_META_TAG_VIDEO_SIZE_STR, GST_META_TAG_VIDEO_ORIENTATION_STR, NULL };

  if (g_once_init_enter (&type)) {
    GType t = gst_meta_api_type_register ("GstMaskRcnnMetaAPI", tags);
    g_once_init_leave (&type, t);
  }
  return type;
}

const GstMetaInfo *
gst_mask_rcnn_meta_get_info (void)
{
  static const GstMetaInfo *info = NULL;

  if (g_once_init_enter ((GstMetaInfo **) &info)) {
    const GstMetaInfo *i = gst_meta_register (GST_MASK_RCNN_META_API_TYPE,
        "GstMaskRcnnMeta", sizeof (GstMaskRcnnMeta), meta_init, meta_free,
        meta_transform);
    g_once_init_leave ((GstMetaInfo **) &info, (GstMetaInfo *) i);
  }
  return info;
}

/**
 * gst_buffer_get_mask_rcnn_meta:
 * @buffer: a #GstBuffer
 *
 * Returns: (transfer none) (nullable): the detections attached to @buffer,
 *   or %NULL when the buffer was not analysed
 */
GstMaskRcnnMeta *
gst_buffer_get_mask_rcnn_meta (GstBuffer *buffer)
{
  return (GstMaskRcnnMeta *) gst_buffer_get_meta (buffer,
      GST_MASK_RCNN_META_API_TYPE);
}

/**
 * gst_buffer_add_mask_rcnn_meta:
 * @buffer: a writable #GstBuffer
 * @frame_width: width of the frame the detections refer to
 * @frame_height: height of that frame
 *
 * Attaches an empty detection list.
 *
 * Returns: (transfer none): the new meta
 */
GstMaskRcnnMeta *
gst_buffer_add_mask_rcnn_meta (GstBuffer *buffer, guint frame_width,
    guint frame_height)
{
  GstMaskRcnnMeta *m = (GstMaskRcnnMeta *) gst_buffer_add_meta (buffer,
      GST_MASK_RCNN_META_INFO, NULL);
  m->frame_width = frame_width;
  m->frame_height = frame_height;
  return m;
}

/**
 * gst_mask_rcnn_meta_add_detection:
 * @meta: a #GstMaskRcnnMeta
 * @class_id: class index
 * @class_name: class name (copied)
 * @score: confidence
 * @x: box left, frame pixels
 * @y: box top
 * @width: box width
 * @height: box height
 * @mask_x: frame column of the mask's first column
 * @mask_y: frame row of the mask's first row
 * @mask_width: mask columns
 * @mask_height: mask rows
 * @mask: (array) (nullable): mask_width x mask_height bytes to copy, or
 *   %NULL for an all-zero mask to fill in
 *
 * Appends a detection; the meta owns copies of the name and the mask.
 *
 * Returns: (transfer none): the new detection
 */
GstMaskRcnnDetection *
gst_mask_rcnn_meta_add_detection (GstMaskRcnnMeta *meta, gint class_id,
    const gchar *class_name, gfloat score, gfloat x, gfloat y, gfloat width,
    gfloat height, gint mask_x, gint mask_y, guint mask_width,
    guint mask_height, const guint8 *mask)
{
  if (meta->n_detections == meta->capacity) {
    meta->capacity = MAX (8, 2 * meta->capacity);
    meta->detections = g_renew (GstMaskRcnnDetection, meta->detections,
        meta->capacity);
  }
  gsize size = (gsize) mask_width * mask_height;
  GstMaskRcnnDetection *d = &meta->detections[meta->n_detections++];
  *d = (GstMaskRcnnDetection) {
    .class_id = class_id,
    .class_name = g_strdup (class_name),
    .score = score,
    .x = x, .y = y, .width = width, .height = height,
    .mask_x = mask_x, .mask_y = mask_y,
    .mask_width = mask_width, .mask_height = mask_height,
    .mask = size ? (mask ? g_memdup2 (mask, size) : g_malloc0 (size)) : NULL,
  };
  return d;
}

/**
 * gst_mask_rcnn_meta_get_n_detections:
 * @meta: a #GstMaskRcnnMeta
 *
 * Returns: the number of detections
 */
guint
gst_mask_rcnn_meta_get_n_detections (GstMaskRcnnMeta *meta)
{
  return meta->n_detections;
}

/**
 * gst_mask_rcnn_meta_get_detection:
 * @meta: a #GstMaskRcnnMeta
 * @index: 0 .. n_detections - 1 (by descending score)
 *
 * Returns: (transfer none) (nullable): the detection, %NULL past the end
 */
GstMaskRcnnDetection *
gst_mask_rcnn_meta_get_detection (GstMaskRcnnMeta *meta, guint index)
{
  return index < meta->n_detections ? &meta->detections[index] : NULL;
}

/**
 * gst_mask_rcnn_detection_get_class_name:
 * @detection: a #GstMaskRcnnDetection
 *
 * Returns: (transfer none): the class name
 */
const gchar *
gst_mask_rcnn_detection_get_class_name (GstMaskRcnnDetection *detection)
{
  return detection->class_name;
}

/**
 * gst_mask_rcnn_detection_get_box:
 * @detection: a #GstMaskRcnnDetection
 * @x: (out): box left, frame pixels
 * @y: (out): box top
 * @width: (out): box width
 * @height: (out): box height
 */
void
gst_mask_rcnn_detection_get_box (GstMaskRcnnDetection *detection, gfloat *x,
    gfloat *y, gfloat *width, gfloat *height)
{
  *x = detection->x;
  *y = detection->y;
  *width = detection->width;
  *height = detection->height;
}

/**
 * gst_mask_rcnn_detection_get_mask_rect:
 * @detection: a #GstMaskRcnnDetection
 * @x: (out): frame column of the mask's first column
 * @y: (out): frame row of the mask's first row
 * @width: (out): mask columns
 * @height: (out): mask rows
 */
void
gst_mask_rcnn_detection_get_mask_rect (GstMaskRcnnDetection *detection,
    gint *x, gint *y, guint *width, guint *height)
{
  *x = detection->mask_x;
  *y = detection->mask_y;
  *width = detection->mask_width;
  *height = detection->mask_height;
}

/**
 * gst_mask_rcnn_detection_get_mask:
 * @detection: a #GstMaskRcnnDetection
 * @size: (out): number of bytes (mask_width x mask_height)
 *
 * Returns: (transfer none) (array length=size) (nullable): the mask bytes,
 *   row-major
 */
const guint8 *
gst_mask_rcnn_detection_get_mask (GstMaskRcnnDetection *detection,
    gsize *size)
{
  *size = detection->mask ? (gsize) detection->mask_width
      * detection->mask_height : 0;
  return detection->mask;
}
