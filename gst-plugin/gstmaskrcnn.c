/**
 * SECTION:element-maskrcnn
 * @title: maskrcnn
 *
 * Runs Mask R-CNN instance segmentation on every frame (or one frame in
 * interval + 1) and attaches the detections to the buffer as
 * #GstMaskRcnnMeta (box, class, score and a box-sized mask at frame
 * resolution) and as one #GstVideoRegionOfInterestMeta per detection.  The
 * frame's pixels pass through untouched; maskrcnnoverlay draws the results.
 *
 * Models: torchvision maskrcnn_resnet50_fpn weights as .safetensors, or
 * matterport's Keras .h5 weights (mask_rcnn_coco.h5 or a custom-trained
 * one, with its settings in the `config` sidecar).
 *
 * |[
 * gst-launch-1.0 filesrc location=in.mp4 ! decodebin ! videoconvert ! \
 *   maskrcnn model=maskrcnn_resnet50_fpn.safetensors ! maskrcnnoverlay ! \
 *   videoconvert ! autovideosink
 * ]|
 */
#include "gstmaskrcnn.h"

#include <math.h>
#include <string.h>

#include "meta/gstmaskrcnnmeta.h"

GST_DEBUG_CATEGORY_STATIC (gst_mask_rcnn_debug);
#define GST_CAT_DEFAULT gst_mask_rcnn_debug

#define VIDEO_CAPS \
  GST_VIDEO_CAPS_MAKE ("{ RGB, BGR, RGBx, BGRx, xRGB, xBGR, RGBA, BGRA, " \
      "ARGB, ABGR, NV12, I420 }") ", width = (int) [ 16, 8192 ], " \
      "height = (int) [ 16, 8192 ]"

enum
{
  PROP_0,
  PROP_MODEL,
  PROP_CONFIG,
  PROP_BACKEND,
  PROP_DEVICE_ID,
  PROP_PRECISION,
  PROP_SCORE_THRESHOLD,
  PROP_NMS_THRESHOLD,
  PROP_MAX_DETECTIONS,
  PROP_MASK_THRESHOLD,
  PROP_CLASSES,
  PROP_INTERVAL,
  PROP_LABELS,
  PROP_SOFT_MASKS,
  PROP_ROI_META,
};

#define DEFAULT_BACKEND MRCNN_BACKEND_AUTO
#define DEFAULT_PRECISION MRCNN_PRECISION_FP32
#define DEFAULT_THRESHOLD -1.0f
#define DEFAULT_MAX_DETECTIONS -1
#define DEFAULT_INTERVAL 0
#define DEFAULT_SOFT_MASKS FALSE
#define DEFAULT_ROI_META TRUE

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS (VIDEO_CAPS));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS (VIDEO_CAPS));

#define GST_TYPE_MASK_RCNN_BACKEND (gst_mask_rcnn_backend_get_type ())
static GType
gst_mask_rcnn_backend_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    { MRCNN_BACKEND_AUTO, "CUDA when a usable GPU exists, else CPU", "auto" },
    { MRCNN_BACKEND_CPU, "CPU (OpenBLAS)", "cpu" },
    { MRCNN_BACKEND_CUDA, "CUDA GPU", "cuda" },
    { 0, NULL, NULL },
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstMaskRcnnBackend", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define GST_TYPE_MASK_RCNN_PRECISION (gst_mask_rcnn_precision_get_type ())
static GType
gst_mask_rcnn_precision_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    { MRCNN_PRECISION_FP32, "32-bit floating point", "fp32" },
    { MRCNN_PRECISION_FP16, "16-bit floating point (CUDA backend only)",
        "fp16" },
    { 0, NULL, NULL },
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstMaskRcnnPrecision", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define gst_mask_rcnn_parent_class parent_class
G_DEFINE_TYPE (GstMaskRcnn, gst_mask_rcnn, GST_TYPE_BASE_TRANSFORM);
GST_ELEMENT_REGISTER_DEFINE_WITH_CODE (maskrcnn, "maskrcnn", GST_RANK_NONE,
    GST_TYPE_MASK_RCNN,
    GST_DEBUG_CATEGORY_INIT (gst_mask_rcnn_debug, "maskrcnn", 0,
        "Mask R-CNN instance segmentation"));

