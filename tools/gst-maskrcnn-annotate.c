/* gst-maskrcnn-annotate: draws Mask R-CNN detections onto a video.
 *
 *   gst-maskrcnn-annotate [INPUT] [-o OUTPUT] [--model PATH] [--json PATH] ...
 *
 * Decodes INPUT (any file or URI GStreamer can play), runs the maskrcnn
 * element on every frame, draws the results with maskrcnnoverlay and
 * encodes the result.  Without INPUT it annotates a built-in clip of moving
 * squares, circles and triangles, what the demo model was trained on, that
 * cross, hide one another and come and go at the edges.  --track follows
 * the objects with maskrcnntracker.
 * Progress goes to stderr, the summary to stdout.
 */
#include <cairo.h>
#include <errno.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <gst/app/gstappsrc.h>
#include <gst/gst.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "gstmaskrcnnmeta.h"

#define CLIP_WIDTH 640
#define CLIP_HEIGHT 480
#define CLIP_FPS 30

/* Containers by file extension, in order of preference when OUTPUT names
 * none: H.264 in MP4 plays everywhere; VP8/WebM and Motion JPEG/AVI come
 * with GStreamer's free plugins. */
typedef struct {
  const gchar *extension, *encoder, *muxer;
} Container;

static const Container containers[] = {
  { "mp4", "x264enc", "mp4mux" },
  { "webm", "vp8enc", "webmmux" },
  { "avi", "jpegenc", "avimux" },
};

/* The built-in clip is a scene that repeats every CLIP_PERIOD frames (10 s),
 * made to exercise a tracker: objects cross each other's paths (two
 * triangles pass so close that their boxes overlap while their shapes stay
 * apart), pass behind one another (a circle behind a larger circle, the
 * other way; a small triangle overtaking a large square behind it, hidden
 * for a while) and come and go: they enter at the top and right edges and
 * leave at the bottom and left ones.
 *
 * Residents stay for good, going back and forth between two points a whole
 * number of times per period; the others cross the frame once per period,
 * in a straight line from outside it to outside it, and are new objects
 * (new ids) each time.  Objects are drawn in the table's order, later ones
 * on top.  Sizes (half-extents of 28 to 50 pixels) and colours stay within
 * what the demo model was trained on (tools/train_shapes.py: shapes 4 % to
 * 21 % of the frame's height across, a colour contrast of at least 70
 * against what is underneath); at most six objects are in view at once, as
 * in training.  Apart from the meetings above, the timings keep objects
 * apart: the vertical crossers pass the residents' lanes while those are
 * elsewhere, the horizontal ones pass the large square's column before or
 * after it.  docs/testing.md (Tracking) has the scene frame by frame. */
#define CLIP_PERIOD 300

typedef struct {
  const gchar *label;
  double size;                  /* half-extent in pixels */
  double r, g, b;
  double x0, y0, x1, y1;        /* the path's ends (centres) */
  int cycles;                   /* > 0: resident, trips there and back per
                                 * period; 0: crosses once */
  int start, end;               /* crossing: frames of the period on the path */
} ClipObject;

static const ClipObject clip_objects[] = {
  /* two triangles whose paths cross: the first passes the crossing just
   * before the second, which then misses it narrowly, their boxes
   * overlapping while their shapes stay apart */
  { "triangle", 36, 0.55, 0.30, 0.80, 500, -50, 500, 532, 0, 0, 83 },
  { "triangle", 36, 0.10, 0.75, 0.85, 690, 250, -50, 250, 0, 31, 137 },
  /* a small triangle overtaking a large square behind it, hidden for a
   * while */
  { "triangle", 28, 0.90, 0.55, 0.10, 130, -40, 130, 520, 0, 139, 201 },
  { "square", 50, 0.25, 0.65, 0.30, 130, -60, 130, 540, 0, 84, 255 },
  /* a circle passing behind the large blue one, the other way */
  { "circle", 30, 0.80, 0.20, 0.65, -40, 398, 680, 398, 0, 140, 260 },
  /* the residents (ids 1 to 3); the square is dark: the demo model often
   * saw red, orange or white ones there as circles too */
  { "circle", 44, 0.15, 0.35, 0.85, 110, 390, 530, 390, 1, 0, 0 },
  { "square", 44, 0.20, 0.20, 0.20, 585, 80, 585, 160, 2, 0, 0 },
  { "triangle", 38, 0.95, 0.85, 0.15, 230, 80, 410, 80, 1, 0, 0 },
};

typedef struct {
  GMainLoop *loop;
  GstElement *pipeline;
  GstElement *maskrcnn;         /* owned by the pipeline */
  gchar *input_name;
  int exit_status;
  gboolean stopping;

  /* built-in clip */
  guint clip_frames, clip_next;
  guint32 noise_state;
  FILE *truth;

  /* what the probe saw, shared with the main loop */
  GMutex lock;
  guint64 frames, analysed;
  GstClockTime inference_total, position;
  GHashTable *per_class;        /* class name -> count */
  guint64 detections;
  GHashTable *track_ids;        /* the track ids seen (--track) */
  guint64 tracked;              /* detections with a track id */

  /* progress */
  gint64 start_us;
  GstClockTime duration;
  gboolean tty;
  gboolean line_open;           /* a progress line without its newline */
  gint64 last_line_us;
} App;

