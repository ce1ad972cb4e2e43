/**
 * SECTION:element-maskrcnnoverlay
 * @title: maskrcnnoverlay
 *
 * Draws the detections that maskrcnn attached to each frame
 * (#GstMaskRcnnMeta; behind chained maskrcnn elements, every model's, each
 * model's classes in other colours): masks blended in a colour per class
 * (or per track, after maskrcnntracker), mask contours, boxes and "class score" labels
 * ("#id class score" for tracked objects).  Works in place in every format maskrcnn
 * takes; NV12 and I420 are drawn in YUV (chroma samples blend by how much
 * of them a mask covers).  Frames without the meta pass untouched.
 *
 * |[
 * gst-launch-1.0 v4l2src ! videoconvert ! maskrcnn model=model.safetensors \
 *   ! maskrcnnoverlay mask-alpha=0.4 ! videoconvert ! autovideosink
 * ]|
 */
#include "gstmaskrcnnoverlay.h"

#include <math.h>
#include <string.h>

#include "meta/gstmaskrcnnmeta.h"

GST_DEBUG_CATEGORY_STATIC (gst_mask_rcnn_overlay_debug);
#define GST_CAT_DEFAULT gst_mask_rcnn_overlay_debug

#define VIDEO_CAPS \
  GST_VIDEO_CAPS_MAKE ("{ RGB, BGR, RGBx, BGRx, xRGB, xBGR, RGBA, BGRA, " \
      "ARGB, ABGR, NV12, I420 }")

enum
{
  PROP_0,
  PROP_DRAW_MASKS,
  PROP_DRAW_CONTOURS,
  PROP_DRAW_BOXES,
  PROP_DRAW_LABELS,
  PROP_MASK_ALPHA,
  PROP_LINE_WIDTH,
  PROP_COLOUR_BY,
};

#define DEFAULT_DRAW TRUE
#define DEFAULT_MASK_ALPHA 0.5
#define DEFAULT_LINE_WIDTH 0
#define DEFAULT_COLOUR_BY GST_MASK_RCNN_OVERLAY_COLOUR_CLASS

#define GST_TYPE_MASK_RCNN_OVERLAY_COLOUR \
  (gst_mask_rcnn_overlay_colour_get_type ())
static GType
gst_mask_rcnn_overlay_colour_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    { GST_MASK_RCNN_OVERLAY_COLOUR_CLASS, "A colour per class", "class" },
    { GST_MASK_RCNN_OVERLAY_COLOUR_TRACK, "A colour per track id "
          "(maskrcnntracker); untracked instances in their class colour",
        "track" },
    { 0, NULL, NULL },
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstMaskRcnnOverlayColour", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS (VIDEO_CAPS));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS (VIDEO_CAPS));

#define gst_mask_rcnn_overlay_parent_class parent_class
G_DEFINE_TYPE (GstMaskRcnnOverlay, gst_mask_rcnn_overlay,
    GST_TYPE_VIDEO_FILTER);
GST_ELEMENT_REGISTER_DEFINE_WITH_CODE (maskrcnnoverlay, "maskrcnnoverlay",
    GST_RANK_NONE, GST_TYPE_MASK_RCNN_OVERLAY,
    GST_DEBUG_CATEGORY_INIT (gst_mask_rcnn_overlay_debug, "maskrcnnoverlay",
        0, "Mask R-CNN detection overlay"));

/* A colour in the frame's own components: R, G, B or Y, U, V. */
typedef struct {
  float c[3];
} FrameColour;

/* Stable, well separated colours: hues a golden-ratio step apart, the
 * wheel turned by shift (a fraction of a turn) for another model's
 * classes. */
static void
index_rgb (guint64 index, float shift, float rgb[3])
{
  float h = fmodf ((float) index * 0.618034f + shift, 1.0f) * 6.0f, s = 0.8f,
      v = 0.95f;
  int i = (int) h;
  float f = h - i, p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1
          - f));
  const float table[6][3] = { {v, t, p}, {q, v, p}, {p, v, t}, {p, q, v},
  {t, p, v}, {v, p, q}
  };
  for (int k = 0; k < 3; k++)
    rgb[k] = table[i % 6][k];
}