/* The model used when the property is not set: GST_MASKRCNN_MODEL where
 * set (empty: none, for running without one), else the installed shapes
 * demo model where it exists.  Read once, when the class is made. */
static const gchar *
default_model_path (void)
{
  static const gchar *path;
  static gsize done;
  if (g_once_init_enter (&done)) {
    const gchar *env = g_getenv ("GST_MASKRCNN_MODEL");
    if (env)
      path = *env ? g_strdup (env) : NULL;
    else if (g_file_test (MRCNN_DEFAULT_MODEL, G_FILE_TEST_IS_REGULAR))
      path = MRCNN_DEFAULT_MODEL;
    g_once_init_leave (&done, 1);
  }
  return path;
}

static gboolean
element_is_running (GstMaskRcnn *self)
{
  return GST_STATE (self) >= GST_STATE_PAUSED
      || GST_STATE_PENDING (self) >= GST_STATE_PAUSED;
}

static void
gst_mask_rcnn_set_property (GObject *object, guint prop_id,
    const GValue *value, GParamSpec *pspec)
{
  GstMaskRcnn *self = GST_MASK_RCNN (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL:
    case PROP_CONFIG:
    case PROP_LABELS:
    case PROP_BACKEND:
    case PROP_DEVICE_ID:
    case PROP_PRECISION:
      if (element_is_running (self))
        GST_WARNING_OBJECT (self, "%s changed while running: it takes effect "
            "at the next start (READY to PAUSED)", pspec->name);
      break;
    default:
      break;
  }
  switch (prop_id) {
    case PROP_MODEL:
      g_free (self->model_path);
      self->model_path = g_value_dup_string (value);
      break;
    case PROP_CONFIG:
      g_free (self->config_path);
      self->config_path = g_value_dup_string (value);
      break;
    case PROP_LABELS:
      g_free (self->labels_path);
      self->labels_path = g_value_dup_string (value);
      break;
    case PROP_BACKEND:
      self->backend = g_value_get_enum (value);
      break;
    case PROP_DEVICE_ID:
      self->device_id = g_value_get_int (value);
      break;
    case PROP_PRECISION:
      self->precision = g_value_get_enum (value);
      break;
    case PROP_SCORE_THRESHOLD:
      self->score_threshold = g_value_get_float (value);
      self->thresholds_changed = TRUE;
      break;
    case PROP_NMS_THRESHOLD:
      self->nms_threshold = g_value_get_float (value);
      self->thresholds_changed = TRUE;
      break;
    case PROP_MAX_DETECTIONS:
      self->max_detections = g_value_get_int (value);
      self->thresholds_changed = TRUE;
      break;
    case PROP_MASK_THRESHOLD:
      self->mask_threshold = g_value_get_float (value);
      self->thresholds_changed = TRUE;
      break;
    case PROP_CLASSES:
      g_free (self->classes);
      self->classes = g_value_dup_string (value);
      self->classes_changed = TRUE;
      break;
    case PROP_INTERVAL:
      self->interval = g_value_get_uint (value);
      break;
    case PROP_SOFT_MASKS:
      self->soft_masks = g_value_get_boolean (value);
      break;
    case PROP_ROI_META:
      self->roi_meta = g_value_get_boolean (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_mask_rcnn_get_property (GObject *object, guint prop_id, GValue *value,
    GParamSpec *pspec)
{
  GstMaskRcnn *self = GST_MASK_RCNN (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL:
      g_value_set_string (value, self->model_path);
      break;
    case PROP_CONFIG:
      g_value_set_string (value, self->config_path);
      break;
    case PROP_LABELS:
      g_value_set_string (value, self->labels_path);
      break;
    case PROP_BACKEND:
      g_value_set_enum (value, self->backend);
      break;
    case PROP_DEVICE_ID:
      g_value_set_int (value, self->device_id);
      break;
    case PROP_PRECISION:
      g_value_set_enum (value, self->precision);
      break;
    case PROP_SCORE_THRESHOLD:
      g_value_set_float (value, self->score_threshold);
      break;
    case PROP_NMS_THRESHOLD:
      g_value_set_float (value, self->nms_threshold);
      break;
    case PROP_MAX_DETECTIONS:
      g_value_set_int (value, self->max_detections);
      break;
    case PROP_MASK_THRESHOLD:
      g_value_set_float (value, self->mask_threshold);
      break;
    case PROP_CLASSES:
      g_value_set_string (value, self->classes);
      break;
    case PROP_INTERVAL:
      g_value_set_uint (value, self->interval);
      break;
    case PROP_SOFT_MASKS:
      g_value_set_boolean (value, self->soft_masks);
      break;
    case PROP_ROI_META:
      g_value_set_boolean (value, self->roi_meta);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

/* Class names from the labels file: one per line, either one per class of
 * the model or one per class without the background (class 0). */
static gchar **
read_labels (const gchar *path, int num_classes, GError **error)
{
  gchar *text;
  if (!g_file_get_contents (path, &text, NULL, error))
    return NULL;
  gchar **lines = g_strsplit (text, "\n", -1);
  g_free (text);
  int n = g_strv_length (lines);
  while (n > 0 && *g_strstrip (lines[n - 1]) == '\0') {
    g_free (lines[n - 1]);
    lines[--n] = NULL;
  }
  if (n != num_classes && n != num_classes - 1) {
    g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
        "%s has %d labels; the model has %d classes, so it needs %d lines "
        "(%d without the background)", path, n, num_classes, num_classes,
        num_classes - 1);
    g_strfreev (lines);
    return NULL;
  }
  gchar **names = g_new0 (gchar *, num_classes + 1);
  int offset = num_classes - n;
  names[0] = g_strdup (offset ? "background" : g_strstrip (lines[0]));
  for (int i = offset; i < num_classes; i++)
    names[i] = g_strdup (g_strstrip (lines[i - offset]));
  g_strfreev (lines);
  return names;
}

/* The class filter of the `classes` property: NULL keeps all. */
static gboolean
resolve_classes (GstMaskRcnn *self, const gchar *classes, gboolean **keep,
    GError **error)
{
  int n = mrcnn_model_num_classes (self->model);
  gboolean *k = g_new0 (gboolean, n);
  gchar **wanted = g_strsplit (classes ? classes : "", ",", -1);
  gboolean any = FALSE, ok = TRUE;
  for (gchar **w = wanted; *w && ok; w++) {
    const gchar *name = g_strstrip (*w);
    if (!*name)
      continue;
    int id = 1;
    while (id < n && strcmp (self->class_names[id], name) != 0)
      id++;
    if (id == n) {
      GString *all = g_string_new (NULL);
      for (int i = 1; i < n; i++)
        g_string_append_printf (all, "%s%s", i > 1 ? ", " : "",
            self->class_names[i]);
      g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
          "classes: \"%s\" is not a class of this model (its classes: %s)",
          name, all->str);
      g_string_free (all, TRUE);
      ok = FALSE;
    } else {
      k[id] = any = TRUE;
    }
  }
  g_strfreev (wanted);
  if (!ok || !any) {
    g_free (k);
    k = NULL;
  }
  *keep = k;
  return ok;
}

static void
clear_stream_state (GstMaskRcnn *self)
{
  mrcnn_engine_free (self->engine);
  self->engine = NULL;
  mrcnn_model_free (self->model);
  self->model = NULL;
  g_strfreev (self->class_names);
  self->class_names = NULL;
  g_clear_pointer (&self->keep_class, g_free);
  mrcnn_result_clear (&self->result);
  self->have_result = FALSE;
}

static gboolean
gst_mask_rcnn_start (GstBaseTransform *trans)
{
  GstMaskRcnn *self = GST_MASK_RCNN (trans);
  GError *error = NULL;

  GST_OBJECT_LOCK (self);
  gchar *model_path = g_strdup (self->model_path);
  gchar *config_path = g_strdup (self->config_path);
  gchar *labels_path = g_strdup (self->labels_path);
  gchar *classes = g_strdup (self->classes);
  MrcnnOptions options;
  mrcnn_options_init (&options);
  options.backend = self->backend;
  options.device_id = self->device_id;
  options.precision = self->precision;
  options.score_threshold = self->score_threshold;
  options.nms_threshold = self->nms_threshold;
  options.max_detections = self->max_detections;
  options.mask_threshold = self->mask_threshold;
  self->thresholds_changed = self->classes_changed = FALSE;
  GST_OBJECT_UNLOCK (self);

  gboolean ok = FALSE;
  if (!model_path || !*model_path) {
    GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND,
        ("No model given: set the \"model\" property to a .safetensors "
            "(torchvision) or .h5 (matterport) weights file, or "
            "GST_MASKRCNN_MODEL to its path."), (NULL));
    goto done;
  }
  self->model = mrcnn_model_load_with_config (model_path, config_path,
      &error);
  if (!self->model) {
    GST_ELEMENT_ERROR (self, RESOURCE, OPEN_READ,
        ("Could not load the Mask R-CNN model: %s", error->message),
        ("model=%s config=%s", model_path, GST_STR_NULL (config_path)));
    goto done;
  }
  int n = mrcnn_model_num_classes (self->model);
  if (labels_path && *labels_path) {
    self->class_names = read_labels (labels_path, n, &error);
    if (!self->class_names) {
      GST_ELEMENT_ERROR (self, RESOURCE, OPEN_READ,
          ("Could not read the labels file: %s", error->message), (NULL));
      goto done;
    }
  } else {
    self->class_names = g_new0 (gchar *, n + 1);
    for (int i = 0; i < n; i++)
      self->class_names[i] = g_strdup (mrcnn_model_class_name (self->model,
              i));
  }
  if (!resolve_classes (self, classes, &self->keep_class, &error)) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS, ("%s", error->message),
        (NULL));
    goto done;
  }
  self->engine = mrcnn_engine_new (self->model, &options, &error);
  if (!self->engine) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("Could not start the Mask R-CNN engine: %s", error->message),
        ("backend=%d device-id=%d precision=%d", options.backend,
            options.device_id, options.precision));
    goto done;
  }
  GST_INFO_OBJECT (self, "loaded %s on the %s backend", model_path,
      mrcnn_engine_backend_name (self->engine));
  self->frames_to_skip = 0;
  ok = TRUE;

