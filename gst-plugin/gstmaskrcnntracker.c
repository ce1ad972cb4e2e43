/**
 * SECTION:element-maskrcnntracker
 * @title: maskrcnntracker
 *
 * Follows the objects that maskrcnn detects from frame to frame: every
 * detection of the #GstMaskRcnnMeta gets a track id (its `track_id`, and an
 * `object_id` parameter on its region-of-interest meta, where DL Streamer's
 * consumers read it) that stays the same while the object stays in view.
 *
 * Detections are matched to tracks by the overlap of their masks with the
 * tracks' last masks, moved to where a constant-velocity model of each
 * track's box puts them: masks keep apart overlapping objects whose boxes
 * a box tracker would confuse.  The matching is an optimal assignment (the
 * Hungarian algorithm) over the pairs of the same class that overlap
 * enough.  A new track gets its id once it has been matched
 * `confirm-frames` times in a row (until then its detections carry track
 * id 0); a track that loses its object is kept `lost-frames` frames, moving
 * on, so that an object hidden for a while gets its id back.
 *
 * Results maskrcnn repeats on frames it did not analyse (`interval`, late
 * frames, the live mode) are not new evidence: they keep the ids they got
 * when they were new, and the tracks move on by the frame numbers the
 * results were computed on.  Tracks start again (ids from 1) at a flush,
 * a new stream and a caps change.
 *
 * Behind chained maskrcnn elements (a frame with a #GstMaskRcnnMeta of
 * each model), each model's detections are tracked on their own (told
 * apart by `model_name`), with ids unique in the stream.
 *
 * |[
 * gst-launch-1.0 v4l2src ! videoconvert ! maskrcnn model=model.safetensors \
 *   ! maskrcnntracker ! maskrcnnoverlay colour-by=track ! videoconvert \
 *   ! autovideosink
 * ]|
 */
#include "gstmaskrcnntracker.h"

#include <gst/video/video.h>

#include "meta/gstmaskrcnnmeta.h"

GST_DEBUG_CATEGORY_STATIC (gst_mask_rcnn_tracker_debug);
#define GST_CAT_DEFAULT gst_mask_rcnn_tracker_debug

enum
{
  PROP_0,
  PROP_ASSOCIATION,
  PROP_IOU_THRESHOLD,
  PROP_CONFIRM_FRAMES,
  PROP_LOST_FRAMES,
};

#define DEFAULT_ASSOCIATION MASK_TRACKER_MASK
#define DEFAULT_IOU_THRESHOLD 0.2
#define DEFAULT_CONFIRM_FRAMES 3
#define DEFAULT_LOST_FRAMES 30

#define GST_TYPE_MASK_RCNN_TRACKER_ASSOCIATION \
  (gst_mask_rcnn_tracker_association_get_type ())
static GType
gst_mask_rcnn_tracker_association_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    { MASK_TRACKER_MASK, "Mask IoU (box IoU for detections without a mask)",
        "mask" },
    { MASK_TRACKER_BOX, "Box IoU only", "box" },
    { 0, NULL, NULL },
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstMaskRcnnTrackerAssociation",
        values);
    g_once_init_leave (&type, t);
  }
  return type;
}

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS ("video/x-raw(ANY)"));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS ("video/x-raw(ANY)"));

#define gst_mask_rcnn_tracker_parent_class parent_class
G_DEFINE_TYPE (GstMaskRcnnTracker, gst_mask_rcnn_tracker,
    GST_TYPE_BASE_TRANSFORM);
GST_ELEMENT_REGISTER_DEFINE_WITH_CODE (maskrcnntracker, "maskrcnntracker",
    GST_RANK_NONE, GST_TYPE_MASK_RCNN_TRACKER,
    GST_DEBUG_CATEGORY_INIT (gst_mask_rcnn_tracker_debug, "maskrcnntracker",
        0, "Mask R-CNN instance tracker"));

/* The tracks of one model's detections. */
typedef struct {
  gchar *model_name;      /* the metas' model_name (NULL: unknown) */
  guint occurrence;       /* which of the frame's metas of that model */
  MaskTracker *tracker;
  gboolean have_results;
  guint64 results_frame;  /* result_frame_number of the last update */
  GArray *ids;            /* guint64, the track id of each of its detections */
} ModelTracks;

static void
model_tracks_free (gpointer data)
{
  ModelTracks *m = data;
  g_free (m->model_name);
  mask_tracker_free (m->tracker);
  g_array_unref (m->ids);
  g_free (m);
}

/* The tracks of the occurrence-th meta of model_name on a frame; NULL
 * before its first results. */