static void
fail (App *app, const gchar *format, ...) G_GNUC_PRINTF (2, 3);

static void
fail (App *app, const gchar *format, ...)
{
  va_list args;
  va_start (args, format);
  gchar *text = g_strdup_vprintf (format, args);
  va_end (args);
  if (app->line_open)
    fputc ('\n', stderr);
  app->line_open = FALSE;
  fprintf (stderr, "gst-maskrcnn-annotate: %s\n", text);
  g_free (text);
  app->exit_status = 1;
  if (app->loop)
    g_main_loop_quit (app->loop);
}

/* ---- built-in clip ---- */

/* Where object o is at frame n, and its identity: FALSE while a crossing
 * object is off its path. */
static gboolean
clip_object_at (guint index, guint n, double *cx, double *cy, guint64 *id)
{
  const ClipObject *o = &clip_objects[index];
  guint t = n % CLIP_PERIOD, loop = n / CLIP_PERIOD;
  guint residents = 0, crossings = 0, before = 0;
  for (guint i = 0; i < G_N_ELEMENTS (clip_objects); i++) {
    gboolean resident = clip_objects[i].cycles > 0;
    if (i < index && resident == (o->cycles > 0))
      before++;
    if (resident)
      residents++;
    else
      crossings++;
  }
  double u;
  if (o->cycles > 0) {
    u = (1 - cos (2 * G_PI * o->cycles * t / CLIP_PERIOD)) / 2;
    *id = before + 1;
  } else {
    if (t < (guint) o->start || t >= (guint) o->end)
      return FALSE;
    u = (double) (t - o->start) / (o->end - o->start);
    *id = residents + (guint64) loop * crossings + before + 1;
  }
  *cx = o->x0 + u * (o->x1 - o->x0);
  *cy = o->y0 + u * (o->y1 - o->y0);
  return TRUE;
}

/* The object's extent: triangles are wider than tall, as in training. */
static double
clip_object_half_width (const ClipObject *o)
{
  return strcmp (o->label, "triangle") == 0 ? o->size / sin (G_PI / 3)
      : o->size;
}

static void
clip_object_box (const ClipObject *o, double cx, double cy, double box[4])
{
  double half_width = clip_object_half_width (o);
  box[0] = cx - half_width;
  box[1] = cy - o->size;
  box[2] = cx + half_width;
  box[3] = cy + o->size;
}

static double
clip_object_area (const ClipObject *o)
{
  if (strcmp (o->label, "circle") == 0)
    return G_PI * o->size * o->size;
  if (strcmp (o->label, "square") == 0)
    return 4 * o->size * o->size;
  return 2 * clip_object_half_width (o) * o->size;
}

static void
clip_object_path (cairo_t *cr, const ClipObject *o, double cx, double cy)
{
  double box[4];
  clip_object_box (o, cx, cy, box);
  if (strcmp (o->label, "circle") == 0) {
    cairo_new_sub_path (cr);
    cairo_arc (cr, cx, cy, o->size, 0, 2 * G_PI);
  } else if (strcmp (o->label, "square") == 0) {
    cairo_rectangle (cr, box[0], box[1], box[2] - box[0], box[3] - box[1]);
  } else {
    cairo_move_to (cr, cx, box[1]);
    cairo_line_to (cr, box[2], box[3]);
    cairo_line_to (cr, box[0], box[3]);
    cairo_close_path (cr);
  }
}

typedef struct {
  gboolean present;
  double cx, cy;
  guint64 id;
} ClipPlace;

/* Fraction of object i's area that shows: inside the frame and not under
 * the objects drawn after it, from their antialiased coverage, drawn into
 * the pixels (x1, y1, x2, y2) of its box in the frame. */
static double
clip_object_visible (const ClipPlace *places, guint i, const int pixels[4])
{
  int w = pixels[2] - pixels[0], h = pixels[3] - pixels[1];
  cairo_surface_t *surface = cairo_image_surface_create (CAIRO_FORMAT_A8, w,
      h);
  cairo_t *cr = cairo_create (surface);
  cairo_translate (cr, -pixels[0], -pixels[1]);
  clip_object_path (cr, &clip_objects[i], places[i].cx, places[i].cy);
  cairo_fill (cr);
  cairo_set_operator (cr, CAIRO_OPERATOR_CLEAR);
  for (guint j = i + 1; j < G_N_ELEMENTS (clip_objects); j++) {
    if (!places[j].present)
      continue;
    clip_object_path (cr, &clip_objects[j], places[j].cx, places[j].cy);
    cairo_fill (cr);
  }
  cairo_destroy (cr);
  cairo_surface_flush (surface);
  const guint8 *data = cairo_image_surface_get_data (surface);
  int stride = cairo_image_surface_get_stride (surface);
  guint64 sum = 0;
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      sum += data[(gsize) y * stride + x];
  cairo_surface_destroy (surface);
  return MIN (1.0, sum / 255.0 / clip_object_area (&clip_objects[i]));
}

/* One line of --clip-truth: per object in view its identity, class, box
 * (the whole shape's, clipped to the frame) and visible fraction. */
