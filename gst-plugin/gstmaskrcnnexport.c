/**
 * SECTION:element-maskrcnnexport
 * @title: maskrcnnexport
 *
 * Writes the detections maskrcnn attached to each buffer (#GstMaskRcnnMeta)
 * to a file, with their masks, in the keys of COCO results so that one
 * parser reads both formats:
 *
 * - format=jsonl: one JSON object per buffer, written and flushed as the
 *   buffer passes, so a killed pipeline leaves every finished frame
 *   readable.  A buffer without the meta (not analysed) gets a line too,
 *   with "analysed": false and no detections, so that every frame of the
 *   stream is accounted for.
 * - format=coco: a COCO results array (image_id = frame number) written at
 *   EOS, or at stop when no EOS came, that pycocotools' COCO.loadRes reads.
 * - format=mot: MOTChallenge tracking results, a line
 *   "frame,id,left,top,width,height,score,-1,-1,-1" (frame from 1) per
 *   tracked detection (maskrcnntracker), written as frames pass; what
 *   motmetrics and the MOTChallenge tools read.
 *
 * A detection with a track id (maskrcnntracker) has "track_id" in both
 * JSON formats; untracked ones have none.
 *
 * The frame number is the index of the buffer in the stream (from 0, every
 * buffer counted, with or without the meta) since the element started; it
 * is not reset by a flushing seek, after which the pts tells the frame.
 * Masks are COCO compressed RLE over the whole frame, or the outer
 * contour of each 8-connected part as a COCO polygon; soft masks are
 * binarised at 128.
 *
 * |[
 * gst-launch-1.0 filesrc location=in.mp4 ! decodebin ! videoconvert ! \
 *   maskrcnn model=model.safetensors ! \
 *   maskrcnnexport location=detections.jsonl ! fakesink
 * ]|
 */
#include "gstmaskrcnnexport.h"

#include <errno.h>
#include <string.h>

#include "meta/gstmaskrcnnmeta.h"
#include "mrcnn.h"

GST_DEBUG_CATEGORY_STATIC (gst_mask_rcnn_export_debug);
#define GST_CAT_DEFAULT gst_mask_rcnn_export_debug

enum
{
  PROP_0,
  PROP_LOCATION,
  PROP_FORMAT,
  PROP_MASK_ENCODING,
  PROP_CATEGORIES_LOCATION,
};

#define DEFAULT_FORMAT GST_MASK_RCNN_EXPORT_FORMAT_JSONL
#define DEFAULT_MASK_ENCODING GST_MASK_RCNN_EXPORT_MASK_RLE
/* soft masks hold probabilities 0..255, binary ones 0 or 255 */
#define MASK_THRESHOLD 128

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS_ANY);
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS_ANY);

#define GST_TYPE_MASK_RCNN_EXPORT_FORMAT \
  (gst_mask_rcnn_export_format_get_type ())
static GType
gst_mask_rcnn_export_format_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    { GST_MASK_RCNN_EXPORT_FORMAT_JSONL,
        "JSON Lines: one object per frame, written as frames pass", "jsonl" },
    { GST_MASK_RCNN_EXPORT_FORMAT_COCO,
        "COCO results array, written at EOS", "coco" },
    { GST_MASK_RCNN_EXPORT_FORMAT_MOT,
        "MOTChallenge lines of the tracked detections, written as frames "
          "pass", "mot" },
    { 0, NULL, NULL },
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstMaskRcnnExportFormat", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define GST_TYPE_MASK_RCNN_EXPORT_MASK_ENCODING \
  (gst_mask_rcnn_export_mask_encoding_get_type ())
static GType
gst_mask_rcnn_export_mask_encoding_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    { GST_MASK_RCNN_EXPORT_MASK_RLE,
        "COCO compressed RLE over the whole frame", "rle" },
    { GST_MASK_RCNN_EXPORT_MASK_POLYGON,
        "COCO polygons: the outer contour of each connected part",
        "polygon" },
    { 0, NULL, NULL },
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstMaskRcnnExportMaskEncoding",
        values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define gst_mask_rcnn_export_parent_class parent_class
G_DEFINE_TYPE (GstMaskRcnnExport, gst_mask_rcnn_export,
    GST_TYPE_BASE_TRANSFORM);