static FrameColour
frame_colour (const GstVideoInfo *info, const float rgb[3])
{
  FrameColour out;
  if (GST_VIDEO_INFO_IS_RGB (info)) {
    for (int k = 0; k < 3; k++)
      out.c[k] = rgb[k] * 255.0f;
    return out;
  }
  gdouble kr, kb;
  if (!gst_video_color_matrix_get_Kr_Kb (info->colorimetry.matrix, &kr, &kb)) {
    kr = 0.299;
    kb = 0.114;
  }
  double y = kr * rgb[0] + (1 - kr - kb) * rgb[1] + kb * rgb[2];
  double pb = (rgb[2] - y) / (2 * (1 - kb)), pr = (rgb[0] - y) / (2 * (1
          - kr));
  gboolean full = info->colorimetry.range == GST_VIDEO_COLOR_RANGE_0_255;
  out.c[0] = full ? 255 * y : 16 + 219 * y;
  out.c[1] = 128 + (full ? 255 : 224) * pb;
  out.c[2] = 128 + (full ? 255 : 224) * pr;
  return out;
}

/* Blends `colour` over the rectangle (x0, y0, w, h) of the frame with the
 * opacity gain x map / 255 (map NULL: opaque everywhere), clipped to the
 * frame.  A subsampled chroma sample takes the mean opacity of the frame
 * pixels it covers. */
static void
paint (GstVideoFrame *frame, const FrameColour *colour, int x0, int y0,
    int w, int h, const guint8 *map, int map_stride, float gain)
{
  const GstVideoFormatInfo *finfo = frame->info.finfo;
  int fx0 = MAX (x0, 0), fy0 = MAX (y0, 0);
  int fx1 = MIN (x0 + w, GST_VIDEO_FRAME_WIDTH (frame));
  int fy1 = MIN (y0 + h, GST_VIDEO_FRAME_HEIGHT (frame));
  if (fx0 >= fx1 || fy0 >= fy1 || gain <= 0)
    return;
  for (int comp = 0; comp < 3; comp++) {
    int ws = GST_VIDEO_FORMAT_INFO_W_SUB (finfo, comp);
    int hs = GST_VIDEO_FORMAT_INFO_H_SUB (finfo, comp);
    guint8 *data = GST_VIDEO_FRAME_COMP_DATA (frame, comp);
    int stride = GST_VIDEO_FRAME_COMP_STRIDE (frame, comp);
    int pstride = GST_VIDEO_FRAME_COMP_PSTRIDE (frame, comp);
    float scale = gain / (255.0f * (1 << ws) * (1 << hs));
    for (int cy = fy0 >> hs; cy <= (fy1 - 1) >> hs; cy++) {
      int ya = MAX (cy << hs, fy0), yb = MIN ((cy + 1) << hs, fy1);
      for (int cx = fx0 >> ws; cx <= (fx1 - 1) >> ws; cx++) {
        int xa = MAX (cx << ws, fx0), xb = MIN ((cx + 1) << ws, fx1);
        int sum = 0;
        for (int y = ya; y < yb; y++)
          for (int x = xa; x < xb; x++)
            sum += map ? map[(y - y0) * map_stride + (x - x0)] : 255;
        if (sum == 0)
          continue;
        float a = MIN (sum * scale, 1.0f);
        guint8 *p = data + cy * stride + cx * pstride;
        *p = (guint8) lrintf (*p + (colour->c[comp] - *p) * a);
      }
    }
  }
}

static guint8 *
scratch (GstMaskRcnnOverlay *self, gsize size)
{
  if (size > self->scratch_size) {
    g_free (self->scratch);
    self->scratch = g_malloc (size);
    self->scratch_size = size;
  }
  return self->scratch;
}

/* The mask's inner boundary, `width` pixels thick: inside pixels with an
 * outside pixel (or the rectangle's edge) within `width` - 1 of them.  An
 * erosion by a square, done separably (rows, then columns). */
static const guint8 *
contour_map (GstMaskRcnnOverlay *self, const GstMaskRcnnDetection *d,
    int width)
{
  int w = d->mask_width, h = d->mask_height, r = width - 1;
  guint8 *buf = scratch (self, 2 * (gsize) w * h);
  guint8 *rows = buf, *out = buf + (gsize) w * h;
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      gboolean all = TRUE;
      for (int k = x - r - 1; k <= x + r + 1 && all; k++)
        all = k >= 0 && k < w && d->mask[y * w + k] >= 128;
      rows[y * w + x] = all;
    }
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      gboolean all = TRUE;
      for (int k = y - r - 1; k <= y + r + 1 && all; k++)
        all = k >= 0 && k < h && rows[k * w + x];
      out[y * w + x] = d->mask[y * w + x] >= 128 && !all ? 255 : 0;
    }
  return out;
}