static void
write_clip_truth (App *app, guint n, const ClipPlace *places)
{
  fprintf (app->truth, "{\"frame\":%u,\"pts\":%" G_GUINT64_FORMAT
      ",\"objects\":[", n, gst_util_uint64_scale (n, GST_SECOND, CLIP_FPS));
  gboolean first = TRUE;
  for (guint i = 0; i < G_N_ELEMENTS (clip_objects); i++) {
    if (!places[i].present)
      continue;
    const ClipObject *o = &clip_objects[i];
    double box[4];
    clip_object_box (o, places[i].cx, places[i].cy, box);
    box[0] = CLAMP (box[0], 0, CLIP_WIDTH);
    box[1] = CLAMP (box[1], 0, CLIP_HEIGHT);
    box[2] = CLAMP (box[2], 0, CLIP_WIDTH);
    box[3] = CLAMP (box[3], 0, CLIP_HEIGHT);
    int pixels[4] = { (int) floor (box[0]), (int) floor (box[1]),
      (int) ceil (box[2]), (int) ceil (box[3])
    };
    if (box[2] - box[0] < 1 || box[3] - box[1] < 1)
      continue;                 /* outside the frame (not a pixel in it) */
    double visible = clip_object_visible (places, i, pixels);
    fprintf (app->truth, "%s{\"id\":%" G_GUINT64_FORMAT ",\"label\":\"%s\","
        "\"box\":[%.1f,%.1f,%.1f,%.1f],\"visible\":%.3f}", first ? "" : ",",
        places[i].id, o->label, box[0], box[1], box[2], box[3], visible);
    first = FALSE;
  }
  fputs ("]}\n", app->truth);
}

static void
draw_clip_frame (App *app, guint n, guint8 *data, int stride)
{
  cairo_surface_t *surface = cairo_image_surface_create_for_data (data,
      CAIRO_FORMAT_RGB24, CLIP_WIDTH, CLIP_HEIGHT, stride);
  cairo_t *cr = cairo_create (surface);

  cairo_pattern_t *sky = cairo_pattern_create_linear (0, 0, CLIP_WIDTH,
      CLIP_HEIGHT);
  cairo_pattern_add_color_stop_rgb (sky, 0, 0.55, 0.62, 0.70);
  cairo_pattern_add_color_stop_rgb (sky, 1, 0.25, 0.30, 0.28);
  cairo_set_source (cr, sky);
  cairo_paint (cr);
  cairo_pattern_destroy (sky);

  ClipPlace places[G_N_ELEMENTS (clip_objects)];
  for (guint i = 0; i < G_N_ELEMENTS (clip_objects); i++) {
    const ClipObject *o = &clip_objects[i];
    ClipPlace *p = &places[i];
    p->present = clip_object_at (i, n, &p->cx, &p->cy, &p->id);
    if (!p->present)
      continue;
    clip_object_path (cr, o, p->cx, p->cy);
    cairo_set_source_rgb (cr, o->r, o->g, o->b);
    cairo_fill (cr);
  }
  if (app->truth)
    write_clip_truth (app, n, places);
  cairo_destroy (cr);
  cairo_surface_flush (surface);
  cairo_surface_destroy (surface);

  /* Sensor-like noise, as the training frames have. */
  for (int y = 0; y < CLIP_HEIGHT; y++) {
    guint8 *row = data + y * stride;
    for (int x = 0; x < CLIP_WIDTH * 4; x += 4) {
      guint32 s = app->noise_state;
      s ^= s << 13;
      s ^= s >> 17;
      s ^= s << 5;
      app->noise_state = s;
      for (int c = 0; c < 3; c++) {
        int v = row[x + c] + (int) ((s >> (8 * c)) & 15) - 8;
        row[x + c] = (guint8) CLAMP (v, 0, 255);
      }
    }
  }
}

static void
clip_need_data (GstAppSrc *src, guint length, gpointer user_data)
{
  App *app = user_data;
  if (app->clip_next >= app->clip_frames) {
    gst_app_src_end_of_stream (src);
    return;
  }
  int stride = CLIP_WIDTH * 4;
  GstBuffer *buffer = gst_buffer_new_allocate (NULL,
      (gsize) stride * CLIP_HEIGHT, NULL);
  GstMapInfo map;
  gst_buffer_map (buffer, &map, GST_MAP_WRITE);
  draw_clip_frame (app, app->clip_next, map.data, stride);
  gst_buffer_unmap (buffer, &map);
  GST_BUFFER_PTS (buffer) =
      gst_util_uint64_scale (app->clip_next, GST_SECOND, CLIP_FPS);
  GST_BUFFER_DURATION (buffer) =
      gst_util_uint64_scale (app->clip_next + 1, GST_SECOND, CLIP_FPS)
      - GST_BUFFER_PTS (buffer);
  app->clip_next++;
  gst_app_src_push_buffer (src, buffer);
}