done:
  if (!ok)
    clear_stream_state (self);
  g_clear_error (&error);
  g_free (model_path);
  g_free (config_path);
  g_free (labels_path);
  g_free (classes);
  return ok;
}

static gboolean
gst_mask_rcnn_stop (GstBaseTransform *trans)
{
  GstMaskRcnn *self = GST_MASK_RCNN (trans);

  clear_stream_state (self);
  g_clear_pointer (&self->converter, gst_video_converter_free);
  gst_clear_buffer (&self->rgb_buffer);
  return TRUE;
}

static gboolean
gst_mask_rcnn_set_caps (GstBaseTransform *trans, GstCaps *incaps,
    GstCaps *outcaps)
{
  GstMaskRcnn *self = GST_MASK_RCNN (trans);

  if (!gst_video_info_from_caps (&self->info, incaps)) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("Invalid video caps: %" GST_PTR_FORMAT, incaps), (NULL));
    return FALSE;
  }
  g_clear_pointer (&self->converter, gst_video_converter_free);
  gst_clear_buffer (&self->rgb_buffer);
  if (GST_VIDEO_INFO_FORMAT (&self->info) != GST_VIDEO_FORMAT_RGB) {
    int w = GST_VIDEO_INFO_WIDTH (&self->info);
    int h = GST_VIDEO_INFO_HEIGHT (&self->info);
    gst_video_info_set_format (&self->rgb_info, GST_VIDEO_FORMAT_RGB, w, h);
    /* the converter wants both sides to agree on everything but format */
    self->rgb_info.fps_n = self->info.fps_n;
    self->rgb_info.fps_d = self->info.fps_d;
    self->rgb_info.par_n = self->info.par_n;
    self->rgb_info.par_d = self->info.par_d;
    self->rgb_info.interlace_mode = self->info.interlace_mode;
    self->converter = gst_video_converter_new (&self->info, &self->rgb_info,
        gst_structure_new ("options", GST_VIDEO_CONVERTER_OPT_THREADS,
            G_TYPE_UINT, 1, NULL));
    self->rgb_buffer = gst_buffer_new_allocate (NULL,
        GST_VIDEO_INFO_SIZE (&self->rgb_info), NULL);
    if (!self->converter || !self->rgb_buffer) {
      GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
          ("Cannot convert %s frames to RGB",
              gst_video_format_to_string (GST_VIDEO_INFO_FORMAT (&self->info))),
          (NULL));
      return FALSE;
    }
  }
  GST_DEBUG_OBJECT (self, "analysing %dx%d %s", self->info.width,
      self->info.height, gst_video_format_to_string (self->info.finfo->format));
  return TRUE;
}

