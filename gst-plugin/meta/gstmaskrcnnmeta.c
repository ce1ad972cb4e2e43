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
  m->stream_id = m->model_name = NULL;
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
  g_clear_pointer (&m->stream_id, g_free);
  g_clear_pointer (&m->model_name, g_free);
}

static GstMaskRcnnMeta *
add_empty_like (GstBuffer *buffer, const GstMaskRcnnMeta *src, guint width,
    guint height)
{
  GstMaskRcnnMeta *m = gst_buffer_add_mask_rcnn_meta (buffer, width, height);
  if (!m)
    return NULL;
  m->repeated = src->repeated;
  m->soft_masks = src->soft_masks;
  m->inference_time = src->inference_time;
  m->frame_number = src->frame_number;
  m->result_frame_number = src->result_frame_number;
  m->result_pts = src->result_pts;
  m->result_age = src->result_age;
  gst_mask_rcnn_meta_set_source (m, src->stream_id, src->model_name);
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
  n->track_id = d->track_id;
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
    if (!m)
      return FALSE;
    for (guint i = 0; i < src->n_detections; i++) {
      const GstMaskRcnnDetection *d = &src->detections[i];
      GstMaskRcnnDetection *n = gst_mask_rcnn_meta_add_detection (m,
          d->class_id, d->class_name, d->score, d->x, d->y, d->width,
          d->height, d->mask_x, d->mask_y, d->mask_width, d->mask_height,
          d->mask);
      n->track_id = d->track_id;
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
    if (!m)
      return FALSE;
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
 * Returns: (transfer none) (nullable): the detections attached to @buffer
 *   (the first model's, where chained maskrcnn elements added several:
 *   gst_buffer_get_mask_rcnn_meta_for_model() picks one, and
 *   gst_buffer_iterate_mask_rcnn_meta() walks them all), or %NULL when the
 *   buffer was not analysed
 */
GstMaskRcnnMeta *
gst_buffer_get_mask_rcnn_meta (GstBuffer *buffer)
{
  return (GstMaskRcnnMeta *) gst_buffer_get_meta (buffer,
      GST_MASK_RCNN_META_API_TYPE);
}

/**
 * gst_buffer_iterate_mask_rcnn_meta: (skip)
 * @buffer: a #GstBuffer
 * @state: an opaque state pointer, %NULL at the first call
 *
 * Walks the buffer's detection metas in the order they were added (one per
 * maskrcnn element that analysed the frame: chained elements add one each,
 * told apart by #GstMaskRcnnMeta.model_name):
 *
 * |[<!-- language="C" -->
 *   gpointer state = NULL;
 *   GstMaskRcnnMeta *meta;
 *   while ((meta = gst_buffer_iterate_mask_rcnn_meta (buffer, &state)))
 *     ...
 * ]|
 *
 * Bindings use gst_buffer_get_mask_rcnn_metas().
 *
 * Returns: (transfer none) (nullable): the next meta, or %NULL after the
 *   last
 */
GstMaskRcnnMeta *
gst_buffer_iterate_mask_rcnn_meta (GstBuffer *buffer, gpointer *state)
{
  g_return_val_if_fail (state != NULL, NULL);
  return (GstMaskRcnnMeta *) gst_buffer_iterate_meta_filtered (buffer, state,
      GST_MASK_RCNN_META_API_TYPE);
}

/**
 * gst_buffer_get_mask_rcnn_metas:
 * @buffer: a #GstBuffer
 *
 * Returns: (transfer container) (element-type GstMaskRcnnMeta): every
 *   detection meta of @buffer, in the order they were added (chained
 *   maskrcnn elements add one each); empty when the buffer was not
 *   analysed.  The metas stay the buffer's; free the list with g_list_free()
 */
GList *
gst_buffer_get_mask_rcnn_metas (GstBuffer *buffer)
{
  GList *metas = NULL;
  gpointer state = NULL;
  GstMaskRcnnMeta *meta;
  while ((meta = gst_buffer_iterate_mask_rcnn_meta (buffer, &state)))
    metas = g_list_prepend (metas, meta);
  return g_list_reverse (metas);
}

/**
 * gst_buffer_get_mask_rcnn_meta_for_model:
 * @buffer: a #GstBuffer
 * @model_name: a model's name, as in #GstMaskRcnnMeta.model_name (the
 *   weights file's name, without its folder)
 *
 * Picks one model's results out of a frame that chained maskrcnn elements
 * analysed.
 *
 * Returns: (transfer none) (nullable): the first detection meta of @buffer
 *   whose model is @model_name, or %NULL when there is none
 */
GstMaskRcnnMeta *
gst_buffer_get_mask_rcnn_meta_for_model (GstBuffer *buffer,
    const gchar *model_name)
{
  g_return_val_if_fail (model_name != NULL, NULL);
  gpointer state = NULL;
  GstMaskRcnnMeta *meta;
  while ((meta = gst_buffer_iterate_mask_rcnn_meta (buffer, &state)))
    if (g_strcmp0 (meta->model_name, model_name) == 0)
      return meta;
  return NULL;
}

/**
 * gst_buffer_add_mask_rcnn_meta:
 * @buffer: a writable #GstBuffer
 * @frame_width: width of the frame the detections refer to
 * @frame_height: height of that frame
 *
 * Attaches an empty detection list.
 *
 * Returns: (transfer none) (nullable): the new meta, or %NULL (with a
 *   critical warning) when @buffer is not writable
 */
GstMaskRcnnMeta *
gst_buffer_add_mask_rcnn_meta (GstBuffer *buffer, guint frame_width,
    guint frame_height)
{
  GstMaskRcnnMeta *m = (GstMaskRcnnMeta *) gst_buffer_add_meta (buffer,
      GST_MASK_RCNN_META_INFO, NULL);
  /* gst_buffer_add_meta refuses a buffer that is not writable, which a
   * binding can easily pass from a pad probe */
  if (!m)
    return NULL;
  m->frame_width = frame_width;
  m->frame_height = frame_height;
  return m;
}

/* Appends a detection and copies (or zeroes) its mask.  With @try_alloc
 * (sizes given by a binding) a mask too large to allocate adds nothing and
 * returns NULL instead of aborting the process. */
static GstMaskRcnnDetection *
append_detection (GstMaskRcnnMeta *meta, gint class_id,
    const gchar *class_name, gfloat score, gfloat x, gfloat y, gfloat width,
    gfloat height, gint mask_x, gint mask_y, guint mask_width,
    guint mask_height, const guint8 *mask, gboolean try_alloc)
{
  gsize size = (gsize) mask_width * mask_height;
  guint8 *copy = NULL;

  if (size) {
    copy = try_alloc ? g_try_malloc (size) : g_malloc (size);
    if (!copy)
      return NULL;
    if (mask)
      memcpy (copy, mask, size);
    else
      memset (copy, 0, size);
  }
  if (meta->n_detections == meta->capacity) {
    meta->capacity = MAX (8, 2 * meta->capacity);
    meta->detections = g_renew (GstMaskRcnnDetection, meta->detections,
        meta->capacity);
  }
  GstMaskRcnnDetection *d = &meta->detections[meta->n_detections++];
  *d = (GstMaskRcnnDetection) {
    .class_id = class_id,
    .class_name = g_strdup (class_name),
    .score = score,
    .x = x, .y = y, .width = width, .height = height,
    .mask_x = mask_x, .mask_y = mask_y,
    .mask_width = mask_width, .mask_height = mask_height,
    .mask = copy,
  };
  return d;
}

/**
 * gst_mask_rcnn_meta_add_detection: (skip)
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
 * Bindings cannot say how long @mask is: they call
 * gst_mask_rcnn_meta_add_detection_len() instead, under this name.
 *
 * Returns: (transfer none): the new detection
 */
GstMaskRcnnDetection *
gst_mask_rcnn_meta_add_detection (GstMaskRcnnMeta *meta, gint class_id,
    const gchar *class_name, gfloat score, gfloat x, gfloat y, gfloat width,
    gfloat height, gint mask_x, gint mask_y, guint mask_width,
    guint mask_height, const guint8 *mask)
{
  return append_detection (meta, class_id, class_name, score, x, y, width,
      height, mask_x, mask_y, mask_width, mask_height, mask, FALSE);
}

/**
 * gst_mask_rcnn_meta_add_detection_len: (rename-to gst_mask_rcnn_meta_add_detection)
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
 * @mask: (array length=mask_size) (nullable): mask_width x mask_height
 *   bytes to copy, row-major, or %NULL for an all-zero mask
 * @mask_size: number of bytes in @mask: mask_width x mask_height (0 when
 *   @mask is %NULL)
 *
 * gst_mask_rcnn_meta_add_detection() with the length of @mask, which is
 * checked: this is the variant bindings call (as add_detection).  A mask of
 * the wrong size is refused with a critical warning, and a mask too large
 * to allocate is refused too; nothing is added then.
 *
 * Returns: (transfer none) (nullable): the new detection, or %NULL when
 *   nothing was added
 */
GstMaskRcnnDetection *
gst_mask_rcnn_meta_add_detection_len (GstMaskRcnnMeta *meta, gint class_id,
    const gchar *class_name, gfloat score, gfloat x, gfloat y, gfloat width,
    gfloat height, gint mask_x, gint mask_y, guint mask_width,
    guint mask_height, const guint8 *mask, gsize mask_size)
{
  gsize size;

  g_return_val_if_fail (meta != NULL, NULL);
  g_return_val_if_fail (g_size_checked_mul (&size, mask_width, mask_height),
      NULL);
  g_return_val_if_fail (mask == NULL || mask_size == size, NULL);
  return append_detection (meta, class_id, class_name, score, x, y, width,
      height, mask_x, mask_y, mask_width, mask_height, mask, TRUE);
}

/**
 * gst_mask_rcnn_meta_set_source:
 * @meta: a #GstMaskRcnnMeta
 * @stream_id: (nullable): stream-id of the frame's stream (copied)
 * @model_name: (nullable): name of the model that computed the results
 *   (copied)
 *
 * Sets #GstMaskRcnnMeta.stream_id and #GstMaskRcnnMeta.model_name,
 * replacing (and freeing) the previous values.
 */
void
gst_mask_rcnn_meta_set_source (GstMaskRcnnMeta *meta, const gchar *stream_id,
    const gchar *model_name)
{
  g_return_if_fail (meta != NULL);

  /* copy before freeing: the arguments may be the meta's own strings */
  gchar *s = g_strdup (stream_id), *m = g_strdup (model_name);
  g_free (meta->stream_id);
  g_free (meta->model_name);
  meta->stream_id = s;
  meta->model_name = m;
}

/**
 * gst_mask_rcnn_meta_get_stream_id:
 * @meta: a #GstMaskRcnnMeta
 *
 * Returns: (transfer none) (nullable): the stream-id of the stream the
 *   frame belongs to, or %NULL when unknown
 */
const gchar *
gst_mask_rcnn_meta_get_stream_id (GstMaskRcnnMeta *meta)
{
  g_return_val_if_fail (meta != NULL, NULL);
  return meta->stream_id;
}

/**
 * gst_mask_rcnn_meta_get_model_name:
 * @meta: a #GstMaskRcnnMeta
 *
 * Returns: (transfer none) (nullable): the name of the model that computed
 *   the results, or %NULL when unknown
 */
const gchar *
gst_mask_rcnn_meta_get_model_name (GstMaskRcnnMeta *meta)
{
  g_return_val_if_fail (meta != NULL, NULL);
  return meta->model_name;
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
 * Returns: (transfer none) (nullable): the detection, %NULL past the end;
 *   it belongs to @meta and lives as long as the buffer's meta
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
 * gst_mask_rcnn_detection_get_track_id:
 * @detection: a #GstMaskRcnnDetection
 *
 * Returns: the object's track id (maskrcnntracker), 0 when not tracked
 */
guint64
gst_mask_rcnn_detection_get_track_id (GstMaskRcnnDetection *detection)
{
  g_return_val_if_fail (detection != NULL, 0);
  return detection->track_id;
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
 * The mask in its rectangle (gst_mask_rcnn_detection_get_mask_rect()).
 * From Python this is one `bytes` copy, which
 * `numpy.frombuffer (mask, numpy.uint8).reshape (mask_height, mask_width)`
 * reads without another.
 *
 * Returns: (transfer none) (array length=size) (nullable): the mask bytes,
 *   row-major, or %NULL (size 0) when the rectangle is empty
 */
const guint8 *
gst_mask_rcnn_detection_get_mask (GstMaskRcnnDetection *detection,
    gsize *size)
{
  *size = detection->mask ? (gsize) detection->mask_width
      * detection->mask_height : 0;
  return detection->mask;
}

/* Copies the part of the detection's mask rectangle that lies inside a
 * frame_width x frame_height frame into @out (already zeroed): the
 * rectangle is clipped to the frame when it is made, but a meta made by an
 * application may not be. */
static void
paste_mask (const GstMaskRcnnDetection *d, guint frame_width,
    guint frame_height, guint8 *out)
{
  if (!d->mask)
    return;
  gint64 x0 = MAX (d->mask_x, 0), y0 = MAX (d->mask_y, 0);
  gint64 x1 = MIN ((gint64) d->mask_x + d->mask_width, (gint64) frame_width);
  gint64 y1 = MIN ((gint64) d->mask_y + d->mask_height,
      (gint64) frame_height);
  for (gint64 r = y0; r < y1 && x0 < x1; r++)
    memcpy (out + r * frame_width + x0,
        d->mask + (r - d->mask_y) * d->mask_width + (x0 - d->mask_x),
        x1 - x0);
}

/**
 * gst_mask_rcnn_detection_get_full_mask: (skip)
 * @detection: a #GstMaskRcnnDetection
 * @frame_width: width of the frame (#GstMaskRcnnMeta.frame_width)
 * @frame_height: height of the frame (#GstMaskRcnnMeta.frame_height)
 * @out: frame_width x frame_height bytes to write, row-major
 *
 * Writes the detection's mask at its place in a whole frame: frame pixel
 * (col, row) is `out[row * frame_width + col]`, the mask's value inside
 * its rectangle and 0 elsewhere (the part of the rectangle outside the
 * frame is dropped).  Values are as in the mask: 0/255, or 0..255 with
 * soft masks.
 *
 * Bindings, which cannot pass a buffer of a given size, use
 * gst_mask_rcnn_detection_dup_full_mask().
 */
void
gst_mask_rcnn_detection_get_full_mask (GstMaskRcnnDetection *detection,
    guint frame_width, guint frame_height, guint8 *out)
{
  g_return_if_fail (detection != NULL);
  if (!frame_width || !frame_height)
    return;
  g_return_if_fail (out != NULL);

  memset (out, 0, (gsize) frame_width * frame_height);
  paste_mask (detection, frame_width, frame_height, out);
}

/**
 * gst_mask_rcnn_detection_dup_full_mask:
 * @detection: a #GstMaskRcnnDetection
 * @frame_width: width of the frame (#GstMaskRcnnMeta.frame_width)
 * @frame_height: height of the frame (#GstMaskRcnnMeta.frame_height)
 * @size: (out) (optional): number of bytes returned (frame_width x
 *   frame_height, or 0)
 *
 * gst_mask_rcnn_detection_get_full_mask() into a new buffer: the mask at
 * its place in a whole frame, row-major, 0 outside its rectangle.  From
 * Python it is `bytes`, which
 * `numpy.frombuffer (full, numpy.uint8).reshape (frame_height, frame_width)`
 * reads without a copy.
 *
 * Returns: (transfer full) (array length=size) (nullable): the
 *   frame_width x frame_height bytes, to free with g_free(); %NULL when the
 *   frame is empty or too large to allocate
 */
guint8 *
gst_mask_rcnn_detection_dup_full_mask (GstMaskRcnnDetection *detection,
    guint frame_width, guint frame_height, gsize *size)
{
  gsize n;
  guint8 *out;

  if (size)
    *size = 0;
  g_return_val_if_fail (detection != NULL, NULL);
  if (!g_size_checked_mul (&n, frame_width, frame_height) || n == 0)
    return NULL;
  /* sizes may come from a binding: a huge one must not abort the process */
  out = g_try_malloc0 (n);
  if (!out)
    return NULL;
  paste_mask (detection, frame_width, frame_height, out);
  if (size)
    *size = n;
  return out;
}