static GstElement *
make_clip_source (App *app, double seconds)
{
  GstElement *src = gst_element_factory_make ("appsrc", "clip");
  GstCaps *caps = gst_caps_new_simple ("video/x-raw",
      "format", G_TYPE_STRING, "BGRx",
      "width", G_TYPE_INT, CLIP_WIDTH, "height", G_TYPE_INT, CLIP_HEIGHT,
      "framerate", GST_TYPE_FRACTION, CLIP_FPS, 1, NULL);
  app->clip_frames = (guint) MAX (1, lround (seconds * CLIP_FPS));
  app->noise_state = 2463534242u;
  app->duration = gst_util_uint64_scale (app->clip_frames, GST_SECOND,
      CLIP_FPS);
  g_object_set (src, "caps", caps, "format", GST_FORMAT_TIME,
      "block", TRUE, "max-buffers", (guint64) 4, NULL);
  gst_caps_unref (caps);
  GstAppSrcCallbacks callbacks = { .need_data = clip_need_data };
  gst_app_src_set_callbacks (GST_APP_SRC (src), &callbacks, app, NULL);
  return src;
}

/* ---- pipeline ---- */

static void
decoder_pad_added (GstElement *decoder, GstPad *pad, gpointer user_data)
{
  GstElement *convert = user_data;
  GstPad *sink = gst_element_get_static_pad (convert, "sink");
  GstCaps *caps = gst_pad_get_current_caps (pad);
  if (!caps)
    caps = gst_pad_query_caps (pad, NULL);
  const gchar *media = gst_structure_get_name (gst_caps_get_structure (caps,
          0));
  if (g_str_has_prefix (media, "video/") && !gst_pad_is_linked (sink))
    gst_pad_link (pad, sink);
  gst_caps_unref (caps);
  gst_object_unref (sink);
}

static void
decoder_no_more_pads (GstElement *decoder, gpointer user_data)
{
  GstPad *sink = gst_element_get_static_pad (user_data, "sink");
  if (!gst_pad_is_linked (sink))
    GST_ELEMENT_ERROR (decoder, STREAM, DEMUX, ("it has no video stream"),
        (NULL));
  gst_object_unref (sink);
}

static GstPadProbeReturn
count_detections (GstPad *pad, GstPadProbeInfo *info, gpointer user_data)
{
  App *app = user_data;
  GstBuffer *buffer = GST_PAD_PROBE_INFO_BUFFER (info);
  GstMaskRcnnMeta *meta = gst_buffer_get_mask_rcnn_meta (buffer);
  g_mutex_lock (&app->lock);
  app->frames++;
  if (GST_BUFFER_PTS_IS_VALID (buffer))
    app->position = GST_BUFFER_PTS (buffer)
        + (GST_BUFFER_DURATION_IS_VALID (buffer)
        ? GST_BUFFER_DURATION (buffer) : 0);
  if (meta) {
    if (!meta->repeated) {
      app->analysed++;
      app->inference_total += meta->inference_time;
    }
    for (guint i = 0; i < meta->n_detections; i++) {
      const gchar *name = meta->detections[i].class_name;
      gchar *key = g_strdup (name ? name : "?");
      guint64 count = GPOINTER_TO_SIZE (g_hash_table_lookup (app->per_class,
              key));
      g_hash_table_replace (app->per_class, key, GSIZE_TO_POINTER (count + 1));
      app->detections++;
      guint64 id = meta->detections[i].track_id;
      if (id) {
        app->tracked++;
        if (!g_hash_table_contains (app->track_ids, &id)) {
          guint64 *key = g_new (guint64, 1);
          *key = id;
          g_hash_table_add (app->track_ids, key);
        }
      }
    }
  }
  g_mutex_unlock (&app->lock);
  return GST_PAD_PROBE_OK;
}

static const Container *
choose_container (const gchar *output, GError **error)
{
  const gchar *dot = strrchr (output, '.');
  const gchar *slash = strrchr (output, '/');
  gboolean named = dot && (!slash || dot > slash);
  for (guint i = 0; i < G_N_ELEMENTS (containers); i++) {
    const Container *c = &containers[i];
    if (named && g_ascii_strcasecmp (dot + 1, c->extension) != 0)
      continue;
    GstElementFactory *enc = gst_element_factory_find (c->encoder);
    GstElementFactory *mux = gst_element_factory_find (c->muxer);
    gboolean ok = enc && mux;
    if (enc)
      gst_object_unref (enc);
    if (mux)
      gst_object_unref (mux);
    if (ok)
      return c;
    if (named) {
      g_set_error (error, GST_CORE_ERROR, GST_CORE_ERROR_MISSING_PLUGIN,
          "%s needs the GStreamer elements %s and %s, which are not "
          "installed; name the output .webm or .avi instead", output,
          c->encoder, c->muxer);
      return NULL;
    }
  }
  if (named)
    g_set_error (error, GST_CORE_ERROR, GST_CORE_ERROR_FAILED,
        "%s: unknown container; name the output .mp4, .webm or .avi",
        output);
  else
    g_set_error (error, GST_CORE_ERROR, GST_CORE_ERROR_MISSING_PLUGIN,
        "no video encoder found: install x264enc (gstreamer1.0-plugins-ugly) "
        "or vp8enc and jpegenc (gstreamer1.0-plugins-good)");
  return NULL;
}

static GstElement *
make (const gchar *factory, GError **error)
{
  GstElement *element = gst_element_factory_make (factory, NULL);
  if (!element)
    g_set_error (error, GST_CORE_ERROR, GST_CORE_ERROR_MISSING_PLUGIN,
        "the GStreamer element %s is not installed%s", factory,
        g_str_has_prefix (factory, "maskrcnn")
        ? " (set GST_PLUGIN_PATH to the folder of libgstmaskrcnn.so)" : "");
  return element;
}