/* Fixed caps outside the templates are refused (upstream then fails with
 * not-negotiated); a warning first says what would be accepted. */
static gboolean
gst_mask_rcnn_accept_caps (GstBaseTransform *trans, GstPadDirection direction,
    GstCaps *caps)
{
  gboolean ok = GST_BASE_TRANSFORM_CLASS (parent_class)->accept_caps (trans,
      direction, caps);
  if (!ok && direction == GST_PAD_SINK && gst_caps_is_fixed (caps)) {
    gchar *text = gst_caps_to_string (caps);
    GST_ELEMENT_WARNING (trans, STREAM, FORMAT,
        ("maskrcnn cannot analyse %s: it takes video/x-raw in RGB, BGR, "
            "RGBx, BGRx, xRGB, xBGR, RGBA, BGRA, ARGB, ABGR, NV12 or I420, "
            "16x16 to 8192x8192 (put videoconvert and videoscale before it)",
            text), (NULL));
    g_free (text);
  }
  return ok;
}

/* Applies property changes made while streaming. */
static void
update_live_settings (GstMaskRcnn *self)
{
  GST_OBJECT_LOCK (self);
  gboolean thresholds = self->thresholds_changed;
  gboolean classes_changed = self->classes_changed;
  float score = self->score_threshold, nms = self->nms_threshold;
  float mask = self->mask_threshold;
  int max_det = self->max_detections;
  gchar *classes = classes_changed ? g_strdup (self->classes) : NULL;
  self->thresholds_changed = self->classes_changed = FALSE;
  GST_OBJECT_UNLOCK (self);

  GError *error = NULL;
  if (thresholds && !mrcnn_engine_set_thresholds (self->engine, score, nms,
          max_det, mask, &error)) {
    GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS,
        ("Thresholds not changed: %s", error->message), (NULL));
    g_clear_error (&error);
  }
  gboolean *keep;
  if (classes_changed) {
    if (resolve_classes (self, classes, &keep, &error)) {
      g_free (self->keep_class);
      self->keep_class = keep;
    } else {
      GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS,
          ("Class filter not changed: %s", error->message), (NULL));
      g_clear_error (&error);
    }
  }
  g_free (classes);
}