static void
draw_label (GstMaskRcnnOverlay *self, GstVideoFrame *frame,
    const GstMaskRcnnDetection *d, const FrameColour *background,
    const FrameColour *ink)
{
  gchar *text = d->track_id
      ? g_strdup_printf ("#%" G_GUINT64_FORMAT " %s %.2f", d->track_id,
      d->class_name, d->score)
      : g_strdup_printf ("%s %.2f", d->class_name, d->score);
  pango_layout_set_text (self->layout, text, -1);
  int tw, th;
  pango_layout_get_pixel_size (self->layout, &tw, &th);
  int pad = MAX (1, self->font_px / 6), lw = tw + 2 * pad, lh = th;

  /* above the box, or inside it at the top edge of the frame */
  int lx = (int) floorf (d->x), ly = (int) floorf (d->y) - lh;
  if (ly < 0)
    ly = (int) floorf (d->y);
  lx = CLAMP (lx, 0, MAX (0, GST_VIDEO_FRAME_WIDTH (frame) - lw));

  cairo_surface_t *surface = cairo_image_surface_create (CAIRO_FORMAT_A8, lw,
      lh);
  cairo_t *cr = cairo_create (surface);
  cairo_move_to (cr, pad, 0);
  pango_cairo_update_layout (cr, self->layout);
  pango_cairo_show_layout (cr, self->layout);
  cairo_surface_flush (surface);
  paint (frame, background, lx, ly, lw, lh, NULL, 0, 1.0f);
  paint (frame, ink, lx, ly, lw, lh, cairo_image_surface_get_data (surface),
      cairo_image_surface_get_stride (surface), 1.0f);

  cairo_destroy (cr);
  cairo_surface_destroy (surface);
  g_free (text);
}

/* What the properties ask for, taken once a frame. */
typedef struct {
  gboolean masks, contours, boxes, labels, by_track;
  float alpha;
  int line;
  FrameColour ink_light, ink_dark;
} Style;

/* The detections of one meta, the k-th on the frame (chained maskrcnn
 * elements: each model's classes in other colours). */
static void
draw_meta (GstMaskRcnnOverlay *self, GstVideoFrame *frame,
    const GstMaskRcnnMeta *meta, guint k, const Style *style)
{
  if (meta->frame_width != (guint) GST_VIDEO_FRAME_WIDTH (frame)
      || meta->frame_height != (guint) GST_VIDEO_FRAME_HEIGHT (frame)) {
    GST_WARNING_OBJECT (self, "detections for %ux%u on a %dx%d frame: not "
        "drawn", meta->frame_width, meta->frame_height,
        GST_VIDEO_FRAME_WIDTH (frame), GST_VIDEO_FRAME_HEIGHT (frame));
    return;
  }
  int line = style->line;
  /* lowest score first, so the most confident instance ends up on top */
  for (int i = meta->n_detections - 1; i >= 0; i--) {
    const GstMaskRcnnDetection *d = &meta->detections[i];
    float rgb[3];
    if (style->by_track && d->track_id)
      index_rgb (d->track_id, 0.0f, rgb);
    else
      index_rgb ((guint64) d->class_id, fmodf (0.381966f * k, 1.0f), rgb);
    FrameColour colour = frame_colour (&frame->info, rgb);
    if (style->masks && d->mask) {
      paint (frame, &colour, d->mask_x, d->mask_y, d->mask_width,
          d->mask_height, d->mask, d->mask_width, style->alpha);
      if (style->contours)
        paint (frame, &colour, d->mask_x, d->mask_y, d->mask_width,
            d->mask_height, contour_map (self, d, MAX (1, line / 2)),
            d->mask_width, 1.0f);
    }
    if (style->boxes) {
      int x0 = (int) floorf (d->x), y0 = (int) floorf (d->y);
      int x1 = (int) ceilf (d->x + d->width), y1 = (int) ceilf (d->y
          + d->height);
      int t = MIN (line, MAX (1, MIN (x1 - x0, y1 - y0) / 2));
      paint (frame, &colour, x0, y0, x1 - x0, t, NULL, 0, 1.0f);
      paint (frame, &colour, x0, y1 - t, x1 - x0, t, NULL, 0, 1.0f);
      paint (frame, &colour, x0, y0 + t, t, y1 - y0 - 2 * t, NULL, 0, 1.0f);
      paint (frame, &colour, x1 - t, y0 + t, t, y1 - y0 - 2 * t, NULL, 0,
          1.0f);
    }
    if (style->labels) {
      /* dark text on light colours, light text on dark ones */
      float luma = 0.299f * rgb[0] + 0.587f * rgb[1] + 0.114f * rgb[2];
      draw_label (self, frame, d, &colour, luma > 0.6f ? &style->ink_dark
          : &style->ink_light);
    }
  }
}