typedef struct {
  const gchar *input, *output, *model, *config, *json, *backend;
  double score_threshold, duration;
  gboolean track;
  gchar **tracker_settings;     /* NAME=VALUE, maskrcnntracker properties */
} Settings;

/* Sets NAME=VALUE on element, its value checked against the property. */
static gboolean
set_property_arg (GstElement *element, const gchar *arg, GError **error)
{
  const gchar *equals = strchr (arg, '=');
  gchar *name = g_strndup (arg, equals ? (gsize) (equals - arg) : strlen (arg));
  GParamSpec *pspec = g_object_class_find_property (G_OBJECT_GET_CLASS
      (element), name);
  const gchar *factory = gst_plugin_feature_get_name (GST_PLUGIN_FEATURE
      (gst_element_get_factory (element)));
  gboolean ok = FALSE;
  if (!equals || !pspec || !(pspec->flags & G_PARAM_WRITABLE)) {
    g_set_error (error, GST_CORE_ERROR, GST_CORE_ERROR_FAILED,
        !equals ? "--tracker takes NAME=VALUE, not \"%s\""
        : "%s has no property \"%s\" (see gst-inspect-1.0 %s)",
        !equals ? arg : factory, name, factory);
  } else {
    GValue value = G_VALUE_INIT;
    g_value_init (&value, pspec->value_type);
    ok = gst_value_deserialize_with_pspec (&value, equals + 1, pspec)
        && !g_param_value_validate (pspec, &value);
    if (ok)
      g_object_set_property (G_OBJECT (element), name, &value);
    else
      g_set_error (error, GST_CORE_ERROR, GST_CORE_ERROR_FAILED,
          "%s: \"%s\" is not a valid %s (see gst-inspect-1.0 %s)", factory,
          equals + 1, name, factory);
    g_value_unset (&value);
  }
  g_free (name);
  return ok;
}

static gboolean
build_pipeline (App *app, const Settings *s, const Container *container,
    GError **error)
{
  enum { CONVERT, MASKRCNN, TRACKER, EXPORT, OVERLAY, CONVERT_OUT, ENCODER,
    MUXER, SINK };
  const gchar *names[] = { "videoconvert", "maskrcnn", "maskrcnntracker",
    "maskrcnnexport", "maskrcnnoverlay", "videoconvert", container->encoder,
    container->muxer, "filesink"
  };
  GstElement *e[G_N_ELEMENTS (names)];
  GstElement *source;
  app->pipeline = gst_pipeline_new ("annotate");

  if (s->input) {
    source = make ("uridecodebin", error);
    if (!source)
      return FALSE;
    gchar *uri = gst_uri_is_valid (s->input) ? g_strdup (s->input)
        : gst_filename_to_uri (s->input, error);
    if (!uri) {
      gst_object_unref (source);
      return FALSE;
    }
    g_object_set (source, "uri", uri, NULL);
    g_free (uri);
  } else {
    source = make_clip_source (app, s->duration);
  }
  gst_bin_add (GST_BIN (app->pipeline), source);

  GstElement *previous = NULL;
  for (guint i = 0; i < G_N_ELEMENTS (names); i++) {
    e[i] = NULL;
    if ((i == TRACKER && !s->track) || (i == EXPORT && !s->json))
      continue;
    e[i] = make (names[i], error);
    if (!e[i])
      return FALSE;
    gst_bin_add (GST_BIN (app->pipeline), e[i]);
    if (previous && !gst_element_link (previous, e[i])) {
      g_set_error (error, GST_CORE_ERROR, GST_CORE_ERROR_NEGOTIATION,
          "could not link %s to %s", GST_ELEMENT_NAME (previous),
          GST_ELEMENT_NAME (e[i]));
      return FALSE;
    }
    previous = e[i];
  }
  if (s->input) {
    g_signal_connect (source, "pad-added", G_CALLBACK (decoder_pad_added),
        e[0]);
    g_signal_connect (source, "no-more-pads", G_CALLBACK (decoder_no_more_pads),
        e[0]);
  }
  else if (!gst_element_link (source, e[0])) {
    g_set_error (error, GST_CORE_ERROR, GST_CORE_ERROR_NEGOTIATION,
        "could not link the built-in clip to videoconvert");
    return FALSE;
  }

  GstElement *maskrcnn = app->maskrcnn = e[MASKRCNN];
  if (s->model)
    g_object_set (maskrcnn, "model", s->model, NULL);
  if (s->config)
    g_object_set (maskrcnn, "config", s->config, NULL);
  if (s->backend)
    gst_util_set_object_arg (G_OBJECT (maskrcnn), "backend", s->backend);
  if (s->score_threshold >= 0)
    g_object_set (maskrcnn, "score-threshold", (gfloat) s->score_threshold,
        NULL);
  if (s->track) {
    for (gchar **arg = s->tracker_settings; arg && *arg; arg++)
      if (!set_property_arg (e[TRACKER], *arg, error))
        return FALSE;
    /* each object in its own colour, where the overlay can */
    if (g_object_class_find_property (G_OBJECT_GET_CLASS (e[OVERLAY]),
            "colour-by"))
      gst_util_set_object_arg (G_OBJECT (e[OVERLAY]), "colour-by", "track");
  }
  if (s->json) {
    g_object_set (e[EXPORT], "location", s->json, NULL);
    gst_util_set_object_arg (G_OBJECT (e[EXPORT]), "format", "jsonl");
  }
  if (g_str_equal (container->encoder, "x264enc"))
    gst_util_set_object_arg (G_OBJECT (e[ENCODER]), "speed-preset",
        "veryfast");
  else if (g_str_equal (container->encoder, "vp8enc"))
    /* real time; the quantizer capped and the bitrate raised, since at
     * vp8enc's defaults the rate control starves on noisy footage and
     * later frames break up into blocks */
    g_object_set (e[ENCODER], "deadline", (gint64) 1, "cpu-used", 4,
        "target-bitrate", 4000000, "max-quantizer", 40, NULL);
  g_object_set (e[SINK], "location", s->output, NULL);

  /* after the tracker, if any: the track ids are set there */
  GstPad *pad = gst_element_get_static_pad (s->track ? e[TRACKER] : maskrcnn,
      "src");
  gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER, count_detections, app,
      NULL);
  gst_object_unref (pad);
  return TRUE;
}