static gboolean
analyse (GstMaskRcnn *self, GstBuffer *buffer)
{
  GstVideoFrame frame, rgb;
  GError *error = NULL;

  if (!gst_video_frame_map (&frame, &self->info, buffer, GST_MAP_READ)) {
    GST_ELEMENT_ERROR (self, STREAM, FAILED, ("Cannot read the frame"),
        (NULL));
    return FALSE;
  }
  GstVideoFrame *src = &frame;
  if (self->converter) {
    if (!gst_video_frame_map (&rgb, &self->rgb_info, self->rgb_buffer,
            GST_MAP_WRITE)) {
      gst_video_frame_unmap (&frame);
      GST_ELEMENT_ERROR (self, STREAM, FAILED, ("Cannot map the RGB frame"),
          (NULL));
      return FALSE;
    }
    gst_video_converter_frame (self->converter, &frame, &rgb);
    src = &rgb;
  }
  MrcnnImage image = {
    .data = GST_VIDEO_FRAME_PLANE_DATA (src, 0),
    .width = GST_VIDEO_FRAME_WIDTH (src),
    .height = GST_VIDEO_FRAME_HEIGHT (src),
    .stride = GST_VIDEO_FRAME_PLANE_STRIDE (src, 0),
  };
  gint64 start = g_get_monotonic_time ();
  gboolean ok = mrcnn_engine_detect (self->engine, &image, &self->result,
      &error);
  self->inference_time = (g_get_monotonic_time () - start) * GST_USECOND;
  if (self->converter)
    gst_video_frame_unmap (&rgb);
  gst_video_frame_unmap (&frame);
  if (!ok) {
    GST_ELEMENT_ERROR (self, STREAM, FAILED,
        ("Mask R-CNN failed on a frame: %s", error->message), (NULL));
    g_clear_error (&error);
    return FALSE;
  }
  self->have_result = TRUE;
  return TRUE;
}