static GstFlowReturn
gst_mask_rcnn_overlay_transform_frame_ip (GstVideoFilter *filter,
    GstVideoFrame *frame)
{
  GstMaskRcnnOverlay *self = GST_MASK_RCNN_OVERLAY (filter);
  if (!gst_buffer_get_mask_rcnn_meta (frame->buffer))
    return GST_FLOW_OK;

  Style style;
  GST_OBJECT_LOCK (self);
  style.masks = self->draw_masks;
  style.contours = self->draw_contours;
  style.boxes = self->draw_boxes;
  style.labels = self->draw_labels;
  style.alpha = self->mask_alpha;
  style.line = self->line_width;
  style.by_track = self->colour_by == GST_MASK_RCNN_OVERLAY_COLOUR_TRACK;
  GST_OBJECT_UNLOCK (self);
  int height = GST_VIDEO_FRAME_HEIGHT (frame);
  if (style.line == 0)
    style.line = MAX (2, height / 360);
  int font_px = MAX (12, height / 40);
  if (style.labels && font_px != self->font_px) {
    PangoFontDescription *font =
        pango_font_description_from_string ("Sans Bold");
    pango_font_description_set_absolute_size (font, font_px * PANGO_SCALE);
    pango_layout_set_font_description (self->layout, font);
    pango_font_description_free (font);
    self->font_px = font_px;
  }
  static const float white[3] = { 1, 1, 1 }, black[3] = { 0, 0, 0 };
  style.ink_light = frame_colour (&frame->info, white);
  style.ink_dark = frame_colour (&frame->info, black);

  /* every model's, in the order they were added */
  gpointer state = NULL;
  GstMaskRcnnMeta *meta;
  guint k = 0;
  while ((meta = gst_buffer_iterate_mask_rcnn_meta (frame->buffer, &state)))
    draw_meta (self, frame, meta, k++, &style);
  return GST_FLOW_OK;
}