/* ---- progress and summary ---- */

static gchar *
format_clock (double seconds)
{
  long s = lround (MAX (seconds, 0));
  return s >= 3600 ? g_strdup_printf ("%ld:%02ld:%02ld", s / 3600,
      s / 60 % 60, s % 60) : g_strdup_printf ("%ld:%02ld", s / 60, s % 60);
}

static void
print_progress (App *app, gboolean final)
{
  gint64 now = g_get_monotonic_time ();
  if (!app->tty && !final && now - app->last_line_us < 2 * G_USEC_PER_SEC)
    return;
  app->last_line_us = now;
  if (!GST_CLOCK_TIME_IS_VALID (app->duration)) {
    gint64 duration;
    if (gst_element_query_duration (app->pipeline, GST_FORMAT_TIME,
            &duration) && duration > 0)
      app->duration = duration;
  }
  g_mutex_lock (&app->lock);
  guint64 frames = app->frames;
  GstClockTime position = app->position;
  g_mutex_unlock (&app->lock);

  double elapsed = (now - app->start_us) / (double) G_USEC_PER_SEC;
  double fps = elapsed > 0 ? frames / elapsed : 0;
  GString *line = g_string_new (NULL);
  if (GST_CLOCK_TIME_IS_VALID (app->duration) && app->duration > 0) {
    double done = final ? 1.0
        : MIN (1.0, (double) position / (double) app->duration);
    g_string_append_printf (line, "%3.0f%%  ", 100 * done);
    if (done > 0 && !final) {
      gchar *left = format_clock (elapsed * (1 - done) / done);
      g_string_append_printf (line, "%" G_GUINT64_FORMAT " frames  "
          "%.1f fps  %s left", frames, fps, left);
      g_free (left);
    } else {
      gchar *took = format_clock (elapsed);
      g_string_append_printf (line, "%" G_GUINT64_FORMAT " frames  "
          "%.1f fps  %s", frames, fps, took);
      g_free (took);
    }
  } else {
    g_string_append_printf (line, "%" G_GUINT64_FORMAT " frames  %.1f fps",
        frames, fps);
  }
  if (app->tty) {
    fprintf (stderr, "\r%-60s%s", line->str, final ? "\n" : "");
    app->line_open = !final;
  } else
    fprintf (stderr, "progress: %s\n", line->str);
  fflush (stderr);
  g_string_free (line, TRUE);
}

static gboolean
on_tick (gpointer user_data)
{
  print_progress (user_data, FALSE);
  return G_SOURCE_CONTINUE;
}

static gint
by_count (gconstpointer a, gconstpointer b, gpointer table)
{
  gsize ca = GPOINTER_TO_SIZE (g_hash_table_lookup (table, a));
  gsize cb = GPOINTER_TO_SIZE (g_hash_table_lookup (table, b));
  return ca != cb ? (ca < cb ? 1 : -1) : strcmp (a, b);
}

static void
print_summary (App *app, const Settings *s)
{
  double elapsed = (g_get_monotonic_time () - app->start_us)
      / (double) G_USEC_PER_SEC;
  gchar *model = NULL;
  g_object_get (app->maskrcnn, "model", &model, NULL);
  printf ("annotated %s with %s\n", app->input_name, model);
  g_free (model);
  printf ("wrote %s: %" G_GUINT64_FORMAT " frames in %.1f s "
      "(%.1f frames per second)\n", s->output, app->frames, elapsed,
      elapsed > 0 ? app->frames / elapsed : 0.0);
  printf ("detections: %" G_GUINT64_FORMAT, app->detections);
  GList *names = g_list_sort_with_data (g_hash_table_get_keys
      (app->per_class), by_count, app->per_class);
  for (GList *l = names; l; l = l->next)
    printf ("%s%s %" G_GSIZE_FORMAT, l == names ? " (" : ", ",
        (const gchar *) l->data,
        GPOINTER_TO_SIZE (g_hash_table_lookup (app->per_class, l->data)));
  printf ("%s\n", names ? ")" : "");
  g_list_free (names);
  if (app->analysed)
    printf ("inference: %.1f ms per frame on average (%" G_GUINT64_FORMAT
        " frames analysed)\n",
        app->inference_total / (double) app->analysed / GST_MSECOND,
        app->analysed);
  if (s->track)
    printf ("tracks: %u (%" G_GUINT64_FORMAT " of the detections have a "
        "track id)\n", g_hash_table_size (app->track_ids), app->tracked);
  if (s->json)
    printf ("detections file: %s\n", s->json);
}