static void
attach_results (GstMaskRcnn *self, GstBuffer *buffer, gboolean repeated)
{
  GST_OBJECT_LOCK (self);
  gboolean soft = self->soft_masks, roi_meta = self->roi_meta;
  GST_OBJECT_UNLOCK (self);

  const MrcnnResult *r = &self->result;
  GstMaskRcnnMeta *meta = gst_buffer_add_mask_rcnn_meta (buffer,
      r->image_width, r->image_height);
  meta->repeated = repeated;
  meta->soft_masks = soft;
  meta->inference_time = self->inference_time;
  for (int i = 0; i < r->n_detections; i++) {
    const MrcnnDetection *d = &r->detections[i];
    if (self->keep_class && !self->keep_class[d->label_id])
      continue;
    const gchar *name = self->class_names[d->label_id];
    float w = d->box[2] - d->box[0], h = d->box[3] - d->box[1];
    GstMaskRcnnDetection *out = gst_mask_rcnn_meta_add_detection (meta,
        d->label_id, name, d->score, d->box[0], d->box[1], w, h, d->mask_x,
        d->mask_y, d->mask_width, d->mask_height, NULL);
    gsize size = (gsize) d->mask_width * d->mask_height;
    for (gsize p = 0; p < size; p++)
      out->mask[p] = soft ? (guint8) lrintf (d->mask[p] * 255.0f)
          : d->mask_binary[p] ? 255 : 0;
    if (!roi_meta)
      continue;
    GstVideoRegionOfInterestMeta *roi =
        gst_buffer_add_video_region_of_interest_meta (buffer, name,
        (guint) floorf (d->box[0]), (guint) floorf (d->box[1]),
        (guint) ceilf (w), (guint) ceilf (h));
    roi->id = i;
    gst_video_region_of_interest_meta_add_param (roi,
        gst_structure_new ("detection",
            "x_min", G_TYPE_DOUBLE, (double) d->box[0] / r->image_width,
            "y_min", G_TYPE_DOUBLE, (double) d->box[1] / r->image_height,
            "x_max", G_TYPE_DOUBLE, (double) d->box[2] / r->image_width,
            "y_max", G_TYPE_DOUBLE, (double) d->box[3] / r->image_height,
            "confidence", G_TYPE_DOUBLE, (double) d->score,
            "label_id", G_TYPE_INT, d->label_id,
            "label", G_TYPE_STRING, name, NULL));
  }
}