static void
gst_mask_rcnn_overlay_set_property (GObject *object, guint prop_id,
    const GValue *value, GParamSpec *pspec)
{
  GstMaskRcnnOverlay *self = GST_MASK_RCNN_OVERLAY (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_DRAW_MASKS:
      self->draw_masks = g_value_get_boolean (value);
      break;
    case PROP_DRAW_CONTOURS:
      self->draw_contours = g_value_get_boolean (value);
      break;
    case PROP_DRAW_BOXES:
      self->draw_boxes = g_value_get_boolean (value);
      break;
    case PROP_DRAW_LABELS:
      self->draw_labels = g_value_get_boolean (value);
      break;
    case PROP_MASK_ALPHA:
      self->mask_alpha = g_value_get_double (value);
      break;
    case PROP_LINE_WIDTH:
      self->line_width = g_value_get_uint (value);
      break;
    case PROP_COLOUR_BY:
      self->colour_by = g_value_get_enum (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_mask_rcnn_overlay_get_property (GObject *object, guint prop_id,
    GValue *value, GParamSpec *pspec)
{
  GstMaskRcnnOverlay *self = GST_MASK_RCNN_OVERLAY (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_DRAW_MASKS:
      g_value_set_boolean (value, self->draw_masks);
      break;
    case PROP_DRAW_CONTOURS:
      g_value_set_boolean (value, self->draw_contours);
      break;
    case PROP_DRAW_BOXES:
      g_value_set_boolean (value, self->draw_boxes);
      break;
    case PROP_DRAW_LABELS:
      g_value_set_boolean (value, self->draw_labels);
      break;
    case PROP_MASK_ALPHA:
      g_value_set_double (value, self->mask_alpha);
      break;
    case PROP_LINE_WIDTH:
      g_value_set_uint (value, self->line_width);
      break;
    case PROP_COLOUR_BY:
      g_value_set_enum (value, self->colour_by);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_mask_rcnn_overlay_finalize (GObject *object)
{
  GstMaskRcnnOverlay *self = GST_MASK_RCNN_OVERLAY (object);

  g_free (self->scratch);
  g_clear_object (&self->layout);
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static void
gst_mask_rcnn_overlay_class_init (GstMaskRcnnOverlayClass *klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstVideoFilterClass *filter_class = GST_VIDEO_FILTER_CLASS (klass);
  const GParamFlags flags = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS
      | GST_PARAM_MUTABLE_PLAYING;

  gobject_class->set_property = gst_mask_rcnn_overlay_set_property;
  gobject_class->get_property = gst_mask_rcnn_overlay_get_property;
  gobject_class->finalize = gst_mask_rcnn_overlay_finalize;

  g_object_class_install_property (gobject_class, PROP_DRAW_MASKS,
      g_param_spec_boolean ("draw-masks", "Draw masks",
          "Blend each instance mask in its class colour", DEFAULT_DRAW,
          flags));
  g_object_class_install_property (gobject_class, PROP_DRAW_CONTOURS,
      g_param_spec_boolean ("draw-contours", "Draw contours",
          "Outline each mask (with draw-masks)", DEFAULT_DRAW, flags));
  g_object_class_install_property (gobject_class, PROP_DRAW_BOXES,
      g_param_spec_boolean ("draw-boxes", "Draw boxes",
          "Draw each bounding box", DEFAULT_DRAW, flags));
  g_object_class_install_property (gobject_class, PROP_DRAW_LABELS,
      g_param_spec_boolean ("draw-labels", "Draw labels",
          "Write \"class score\" above each box (\"#id class score\" for "
          "objects with a track id)", DEFAULT_DRAW, flags));
  g_object_class_install_property (gobject_class, PROP_MASK_ALPHA,
      g_param_spec_double ("mask-alpha", "Mask alpha",
          "Opacity of the mask colour", 0.0, 1.0, DEFAULT_MASK_ALPHA, flags));
  g_object_class_install_property (gobject_class, PROP_LINE_WIDTH,
      g_param_spec_uint ("line-width", "Line width",
          "Box line width in pixels; contours are half as wide (0: from the "
          "frame height, 2 at 480p to 6 at 2160p)", 0, 256,
          DEFAULT_LINE_WIDTH, flags));
  g_object_class_install_property (gobject_class, PROP_COLOUR_BY,
      g_param_spec_enum ("colour-by", "Colour by",
          "What gives an instance its colour: its class, or its track id "
          "(after maskrcnntracker, so each object keeps its colour)",
          GST_TYPE_MASK_RCNN_OVERLAY_COLOUR, DEFAULT_COLOUR_BY, flags));

  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);
  gst_element_class_set_static_metadata (element_class,
      "Mask R-CNN overlay", "Filter/Editor/Video",
      "Draws Mask R-CNN detections (masks, contours, boxes, labels) onto "
      "the frames", "gst-maskrcnn developers");

  filter_class->transform_frame_ip =
      GST_DEBUG_FUNCPTR (gst_mask_rcnn_overlay_transform_frame_ip);

  gst_type_mark_as_plugin_api (GST_TYPE_MASK_RCNN_OVERLAY_COLOUR, 0);
}

static void
gst_mask_rcnn_overlay_init (GstMaskRcnnOverlay *self)
{
  self->draw_masks = self->draw_contours = self->draw_boxes =
      self->draw_labels = DEFAULT_DRAW;
  self->mask_alpha = DEFAULT_MASK_ALPHA;
  self->line_width = DEFAULT_LINE_WIDTH;
  self->colour_by = DEFAULT_COLOUR_BY;
  PangoFontMap *font_map = pango_cairo_font_map_new ();
  PangoContext *context = pango_font_map_create_context (font_map);
  self->layout = pango_layout_new (context);
  g_object_unref (context);
  g_object_unref (font_map);
}