GST_ELEMENT_REGISTER_DEFINE_WITH_CODE (maskrcnnexport, "maskrcnnexport",
    GST_RANK_NONE, GST_TYPE_MASK_RCNN_EXPORT,
    GST_DEBUG_CATEGORY_INIT (gst_mask_rcnn_export_debug, "maskrcnnexport", 0,
        "Mask R-CNN detection export"));

static void
post_write_error (GstMaskRcnnExport *self, const gchar *path, int err)
{
  GST_ELEMENT_ERROR (self, RESOURCE, WRITE,
      ("Could not write to \"%s\": %s", path, g_strerror (err)), (NULL));
}

/* Writes `data` then a newline when `newline`, and flushes, so what was
 * written survives the process. */
static gboolean
write_flushed (GstMaskRcnnExport *self, FILE *file, const gchar *path,
    const gchar *data, gboolean newline)
{
  gsize len = strlen (data);
  errno = 0;
  if (fwrite (data, 1, len, file) != len || (newline && fputc ('\n',
              file) == EOF) || fflush (file) != 0) {
    post_write_error (self, path, errno ? errno : EIO);
    return FALSE;
  }
  return TRUE;
}

/* Writes the JSON of `root` over what the file holds: results and
 * categories are written again when more came after an EOS, and only ever
 * grow, so the new text covers the old.  The file is only repositioned
 * when it was written before, so that a pipe works for a single write. */
static gboolean
rewrite_json (GstMaskRcnnExport *self, FILE *file, const gchar *path,
    JsonNode *root, gboolean *written)
{
  errno = 0;
  if (*written && fseek (file, 0, SEEK_SET) != 0) {
    post_write_error (self, path, errno ? errno : EIO);
    return FALSE;
  }
  JsonGenerator *gen = json_generator_new ();
  json_generator_set_root (gen, root);
  gchar *data = json_generator_to_data (gen, NULL);
  gboolean ok = write_flushed (self, file, path, data, TRUE);
  *written = TRUE;
  g_free (data);
  g_object_unref (gen);
  return ok;
}

static void
add_segmentation (JsonBuilder *b, const GstMaskRcnnMeta *meta,
    const GstMaskRcnnDetection *d, GstMaskRcnnExportMaskEncoding encoding)
{
  /* a detection without a mask has an empty one */
  guint mw = d->mask ? d->mask_width : 0, mh = d->mask ? d->mask_height : 0;
  GPtrArray *polygons = NULL;
  if (encoding == GST_MASK_RCNN_EXPORT_MASK_POLYGON)
    polygons = mrcnn_mask_polygons (d->mask, d->mask_x, d->mask_y, mw, mh,
        MASK_THRESHOLD, meta->frame_width, meta->frame_height);
  json_builder_set_member_name (b, "segmentation");
  /* an empty mask is an RLE in both encodings: pycocotools reads no empty
   * polygon list */
  if (!polygons || polygons->len == 0) {
    gchar *counts = mrcnn_rle_encode_rect (d->mask, d->mask_x, d->mask_y,
        mw, mh, MASK_THRESHOLD, meta->frame_width, meta->frame_height);
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "size");
    json_builder_begin_array (b);
    json_builder_add_int_value (b, meta->frame_height);
    json_builder_add_int_value (b, meta->frame_width);
    json_builder_end_array (b);
    json_builder_set_member_name (b, "counts");
    json_builder_add_string_value (b, counts);
    json_builder_end_object (b);
    g_free (counts);
    if (polygons)
      g_ptr_array_unref (polygons);
    return;
  }
  json_builder_begin_array (b);
  for (guint i = 0; i < polygons->len; i++) {
    GArray *xy = g_ptr_array_index (polygons, i);
    json_builder_begin_array (b);
    for (guint k = 0; k < xy->len; k++)
      json_builder_add_int_value (b, g_array_index (xy, int, k));
    json_builder_end_array (b);
  }
  json_builder_end_array (b);
  g_ptr_array_unref (polygons);
}

/* The members a detection has in both formats, in an open object. */
static void
add_detection_members (JsonBuilder *b, const GstMaskRcnnMeta *meta,
    const GstMaskRcnnDetection *d, GstMaskRcnnExportMaskEncoding encoding)
{
  json_builder_set_member_name (b, "category_id");
  json_builder_add_int_value (b, d->class_id);
  json_builder_set_member_name (b, "bbox");
  json_builder_begin_array (b);
  json_builder_add_double_value (b, d->x);
  json_builder_add_double_value (b, d->y);
  json_builder_add_double_value (b, d->width);
  json_builder_add_double_value (b, d->height);
  json_builder_end_array (b);
  json_builder_set_member_name (b, "score");
  json_builder_add_double_value (b, d->score);
  if (d->track_id) {
    json_builder_set_member_name (b, "track_id");
    json_builder_add_int_value (b, (gint64) d->track_id);
  }
  add_segmentation (b, meta, d, encoding);
}