/* ---- main loop ---- */

static gboolean
on_message (GstBus *bus, GstMessage *message, gpointer user_data)
{
  App *app = user_data;
  switch (GST_MESSAGE_TYPE (message)) {
    case GST_MESSAGE_EOS:
      g_main_loop_quit (app->loop);
      break;
    case GST_MESSAGE_ERROR:{
      GError *error = NULL;
      gchar *debug = NULL;
      gst_message_parse_error (message, &error, &debug);
      /* A missing decoder is reported as a generic plugin error; say
       * which input it was. */
      GstObject *src = GST_MESSAGE_SRC (message);
      GstElementFactory *factory = GST_IS_ELEMENT (src)
          ? gst_element_get_factory (GST_ELEMENT (src)) : NULL;
      const gchar *from = factory
          ? gst_plugin_feature_get_name (GST_PLUGIN_FEATURE (factory)) : "";
      if (g_error_matches (error, GST_STREAM_ERROR, GST_STREAM_ERROR_DEMUX)
          && g_str_equal (from, "uridecodebin"))
        fail (app, "%s: %s", app->input_name, error->message);
      else if (g_error_matches (error, GST_CORE_ERROR,
              GST_CORE_ERROR_MISSING_PLUGIN)
          || g_error_matches (error, GST_STREAM_ERROR,
              GST_STREAM_ERROR_TYPE_NOT_FOUND)
          || g_error_matches (error, GST_STREAM_ERROR,
              GST_STREAM_ERROR_CODEC_NOT_FOUND)
          || g_error_matches (error, GST_STREAM_ERROR,
              GST_STREAM_ERROR_WRONG_TYPE))
        fail (app, "%s: no decoder for this input: %s", app->input_name,
            error->message);
      else if (g_str_equal (from, "maskrcnn") && g_error_matches (error,
              GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_NOT_FOUND))
        fail (app, "No model: pass --model PATH, or set GST_MASKRCNN_MODEL, "
            "or install gst-maskrcnn (its demo model is the default)");
      else
        fail (app, "%s", error->message);
      g_free (debug);
      g_error_free (error);
      break;
    }
    default:
      break;
  }
  return TRUE;
}

static gboolean
on_interrupt (gpointer user_data)
{
  App *app = user_data;
  if (app->stopping)
    g_main_loop_quit (app->loop);
  /* EOS lets the muxer finish the file, so what was done plays. */
  app->stopping = TRUE;
  gst_element_send_event (app->pipeline, gst_event_new_eos ());
  return G_SOURCE_CONTINUE;
}