static ModelTracks *
find_tracks (GstMaskRcnnTracker *self, const gchar *model_name,
    guint occurrence)
{
  for (guint i = 0; i < self->models->len; i++) {
    ModelTracks *m = g_ptr_array_index (self->models, i);
    if (g_strcmp0 (m->model_name, model_name) == 0
        && m->occurrence == occurrence)
      return m;
  }
  return NULL;
}

/* The same, made at its first results. */
static ModelTracks *
model_tracks (GstMaskRcnnTracker *self, const gchar *model_name,
    guint occurrence)
{
  ModelTracks *m = find_tracks (self, model_name, occurrence);
  if (m)
    return m;
  m = g_new0 (ModelTracks, 1);
  m->model_name = g_strdup (model_name);
  m->occurrence = occurrence;
  GST_OBJECT_LOCK (self);
  m->tracker = mask_tracker_new (&self->settings, &self->next_id);
  GST_OBJECT_UNLOCK (self);
  m->ids = g_array_new (FALSE, TRUE, sizeof (guint64));
  g_ptr_array_add (self->models, m);
  return m;
}

/* One of the frame's metas, and which of its model's metas it is (0 but
 * where two carry the same model_name). */
typedef struct {
  GstMaskRcnnMeta *meta;
  guint occurrence;
} FrameMeta;

/* How many of the frame's metas (so far, while collect_metas runs) are of
 * model_name. */
static guint
count_metas (GstMaskRcnnTracker *self, const gchar *model_name)
{
  guint n = 0;
  for (guint i = 0; i < self->frame_metas->len; i++)
    n += g_strcmp0 (g_array_index (self->frame_metas, FrameMeta,
            i).meta->model_name, model_name) == 0;
  return n;
}

/* The frame's metas into self->frame_metas, in their order. */
static void
collect_metas (GstMaskRcnnTracker *self, GstBuffer *buffer)
{
  g_array_set_size (self->frame_metas, 0);
  gpointer state = NULL;
  GstMaskRcnnMeta *meta;
  while ((meta = gst_buffer_iterate_mask_rcnn_meta (buffer, &state))) {
    FrameMeta f = { meta, count_metas (self, meta->model_name) };
    g_array_append_val (self->frame_metas, f);
  }
}

/* Every track is forgotten: a new stream, a seek, other caps. */
static void
restart (GstMaskRcnnTracker *self, const gchar *why)
{
  GST_DEBUG_OBJECT (self, "tracks start again: %s", why);
  g_ptr_array_set_size (self->models, 0);
  self->next_id = 1;
}

static gboolean
gst_mask_rcnn_tracker_start (GstBaseTransform *trans)
{
  restart (GST_MASK_RCNN_TRACKER (trans), "start");
  return TRUE;
}

static gboolean
gst_mask_rcnn_tracker_stop (GstBaseTransform *trans)
{
  g_ptr_array_set_size (GST_MASK_RCNN_TRACKER (trans)->models, 0);
  return TRUE;
}

static gboolean
gst_mask_rcnn_tracker_set_caps (GstBaseTransform *trans, GstCaps *incaps,
    GstCaps *outcaps)
{
  restart (GST_MASK_RCNN_TRACKER (trans), "caps");
  return TRUE;
}

static gboolean
gst_mask_rcnn_tracker_sink_event (GstBaseTransform *trans, GstEvent *event)
{
  GstMaskRcnnTracker *self = GST_MASK_RCNN_TRACKER (trans);
  switch (GST_EVENT_TYPE (event)) {
    case GST_EVENT_FLUSH_STOP:
      restart (self, "flush");
      break;
    case GST_EVENT_STREAM_START:
      restart (self, "stream start");
      break;
    default:
      break;
  }
  return GST_BASE_TRANSFORM_CLASS (parent_class)->sink_event (trans, event);
}

static void
update (GstMaskRcnnTracker *self, ModelTracks *m, GstMaskRcnnMeta *meta)
{
  GST_OBJECT_LOCK (self);
  mask_tracker_set_settings (m->tracker, &self->settings);
  GST_OBJECT_UNLOCK (self);
  guint n = meta->n_detections;
  g_array_set_size (self->detections, n);
  g_array_set_size (m->ids, n);
  for (guint i = 0; i < n; i++) {
    const GstMaskRcnnDetection *d = &meta->detections[i];
    MaskTrackerDetection *out = &g_array_index (self->detections,
        MaskTrackerDetection, i);
    *out = (MaskTrackerDetection) {
      .class_id = d->class_id,
      .box = { d->x, d->y, d->x + d->width, d->y + d->height },
      .mask_x = d->mask_x, .mask_y = d->mask_y,
      .mask_width = (int) d->mask_width, .mask_height = (int) d->mask_height,
      .mask = d->mask,
    };
  }
  mask_tracker_update (m->tracker, meta->result_frame_number,
      (const MaskTrackerDetection *) self->detections->data, n,
      (guint64 *) m->ids->data);
  m->have_results = TRUE;
  m->results_frame = meta->result_frame_number;
  GST_LOG_OBJECT (self, "%s, frame %" G_GUINT64_FORMAT ": %u detections, %u "
      "tracks", GST_STR_NULL (m->model_name), meta->result_frame_number, n,
      mask_tracker_n_tracks (m->tracker));
}