/* Which model a detection is of (chained maskrcnn elements), where
 * known. */
static void
add_model_member (JsonBuilder *b, const GstMaskRcnnMeta *meta)
{
  if (!meta->model_name)
    return;
  json_builder_set_member_name (b, "model");
  json_builder_add_string_value (b, meta->model_name);
}

/* One MOTChallenge line per tracked detection of the frame (of every
 * model: maskrcnntracker's ids are unique in the stream). */
static gboolean
write_mot_lines (GstMaskRcnnExport *self, guint64 frame, GstBuffer *buffer)
{
  GString *text = g_string_new (NULL);
  gpointer state = NULL;
  const GstMaskRcnnMeta *meta;
  while ((meta = gst_buffer_iterate_mask_rcnn_meta (buffer, &state))) {
    for (guint i = 0; i < meta->n_detections; i++) {
      const GstMaskRcnnDetection *d = &meta->detections[i];
      if (!d->track_id)
        continue;
      gchar x[G_ASCII_DTOSTR_BUF_SIZE], y[G_ASCII_DTOSTR_BUF_SIZE],
          w[G_ASCII_DTOSTR_BUF_SIZE], h[G_ASCII_DTOSTR_BUF_SIZE],
          score[G_ASCII_DTOSTR_BUF_SIZE];
      g_string_append_printf (text, "%" G_GUINT64_FORMAT ",%"
          G_GUINT64_FORMAT ",%s,%s,%s,%s,%s,-1,-1,-1\n", frame + 1,
          d->track_id, g_ascii_formatd (x, sizeof x, "%.2f", d->x),
          g_ascii_formatd (y, sizeof y, "%.2f", d->y),
          g_ascii_formatd (w, sizeof w, "%.2f", d->width),
          g_ascii_formatd (h, sizeof h, "%.2f", d->height),
          g_ascii_formatd (score, sizeof score, "%.4f", d->score));
    }
  }
  gboolean ok = text->len == 0
      || write_flushed (self, self->file, self->path, text->str, FALSE);
  g_string_free (text, TRUE);
  return ok;
}

/* The frame's line; its repeated and result_pts are the first model's. */
static gboolean
write_frame_line (GstMaskRcnnExport *self, guint64 frame, GstBuffer *buffer,
    const GstMaskRcnnMeta *meta)
{
  JsonBuilder *b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "frame");
  json_builder_add_int_value (b, (gint64) frame);
  json_builder_set_member_name (b, "pts");
  if (GST_BUFFER_PTS_IS_VALID (buffer))
    json_builder_add_int_value (b, (gint64) GST_BUFFER_PTS (buffer));
  else
    json_builder_add_null_value (b);
  json_builder_set_member_name (b, "analysed");
  json_builder_add_boolean_value (b, meta != NULL);
  if (meta) {
    json_builder_set_member_name (b, "width");
    json_builder_add_int_value (b, meta->frame_width);
    json_builder_set_member_name (b, "height");
    json_builder_add_int_value (b, meta->frame_height);
    json_builder_set_member_name (b, "repeated");
    json_builder_add_boolean_value (b, meta->repeated);
    /* the frame the results were computed on: this one unless repeated */
    json_builder_set_member_name (b, "result_pts");
    if (GST_CLOCK_TIME_IS_VALID (meta->result_pts))
      json_builder_add_int_value (b, (gint64) meta->result_pts);
    else
      json_builder_add_null_value (b);
    json_builder_set_member_name (b, "detections");
    json_builder_begin_array (b);
    gpointer state = NULL;
    const GstMaskRcnnMeta *m;
    while ((m = gst_buffer_iterate_mask_rcnn_meta (buffer, &state))) {
      for (guint i = 0; i < m->n_detections; i++) {
        const GstMaskRcnnDetection *d = &m->detections[i];
        json_builder_begin_object (b);
        json_builder_set_member_name (b, "label");
        json_builder_add_string_value (b, d->class_name);
        add_detection_members (b, m, d, self->active_encoding);
        add_model_member (b, m);
        json_builder_end_object (b);
      }
    }
    json_builder_end_array (b);
  }
  json_builder_end_object (b);

  JsonGenerator *gen = json_generator_new ();
  JsonNode *root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  gchar *line = json_generator_to_data (gen, NULL);
  gboolean ok = write_flushed (self, self->file, self->path, line, TRUE);
  g_free (line);
  json_node_unref (root);
  g_object_unref (gen);
  g_object_unref (b);
  return ok;
}