int
main (int argc, char **argv)
{
  Settings s = { .score_threshold = -1, .duration = 10 };
  gchar *output = NULL, *model = NULL, *config = NULL, *json = NULL,
      *backend = NULL, *truth = NULL, **inputs = NULL,
      **tracker_settings = NULL;
  GOptionEntry entries[] = {
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &output,
        "Annotated video to write (.mp4, .webm or .avi; without an "
          "extension the first available is added; default "
          "INPUT-annotated or annotated)", "OUTPUT" },
    { "model", 'm', 0, G_OPTION_ARG_FILENAME, &model,
        "Weights file, .safetensors or .h5 (default: the maskrcnn element's "
          "default, the shapes demo model)", "PATH" },
    { "config", 'c', 0, G_OPTION_ARG_FILENAME, &config,
        "Sidecar with the model's settings", "PATH" },
    { "json", 'j', 0, G_OPTION_ARG_FILENAME, &json,
        "Also write the detections, one JSON object per frame", "PATH" },
    { "backend", 'b', 0, G_OPTION_ARG_STRING, &backend,
        "auto, cpu or cuda (default auto)", "NAME" },
    { "score-threshold", 's', 0, G_OPTION_ARG_DOUBLE, &s.score_threshold,
        "Lowest score shown, 0 to 1 (default: the model's own)", "X" },
    { "duration", 'd', 0, G_OPTION_ARG_DOUBLE, &s.duration,
        "Length of the built-in clip in seconds (default 10)", "SECONDS" },
    { "track", 't', 0, G_OPTION_ARG_NONE, &s.track,
        "Follow the objects from frame to frame (maskrcnntracker): each "
          "gets a track id, its own colour in the video and a track_id in "
          "the --json file", NULL },
    { "tracker", 0, 0, G_OPTION_ARG_STRING_ARRAY, &tracker_settings,
        "Set a maskrcnntracker property, e.g. association=box (repeatable; "
          "implies --track)", "NAME=VALUE" },
    { "clip-truth", 0, 0, G_OPTION_ARG_FILENAME, &truth,
        "Write the built-in clip's objects (identity, class, box and "
          "visible fraction per frame) as JSON lines", "PATH" },
    { G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &inputs, NULL,
        NULL },
    { NULL }
  };
  App app = { .exit_status = 0, .duration = GST_CLOCK_TIME_NONE };
  app.tty = isatty (fileno (stderr));

  GOptionContext *context = g_option_context_new ("[INPUT] - draw Mask "
      "R-CNN detections onto a video");
  g_option_context_set_summary (context, "Annotates INPUT (any video file "
      "or URI GStreamer can decode), or without INPUT a built-in clip of "
      "moving shapes.");
  g_option_context_add_main_entries (context, entries, NULL);
  g_option_context_add_group (context, gst_init_get_option_group ());
  GError *error = NULL;
  if (!g_option_context_parse (context, &argc, &argv, &error)) {
    fail (&app, "%s (see --help)", error->message);
    goto out;
  }
  if (inputs && inputs[0] && inputs[1]) {
    fail (&app, "one INPUT at a time (got \"%s\" and \"%s\")", inputs[0],
        inputs[1]);
    goto out;
  }
  if (backend && !g_strv_contains ((const gchar *[]) { "auto", "cpu",
          "cuda", NULL }, backend)) {
    fail (&app, "--backend must be auto, cpu or cuda, not \"%s\"", backend);
    goto out;
  }
  if (s.score_threshold > 1) {
    fail (&app, "--score-threshold must be between 0 and 1");
    goto out;
  }
  if (!(s.duration > 0 && s.duration <= 3600)) {
    fail (&app, "--duration must be between 0 and 3600 seconds");
    goto out;
  }
  s.input = inputs ? inputs[0] : NULL;
  app.input_name = g_strdup (s.input ? s.input : "built-in clip");
  if (s.input && !gst_uri_is_valid (s.input)
      && access (s.input, R_OK) != 0) {
    fail (&app, "cannot read %s: %s", s.input, g_strerror (errno));
    goto out;
  }
  if (model && access (model, R_OK) != 0) {
    fail (&app, "cannot read the model %s: %s", model, g_strerror (errno));
    goto out;
  }

  if (!output) {
    if (s.input) {
      gchar *base = g_path_get_basename (s.input);
      char *dot = strrchr (base, '.');
      if (dot && dot != base)
        *dot = '\0';
      output = g_strconcat (base, "-annotated", NULL);
      g_free (base);
    } else {
      output = g_strdup ("annotated");
    }
  }
  const Container *container = choose_container (output, &error);
  if (!container) {
    fail (&app, "%s", error->message);
    goto out;
  }
  const gchar *slash = strrchr (output, '/');
  const gchar *dot = strrchr (output, '.');
  if (!dot || (slash && dot < slash)) {
    gchar *named = g_strconcat (output, ".", container->extension, NULL);
    g_free (output);
    output = named;
  }
  s.output = output;
  s.model = model;
  s.config = config;
  s.json = json;
  s.backend = backend;
  s.track = s.track || tracker_settings;
  s.tracker_settings = tracker_settings;
  if (truth && s.input) {
    fail (&app, "--clip-truth is for the built-in clip (no INPUT)");
    goto out;
  }
  if (truth && !(app.truth = fopen (truth, "w"))) {
    fail (&app, "cannot write %s: %s", truth, g_strerror (errno));
    goto out;
  }

  g_mutex_init (&app.lock);
  app.per_class = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
      NULL);
  app.track_ids = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free,
      NULL);
  if (!build_pipeline (&app, &s, container, &error)) {
    fail (&app, "%s", error->message);
    goto out;
  }
  app.loop = g_main_loop_new (NULL, FALSE);
  GstBus *bus = gst_element_get_bus (app.pipeline);
  guint bus_watch = gst_bus_add_watch (bus, on_message, &app);
  gst_object_unref (bus);
  guint interrupt = g_unix_signal_add (SIGINT, on_interrupt, &app);
  guint tick = g_timeout_add (app.tty ? 250 : 500, on_tick, &app);

  gboolean output_existed = g_file_test (output, G_FILE_TEST_EXISTS);
  app.start_us = app.last_line_us = g_get_monotonic_time ();
  /* A failure to start posts its error on the bus: the loop reports it. */
  gst_element_set_state (app.pipeline, GST_STATE_PLAYING);
  g_main_loop_run (app.loop);
  g_source_remove (tick);
  g_source_remove (interrupt);
  g_source_remove (bus_watch);
  if (app.exit_status == 0) {
    print_progress (&app, TRUE);
    print_summary (&app, &s);
  } else if (!output_existed) {
    g_unlink (output);          /* a file with no video in it */
  }

out:
  if (app.pipeline) {
    gst_element_set_state (app.pipeline, GST_STATE_NULL);
    gst_object_unref (app.pipeline);
  }
  if (app.truth && fclose (app.truth) != 0 && app.exit_status == 0)
    fail (&app, "cannot write %s", truth);
  if (app.per_class) {
    g_hash_table_destroy (app.per_class);
    g_hash_table_destroy (app.track_ids);
    g_mutex_clear (&app.lock);
  }
  if (app.loop)
    g_main_loop_unref (app.loop);
  g_clear_error (&error);
  g_option_context_free (context);
  g_free (app.input_name);
  g_free (output);
  g_free (model);
  g_free (config);
  g_free (json);
  g_free (backend);
  g_free (truth);
  g_strfreev (inputs);
  g_strfreev (tracker_settings);
  return app.exit_status;
}