/* The ids on the region-of-interest metas maskrcnn added (ROI id = index
 * of the detection in the meta of the model its "detection" structure
 * names), as DL Streamer's object_id parameter.  Where two metas of the
 * frame have the same model, its ROIs are left untagged: which meta an
 * ROI belongs to is unknown. */
static void
tag_regions (GstMaskRcnnTracker *self, GstBuffer *buffer)
{
  gpointer state = NULL;
  GstMeta *m;
  while ((m = gst_buffer_iterate_meta_filtered (buffer, &state,
              GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE))) {
    GstVideoRegionOfInterestMeta *roi = (GstVideoRegionOfInterestMeta *) m;
    GstStructure *detection =
        gst_video_region_of_interest_meta_get_param (roi, "detection");
    if (!detection)
      continue;
    const gchar *model = gst_structure_get_string (detection, "model");
    ModelTracks *tracks = count_metas (self, model) == 1
        ? find_tracks (self, model, 0) : NULL;
    if (!tracks || roi->id < 0 || (guint) roi->id >= tracks->ids->len)
      continue;
    for (GList *l = roi->params; l;) {
      GList *next = l->next;
      if (gst_structure_has_name (l->data, "object_id")) {
        gst_structure_free (l->data);
        roi->params = g_list_delete_link (roi->params, l);
      }
      l = next;
    }
    guint64 id = g_array_index (tracks->ids, guint64, roi->id);
    if (id)
      gst_video_region_of_interest_meta_add_param (roi,
          gst_structure_new ("object_id", "id", G_TYPE_INT, (gint) id, NULL));
  }
}

/* One model's meta: new results update its tracks; repeated ones keep the
 * ids they got when they were new. */
static void
track_meta (GstMaskRcnnTracker *self, GstMaskRcnnMeta *meta,
    guint occurrence)
{
  ModelTracks *m = model_tracks (self, meta->model_name, occurrence);
  if (!m->have_results || meta->result_frame_number != m->results_frame
      || meta->n_detections != m->ids->len)
    update (self, m, meta);
  for (guint i = 0; i < meta->n_detections; i++)
    meta->detections[i].track_id = g_array_index (m->ids, guint64, i);
}

static GstFlowReturn
gst_mask_rcnn_tracker_transform_ip (GstBaseTransform *trans, GstBuffer *buf)
{
  GstMaskRcnnTracker *self = GST_MASK_RCNN_TRACKER (trans);
  collect_metas (self, buf);
  /* a model's frame numbers going back: a new stream upstream that did
   * not pass here; all tracks start again before any id is given */
  for (guint i = 0; i < self->frame_metas->len; i++) {
    FrameMeta *f = &g_array_index (self->frame_metas, FrameMeta, i);
    ModelTracks *tracks = find_tracks (self, f->meta->model_name,
        f->occurrence);
    if (tracks && tracks->have_results
        && f->meta->result_frame_number < tracks->results_frame) {
      restart (self, "frame numbers went back");
      break;
    }
  }
  for (guint i = 0; i < self->frame_metas->len; i++) {
    FrameMeta *f = &g_array_index (self->frame_metas, FrameMeta, i);
    track_meta (self, f->meta, f->occurrence);
  }
  if (self->frame_metas->len)
    tag_regions (self, buf);
  return GST_FLOW_OK;
}