static void
add_results (GstMaskRcnnExport *self, guint64 frame, GstBuffer *buffer)
{
  gpointer state = NULL;
  const GstMaskRcnnMeta *meta;
  while ((meta = gst_buffer_iterate_mask_rcnn_meta (buffer, &state))) {
    for (guint i = 0; i < meta->n_detections; i++) {
      JsonBuilder *b = json_builder_new ();
      json_builder_begin_object (b);
      json_builder_set_member_name (b, "image_id");
      json_builder_add_int_value (b, (gint64) frame);
      add_detection_members (b, meta, &meta->detections[i],
          self->active_encoding);
      add_model_member (b, meta);
      json_builder_end_object (b);
      json_array_add_element (self->results, json_builder_get_root (b));
      g_object_unref (b);
      self->pending = TRUE;
    }
  }
}

/* A class seen: its id and name, and its model's name where the meta
 * gives it. */
typedef struct {
  gint id;
  gchar *name;
  gchar *model;
} ExportCategory;

static void
export_category_free (gpointer data)
{
  ExportCategory *c = data;
  g_free (c->name);
  g_free (c->model);
  g_free (c);
}

static void
note_category (GstMaskRcnnExport *self, const GstMaskRcnnMeta *meta,
    const GstMaskRcnnDetection *d)
{
  /* (a model of no name apart from any name) */
  gchar *key = g_strdup_printf ("%c%s\n%d", meta->model_name ? 'm' : '-',
      meta->model_name ? meta->model_name : "", d->class_id);
  if (g_hash_table_contains (self->categories, key)) {
    g_free (key);
    return;
  }
  ExportCategory *c = g_new (ExportCategory, 1);
  c->id = d->class_id;
  c->name = g_strdup (d->class_name);
  c->model = g_strdup (meta->model_name);
  g_hash_table_insert (self->categories, key, c);
  self->pending = TRUE;
}

/* By model (none first), then id. */
static gint
compare_categories (gconstpointer a, gconstpointer b)
{
  const ExportCategory *x = a, *y = b;
  gint by_model = g_strcmp0 (x->model, y->model);
  return by_model ? by_model : (x->id > y->id) - (x->id < y->id);
}

static JsonNode *
categories_node (GstMaskRcnnExport *self)
{
  GList *seen = g_list_sort (g_hash_table_get_values (self->categories),
      compare_categories);
  JsonArray *array = json_array_new ();
  for (GList *l = seen; l; l = l->next) {
    const ExportCategory *c = l->data;
    JsonObject *category = json_object_new ();
    json_object_set_int_member (category, "id", c->id);
    json_object_set_string_member (category, "name", c->name);
    if (c->model)
      json_object_set_string_member (category, "model", c->model);
    json_array_add_object_element (array, category);
  }
  g_list_free (seen);
  JsonNode *node = json_node_new (JSON_NODE_ARRAY);
  json_node_take_array (node, array);
  return node;
}

/* Writes what is written once: the coco results and the categories. */
static gboolean
write_pending (GstMaskRcnnExport *self)
{
  if (!self->pending)
    return TRUE;
  self->pending = FALSE;
  gboolean ok = TRUE;
  if (self->active_format == GST_MASK_RCNN_EXPORT_FORMAT_COCO) {
    JsonNode *root = json_node_new (JSON_NODE_ARRAY);
    json_node_set_array (root, self->results);
    ok = rewrite_json (self, self->file, self->path, root,
        &self->file_written);
    json_node_unref (root);
    GST_INFO_OBJECT (self, "%u results written to %s",
        json_array_get_length (self->results), self->path);
  }
  if (ok && self->categories_file) {
    JsonNode *root = categories_node (self);
    ok = rewrite_json (self, self->categories_file, self->categories_path,
        root, &self->categories_written);
    json_node_unref (root);
  }
  return ok;
}