static GstFlowReturn
gst_mask_rcnn_transform_ip (GstBaseTransform *trans, GstBuffer *buffer)
{
  GstMaskRcnn *self = GST_MASK_RCNN (trans);

  update_live_settings (self);
  GST_OBJECT_LOCK (self);
  guint interval = self->interval;
  GST_OBJECT_UNLOCK (self);

  gboolean repeated = self->have_result && self->frames_to_skip > 0;
  if (repeated) {
    self->frames_to_skip--;
  } else {
    if (!analyse (self, buffer))
      return GST_FLOW_ERROR;
    self->frames_to_skip = interval;
  }
  attach_results (self, buffer, repeated);
  return GST_FLOW_OK;
}

static void
gst_mask_rcnn_finalize (GObject *object)
{
  GstMaskRcnn *self = GST_MASK_RCNN (object);

  clear_stream_state (self);
  g_clear_pointer (&self->converter, gst_video_converter_free);
  gst_clear_buffer (&self->rgb_buffer);
  g_free (self->model_path);
  g_free (self->config_path);
  g_free (self->labels_path);
  g_free (self->classes);
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static void
gst_mask_rcnn_class_init (GstMaskRcnnClass *klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS (klass);
  const GParamFlags rw = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS;
  const GParamFlags live = rw | GST_PARAM_MUTABLE_PLAYING;
  const GParamFlags ready = rw | GST_PARAM_MUTABLE_READY;

  gobject_class->set_property = gst_mask_rcnn_set_property;
  gobject_class->get_property = gst_mask_rcnn_get_property;
  gobject_class->finalize = gst_mask_rcnn_finalize;

  g_object_class_install_property (gobject_class, PROP_MODEL,
      g_param_spec_string ("model", "Model",
          "Weights file: torchvision maskrcnn_resnet50_fpn as .safetensors, "
          "or matterport Keras .h5 such as mask_rcnn_coco.h5 (read at start; a change while running "
          "applies at the next start).  Default: $GST_MASKRCNN_MODEL, else "
          "the installed shapes demo model " MRCNN_DEFAULT_MODEL,
          default_model_path (), ready));
  g_object_class_install_property (gobject_class, PROP_CONFIG,
      g_param_spec_string ("config", "Config",
          "Optional sidecar (JSON or KEY = VALUE lines) overriding the "
          "model's constants: matterport Config names for .h5 models (e.g. "
          "IMAGE_MAX_DIM, DETECTION_MIN_CONFIDENCE, CLASS_NAMES), the "
          "metadata keys for .safetensors", NULL, ready));
  g_object_class_install_property (gobject_class, PROP_LABELS,
      g_param_spec_string ("labels", "Labels",
          "Optional file of class names, one per line: one per class of "
          "the model, or one per class without the background", NULL,
          ready));
  g_object_class_install_property (gobject_class, PROP_BACKEND,
      g_param_spec_enum ("backend", "Backend", "Where the model runs",
          GST_TYPE_MASK_RCNN_BACKEND, DEFAULT_BACKEND, ready));
  g_object_class_install_property (gobject_class, PROP_DEVICE_ID,
      g_param_spec_int ("device-id", "Device ID",
          "CUDA device index (CUDA backend)", 0, G_MAXINT, 0, ready));
  g_object_class_install_property (gobject_class, PROP_PRECISION,
      g_param_spec_enum ("precision", "Precision",
          "Arithmetic precision of the network", GST_TYPE_MASK_RCNN_PRECISION,
          DEFAULT_PRECISION, ready));
  g_object_class_install_property (gobject_class, PROP_SCORE_THRESHOLD,
      g_param_spec_float ("score-threshold", "Score threshold",
          "Minimum detection score (-1: the model's own)", -1, 1,
          DEFAULT_THRESHOLD, live));
  g_object_class_install_property (gobject_class, PROP_NMS_THRESHOLD,
      g_param_spec_float ("nms-threshold", "NMS threshold",
          "Per-class non-maximum suppression IoU threshold (-1: the "
          "model's own)", -1, 1, DEFAULT_THRESHOLD, live));
  g_object_class_install_property (gobject_class, PROP_MAX_DETECTIONS,
      g_param_spec_int ("max-detections", "Max detections",
          "Detections kept per frame (-1: the model's own)", -1, 1000,
          DEFAULT_MAX_DETECTIONS, live));
  g_object_class_install_property (gobject_class, PROP_MASK_THRESHOLD,
      g_param_spec_float ("mask-threshold", "Mask threshold",
          "Probability from which a pixel belongs to a binary mask (-1: the "
          "model's own)", -1, 1, DEFAULT_THRESHOLD, live));
  g_object_class_install_property (gobject_class, PROP_CLASSES,
      g_param_spec_string ("classes", "Classes",
          "Comma-separated class names to keep, e.g. \"person,car\" (empty "
          "keeps all)", NULL, live));
  g_object_class_install_property (gobject_class, PROP_INTERVAL,
      g_param_spec_uint ("interval", "Interval",
          "Frames skipped after each analysed frame; skipped frames carry "
          "the last results, marked as repeated", 0, G_MAXINT,
          DEFAULT_INTERVAL, live));
  g_object_class_install_property (gobject_class, PROP_SOFT_MASKS,
      g_param_spec_boolean ("soft-masks", "Soft masks",
          "Masks hold probabilities 0..255 instead of 0/255",
          DEFAULT_SOFT_MASKS, live));
  g_object_class_install_property (gobject_class, PROP_ROI_META,
      g_param_spec_boolean ("roi-meta", "Region of interest meta",
          "Also attach a GstVideoRegionOfInterestMeta per detection, with a "
          "\"detection\" structure (x_min, y_min, x_max, y_max normalised, "
          "confidence, label_id, label)", DEFAULT_ROI_META, live));

  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);
  gst_element_class_set_static_metadata (element_class,
      "Mask R-CNN instance segmentation", "Filter/Analyzer/Video",
      "Detects object instances with their masks and attaches them as "
      "metadata", "gst-maskrcnn developers");

  trans_class->start = GST_DEBUG_FUNCPTR (gst_mask_rcnn_start);
  trans_class->stop = GST_DEBUG_FUNCPTR (gst_mask_rcnn_stop);
  trans_class->set_caps = GST_DEBUG_FUNCPTR (gst_mask_rcnn_set_caps);
  trans_class->accept_caps = GST_DEBUG_FUNCPTR (gst_mask_rcnn_accept_caps);
  trans_class->transform_ip = GST_DEBUG_FUNCPTR (gst_mask_rcnn_transform_ip);
  trans_class->passthrough_on_same_caps = FALSE;
  trans_class->transform_ip_on_passthrough = FALSE;

  gst_type_mark_as_plugin_api (GST_TYPE_MASK_RCNN_BACKEND, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_MASK_RCNN_PRECISION, 0);
}

static void
gst_mask_rcnn_init (GstMaskRcnn *self)
{
  self->backend = DEFAULT_BACKEND;
  self->precision = DEFAULT_PRECISION;
  self->score_threshold = self->nms_threshold = self->mask_threshold =
      DEFAULT_THRESHOLD;
  self->max_detections = DEFAULT_MAX_DETECTIONS;
  self->interval = DEFAULT_INTERVAL;
  self->soft_masks = DEFAULT_SOFT_MASKS;
  self->roi_meta = DEFAULT_ROI_META;
  self->model_path = g_strdup (default_model_path ());
  mrcnn_result_init (&self->result);
  gst_base_transform_set_in_place (GST_BASE_TRANSFORM (self), TRUE);
}