static void
gst_mask_rcnn_tracker_set_property (GObject *object, guint prop_id,
    const GValue *value, GParamSpec *pspec)
{
  GstMaskRcnnTracker *self = GST_MASK_RCNN_TRACKER (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_ASSOCIATION:
      self->settings.association = g_value_get_enum (value);
      break;
    case PROP_IOU_THRESHOLD:
      self->settings.min_iou = g_value_get_double (value);
      break;
    case PROP_CONFIRM_FRAMES:
      self->settings.confirm_hits = g_value_get_uint (value);
      break;
    case PROP_LOST_FRAMES:
      self->settings.max_lost = g_value_get_uint (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_mask_rcnn_tracker_get_property (GObject *object, guint prop_id,
    GValue *value, GParamSpec *pspec)
{
  GstMaskRcnnTracker *self = GST_MASK_RCNN_TRACKER (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_ASSOCIATION:
      g_value_set_enum (value, self->settings.association);
      break;
    case PROP_IOU_THRESHOLD:
      g_value_set_double (value, self->settings.min_iou);
      break;
    case PROP_CONFIRM_FRAMES:
      g_value_set_uint (value, self->settings.confirm_hits);
      break;
    case PROP_LOST_FRAMES:
      g_value_set_uint (value, self->settings.max_lost);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_mask_rcnn_tracker_finalize (GObject *object)
{
  GstMaskRcnnTracker *self = GST_MASK_RCNN_TRACKER (object);
  g_ptr_array_unref (self->models);
  g_array_unref (self->detections);
  g_array_unref (self->frame_metas);
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static void
gst_mask_rcnn_tracker_class_init (GstMaskRcnnTrackerClass *klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS (klass);
  /* taken at the next frame with new results */
  const GParamFlags playing = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS
      | GST_PARAM_MUTABLE_PLAYING;

  gobject_class->set_property = gst_mask_rcnn_tracker_set_property;
  gobject_class->get_property = gst_mask_rcnn_tracker_get_property;
  gobject_class->finalize = gst_mask_rcnn_tracker_finalize;

  g_object_class_install_property (gobject_class, PROP_ASSOCIATION,
      g_param_spec_enum ("association", "Association",
          "What a detection is matched to a track by: the overlap (IoU) of "
          "its mask with the track's last mask moved by the track's motion "
          "(mask), or of the boxes (box)",
          GST_TYPE_MASK_RCNN_TRACKER_ASSOCIATION, DEFAULT_ASSOCIATION,
          playing));
  g_object_class_install_property (gobject_class, PROP_IOU_THRESHOLD,
      g_param_spec_double ("iou-threshold", "IoU threshold",
          "Smallest IoU between a detection and a track's predicted mask "
          "(or box) for the two to be matched; lower follows faster "
          "objects, higher swaps fewer identities", 0.01, 1.0,
          DEFAULT_IOU_THRESHOLD, playing));
  g_object_class_install_property (gobject_class, PROP_CONFIRM_FRAMES,
      g_param_spec_uint ("confirm-frames", "Confirm frames",
          "Frames in a row a new track must be matched in before it gets "
          "an id (its detections carry track id 0 until then): filters "
          "out detections that flicker", 1, 1000, DEFAULT_CONFIRM_FRAMES,
          playing));
  g_object_class_install_property (gobject_class, PROP_LOST_FRAMES,
      g_param_spec_uint ("lost-frames", "Lost frames",
          "Frames of the stream a track is kept after its object was last "
          "seen, moving on with its motion model, so that an object hidden "
          "for a while gets its id back", 0, 100000,
          DEFAULT_LOST_FRAMES, playing));

  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);
  gst_element_class_set_static_metadata (element_class,
      "Mask R-CNN tracker", "Filter/Analyzer/Video",
      "Gives Mask R-CNN detections track ids that follow each object from "
      "frame to frame, matching them by mask overlap",
      "gst-maskrcnn developers");

  trans_class->start = GST_DEBUG_FUNCPTR (gst_mask_rcnn_tracker_start);
  trans_class->stop = GST_DEBUG_FUNCPTR (gst_mask_rcnn_tracker_stop);
  trans_class->set_caps = GST_DEBUG_FUNCPTR (gst_mask_rcnn_tracker_set_caps);
  trans_class->sink_event =
      GST_DEBUG_FUNCPTR (gst_mask_rcnn_tracker_sink_event);
  trans_class->transform_ip =
      GST_DEBUG_FUNCPTR (gst_mask_rcnn_tracker_transform_ip);

  gst_type_mark_as_plugin_api (GST_TYPE_MASK_RCNN_TRACKER_ASSOCIATION, 0);
}

static void
gst_mask_rcnn_tracker_init (GstMaskRcnnTracker *self)
{
  self->settings = (MaskTrackerSettings) {
    .association = DEFAULT_ASSOCIATION,
    .min_iou = DEFAULT_IOU_THRESHOLD,
    .confirm_hits = DEFAULT_CONFIRM_FRAMES,
    .max_lost = DEFAULT_LOST_FRAMES,
  };
  self->models = g_ptr_array_new_with_free_func (model_tracks_free);
  self->detections = g_array_new (FALSE, TRUE, sizeof (MaskTrackerDetection));
  self->frame_metas = g_array_new (FALSE, FALSE, sizeof (FrameMeta));
  /* in place, writing the meta: never passthrough */
  gst_base_transform_set_in_place (GST_BASE_TRANSFORM (self), TRUE);
}