static FILE *
open_for_writing (GstMaskRcnnExport *self, const gchar *path)
{
  FILE *file = fopen (path, "w");
  if (!file)
    GST_ELEMENT_ERROR (self, RESOURCE, OPEN_WRITE,
        ("Could not open \"%s\" for writing: %s", path, g_strerror (errno)),
        (NULL));
  return file;
}

static void
close_files (GstMaskRcnnExport *self)
{
  if (self->file)
    fclose (self->file);
  if (self->categories_file)
    fclose (self->categories_file);
  self->file = self->categories_file = NULL;
  g_clear_pointer (&self->results, json_array_unref);
  g_clear_pointer (&self->categories, g_hash_table_unref);
  g_clear_pointer (&self->path, g_free);
  g_clear_pointer (&self->categories_path, g_free);
}

static gboolean
gst_mask_rcnn_export_start (GstBaseTransform *trans)
{
  GstMaskRcnnExport *self = GST_MASK_RCNN_EXPORT (trans);

  GST_OBJECT_LOCK (self);
  self->path = g_strdup (self->location);
  self->categories_path = g_strdup (self->categories_location);
  self->active_format = self->format;
  self->active_encoding = self->mask_encoding;
  GST_OBJECT_UNLOCK (self);

  if (!self->path || !*self->path) {
    GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND,
        ("No file to write the detections to: set the location property"),
        (NULL));
    close_files (self);
    return FALSE;
  }
  /* both files open now, so that a bad path fails before the first frame
   * rather than at EOS */
  self->file = open_for_writing (self, self->path);
  if (self->file && self->categories_path && *self->categories_path)
    self->categories_file = open_for_writing (self, self->categories_path);
  if (!self->file || (self->categories_path && *self->categories_path
          && !self->categories_file)) {
    close_files (self);
    return FALSE;
  }
  self->file_written = self->categories_written = FALSE;
  self->frame = 0;
  self->results = json_array_new ();
  self->categories = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
      export_category_free);
  /* an empty results array is still written for a stream without frames */
  self->pending = TRUE;
  return TRUE;
}

static gboolean
gst_mask_rcnn_export_stop (GstBaseTransform *trans)
{
  GstMaskRcnnExport *self = GST_MASK_RCNN_EXPORT (trans);

  /* no EOS came, or more frames came after it */
  if (self->file)
    write_pending (self);
  close_files (self);
  return TRUE;
}

static gboolean
gst_mask_rcnn_export_sink_event (GstBaseTransform *trans, GstEvent *event)
{
  GstMaskRcnnExport *self = GST_MASK_RCNN_EXPORT (trans);

  /* written before EOS goes on, so the file is complete when the
   * application sees the EOS message */
  if (GST_EVENT_TYPE (event) == GST_EVENT_EOS && !write_pending (self)) {
    gst_event_unref (event);
    return FALSE;
  }
  return GST_BASE_TRANSFORM_CLASS (parent_class)->sink_event (trans, event);
}

static GstFlowReturn
gst_mask_rcnn_export_transform_ip (GstBaseTransform *trans, GstBuffer *buffer)
{
  GstMaskRcnnExport *self = GST_MASK_RCNN_EXPORT (trans);
  guint64 frame = self->frame++;
  const GstMaskRcnnMeta *first = NULL, *meta;
  gpointer state = NULL;
  while ((meta = gst_buffer_iterate_mask_rcnn_meta (buffer, &state))) {
    first = first ? first : meta;
    for (guint i = 0; i < meta->n_detections; i++)
      note_category (self, meta, &meta->detections[i]);
  }
  if (self->active_format == GST_MASK_RCNN_EXPORT_FORMAT_JSONL)
    return write_frame_line (self, frame, buffer, first) ? GST_FLOW_OK
        : GST_FLOW_ERROR;
  if (self->active_format == GST_MASK_RCNN_EXPORT_FORMAT_MOT)
    return write_mot_lines (self, frame, buffer) ? GST_FLOW_OK
        : GST_FLOW_ERROR;
  add_results (self, frame, buffer);
  return GST_FLOW_OK;
}

static void
gst_mask_rcnn_export_set_property (GObject *object, guint prop_id,
    const GValue *value, GParamSpec *pspec)
{
  GstMaskRcnnExport *self = GST_MASK_RCNN_EXPORT (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_LOCATION:
      g_free (self->location);
      self->location = g_value_dup_string (value);
      break;
    case PROP_FORMAT:
      self->format = g_value_get_enum (value);
      break;
    case PROP_MASK_ENCODING:
      self->mask_encoding = g_value_get_enum (value);
      break;
    case PROP_CATEGORIES_LOCATION:
      g_free (self->categories_location);
      self->categories_location = g_value_dup_string (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_mask_rcnn_export_get_property (GObject *object, guint prop_id,
    GValue *value, GParamSpec *pspec)
{
  GstMaskRcnnExport *self = GST_MASK_RCNN_EXPORT (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_LOCATION:
      g_value_set_string (value, self->location);
      break;
    case PROP_FORMAT:
      g_value_set_enum (value, self->format);
      break;
    case PROP_MASK_ENCODING:
      g_value_set_enum (value, self->mask_encoding);
      break;
    case PROP_CATEGORIES_LOCATION:
      g_value_set_string (value, self->categories_location);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_mask_rcnn_export_finalize (GObject *object)
{
  GstMaskRcnnExport *self = GST_MASK_RCNN_EXPORT (object);

  g_free (self->location);
  g_free (self->categories_location);
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static void
gst_mask_rcnn_export_class_init (GstMaskRcnnExportClass *klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS (klass);
  /* read at start (READY to PAUSED) */
  const GParamFlags ready = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS
      | GST_PARAM_MUTABLE_READY;

  gobject_class->set_property = gst_mask_rcnn_export_set_property;
  gobject_class->get_property = gst_mask_rcnn_export_get_property;
  gobject_class->finalize = gst_mask_rcnn_export_finalize;

  g_object_class_install_property (gobject_class, PROP_LOCATION,
      g_param_spec_string ("location", "Location",
          "File the detections are written to (replaced if it exists)",
          NULL, ready));
  g_object_class_install_property (gobject_class, PROP_FORMAT,
      g_param_spec_enum ("format", "Format",
          "jsonl: one JSON object per frame, flushed as frames pass; coco: "
          "a COCO results array (image_id = frame number) written at EOS; "
          "mot: MOTChallenge lines (frame from 1, track id, box, score) of "
          "the detections maskrcnntracker gave a track id",
          GST_TYPE_MASK_RCNN_EXPORT_FORMAT, DEFAULT_FORMAT, ready));
  g_object_class_install_property (gobject_class, PROP_MASK_ENCODING,
      g_param_spec_enum ("mask-encoding", "Mask encoding",
          "How each mask is written as the COCO segmentation: compressed "
          "RLE over the frame, or polygons (outer contours, no holes)",
          GST_TYPE_MASK_RCNN_EXPORT_MASK_ENCODING, DEFAULT_MASK_ENCODING,
          ready));
  g_object_class_install_property (gobject_class, PROP_CATEGORIES_LOCATION,
      g_param_spec_string ("categories-location", "Categories location",
          "Optional file for the COCO categories of the classes seen, "
          "[{\"id\": .., \"name\": .., \"model\": ..}], written at EOS: "
          "each model's classes apart (\"model\" as the detections give it, "
          "where known), by model, then id", NULL, ready));

  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);
  gst_element_class_set_static_metadata (element_class,
      "Mask R-CNN export", "Filter/Analyzer/Video",
      "Writes Mask R-CNN detections with their masks as JSON Lines or COCO "
      "results", "gst-maskrcnn developers");

  trans_class->start = GST_DEBUG_FUNCPTR (gst_mask_rcnn_export_start);
  trans_class->stop = GST_DEBUG_FUNCPTR (gst_mask_rcnn_export_stop);
  trans_class->sink_event = GST_DEBUG_FUNCPTR (gst_mask_rcnn_export_sink_event);
  trans_class->transform_ip =
      GST_DEBUG_FUNCPTR (gst_mask_rcnn_export_transform_ip);

  gst_type_mark_as_plugin_api (GST_TYPE_MASK_RCNN_EXPORT_FORMAT, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_MASK_RCNN_EXPORT_MASK_ENCODING, 0);
}

static void
gst_mask_rcnn_export_init (GstMaskRcnnExport *self)
{
  self->format = DEFAULT_FORMAT;
  self->mask_encoding = DEFAULT_MASK_ENCODING;
  gst_base_transform_set_passthrough (GST_BASE_TRANSFORM (self), TRUE);
  gst_base_transform_set_in_place (GST_BASE_TRANSFORM (self), TRUE);
}
