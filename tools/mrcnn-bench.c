/* mrcnn-bench: latency, throughput and memory of the engine on one model
 * and input size, printed as one JSON line. */
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine-options.h"
#include "rgb-file.h"

static char *model_path;
static char *config_path;
static char *shape;
static char *size_text;
static char *image_path;
static int batch = 1;
static int lanes = 1;
static int iterations = 20;
static int warmup = 3;
static gboolean worst_case;
static gboolean time_stages;

static const GOptionEntry entries[] = {
  { "model", 'm', 0, G_OPTION_ARG_FILENAME, &model_path,
    "Model weights (.safetensors or .h5)", "PATH" },
  { "config", 'c', 0, G_OPTION_ARG_FILENAME, &config_path,
    "Sidecar configuration of the model", "FILE" },
  { "shape", 0, 0, G_OPTION_ARG_STRING, &shape,
    "Instead of --model, random weights of a standard shape: "
    "torchvision-r50, torchvision-r50-v2 or matterport-r101", "NAME" },
  { "size", 's', 0, G_OPTION_ARG_STRING, &size_text,
    "Input frame size (default: the model's own input size, 1216x800 "
    "for torchvision, 1024x1024 for matterport)", "WxH" },
  { "image", 0, 0, G_OPTION_ARG_FILENAME, &image_path,
    "Time on this image file instead of a synthetic frame (its own size; "
    "not with --size)", "PATH" },
  { "batch", 'n', 0, G_OPTION_ARG_INT, &batch,
    "Frames per call (default 1); the CUDA backend runs the backbone of "
    "up to 64 of them at once", "N" },
  { "lanes", 'l', 0, G_OPTION_ARG_INT, &lanes,
    "CPU backend: frames of a call run side by side, each lane on "
    "threads / N of the threads (default 1)", "N" },
  { "iterations", 'i', 0, G_OPTION_ARG_INT, &iterations,
    "Timed calls (default 20)", "N" },
  { "warmup", 'w', 0, G_OPTION_ARG_INT, &warmup,
    "Untimed calls first (default 3)", "N" },
  { "worst-case", 0, 0, G_OPTION_ARG_NONE, &worst_case,
    "Score threshold 0 and 100 detections per frame: the heads and the "
    "paste at full load", NULL },
  { "stages", 0, 0, G_OPTION_ARG_NONE, &time_stages,
    "Also time each stage of the last frame of every call (the device is "
    "drained between stages, so the latency figures then include those "
    "waits)", NULL },
  { NULL },
};

static int
die (const char *message)
{
  fprintf (stderr, "mrcnn-bench: %s\n", message);
  return 1;
}

/* A frame with structure (gradients and blocks of colour) rather than flat
 * noise, the same for every run. */
static guint8 *
make_frame (int width, int height, guint32 seed)
{
  GRand *rand = g_rand_new_with_seed (seed);
  guint8 *rgb = g_malloc ((size_t) width * height * 3);
  for (int y = 0; y < height; y++)
    for (int x = 0; x < width; x++) {
      guint8 *p = rgb + ((size_t) y * width + x) * 3;
      p[0] = (guint8) (255 * x / width);
      p[1] = (guint8) (255 * y / height);
      p[2] = (guint8) ((x ^ y) & 0xff);
    }
  for (int k = 0; k < 12; k++) {
    int w = g_rand_int_range (rand, width / 16, width / 3);
    int h = g_rand_int_range (rand, height / 16, height / 3);
    int x0 = g_rand_int_range (rand, 0, width - w);
    int y0 = g_rand_int_range (rand, 0, height - h);
    guint8 colour[3] = { g_rand_int_range (rand, 0, 256),
      g_rand_int_range (rand, 0, 256), g_rand_int_range (rand, 0, 256) };
    for (int y = y0; y < y0 + h; y++)
      for (int x = x0; x < x0 + w; x++)
        memcpy (rgb + ((size_t) y * width + x) * 3, colour, 3);
  }
  g_rand_free (rand);
  return rgb;
}

static int
compare_doubles (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted values. */
static double
percentile (const double *sorted, int n, double p)
{
  int rank = (int) (p / 100.0 * n + 0.999999);
  return sorted[CLAMP (rank, 1, n) - 1];
}

static void
add_number (JsonBuilder *b, const char *name, double value)
{
  json_builder_set_member_name (b, name);
  /* three decimals are all a timing carries */
  json_builder_add_double_value (b, (double) (gint64) (value * 1000 + 0.5)
      / 1000);
}

int
main (int argc, char **argv)
{
  GError *error = NULL;
  GOptionContext *context = g_option_context_new (NULL);
  g_option_context_set_summary (context, "Times Mask R-CNN inference: "
      "warm-up, then timed calls; prints one JSON line with latency "
      "percentiles, frames per second, detections per frame and device "
      "memory.");
  MrcnnOptions options;
  if (!engine_options_parse (context, entries, &argc, &argv, &options,
          &error)) {
    int rc = die (error->message);
    g_error_free (error);
    return rc;
  }
  options.time_stages = time_stages;
  options.lanes = lanes;
  options.max_batch = MIN (batch, MRCNN_MAX_BATCH);
  if (worst_case) {
    options.score_threshold = 0;
    options.max_detections = 100;
  }
  if (batch < 1 || iterations < 1 || warmup < 0)
    return die ("--batch and --iterations must be at least 1, --warmup "
        "at least 0");
  if (!model_path == !shape)
    return die ("give either --model PATH or --shape NAME");

  MrcnnModel *model = shape ? mrcnn_model_new_random (shape, 1, &error)
      : mrcnn_model_load_with_config (model_path, config_path, &error);
  if (!model) {
    int rc = die (error->message);
    g_error_free (error);
    return rc;
  }
  gboolean matterport = strcmp (mrcnn_model_variant (model), "matterport") == 0;
  int width = matterport ? 1024 : 1216, height = matterport ? 1024 : 800;
  if (size_text && (sscanf (size_text, "%dx%d", &width, &height) != 2
          || width < 16 || height < 16 || width > 8192 || height > 8192)) {
    mrcnn_model_free (model);
    return die ("--size must be WIDTHxHEIGHT, each 16 to 8192");
  }

  if (image_path && size_text) {
    mrcnn_model_free (model);
    return die ("--image and --size: give one of them");
  }
  guint8 *rgb = image_path ? rgb_file_load (image_path, &width, &height,
      &error) : make_frame (width, height, 7);
  if (!rgb) {
    int rc = die (error->message);
    g_error_free (error);
    mrcnn_model_free (model);
    return rc;
  }

  MrcnnEngine *engine = mrcnn_engine_new (model, &options, &error);
  if (!engine) {
    int rc = die (error->message);
    g_error_free (error);
    g_free (rgb);
    mrcnn_model_free (model);
    return rc;
  }

  MrcnnImage *images = g_new (MrcnnImage, batch);
  MrcnnResult *results = g_new (MrcnnResult, batch);
  for (int i = 0; i < batch; i++) {
    images[i] = (MrcnnImage) { rgb, width, height, 3 * width };
    mrcnn_result_init (&results[i]);
  }
  double *latency = g_new (double, iterations);
  double stage_sum[MRCNN_N_STAGES] = { 0 };
  long detections = 0;
  gint64 started = 0;
  gboolean ok = TRUE;
  for (int it = -warmup; ok && it < iterations; it++) {
    if (it == 0)
      started = g_get_monotonic_time ();
    gint64 t0 = g_get_monotonic_time ();
    ok = mrcnn_engine_detect_batch (engine, images, NULL, batch, results,
        &error) == batch;
    if (!ok || it < 0)
      continue;
    latency[it] = (g_get_monotonic_time () - t0) / 1000.0;
    for (int i = 0; i < batch; i++)
      detections += results[i].n_detections;
    double ms[MRCNN_N_STAGES];
    if (mrcnn_engine_stage_times (engine, ms))
      for (int k = 0; k < MRCNN_N_STAGES; k++)
        stage_sum[k] += ms[k];
  }
  double seconds = (g_get_monotonic_time () - started) / 1e6;

  int rc = 0;
  if (!ok) {
    rc = die (error->message);
    g_error_free (error);
  } else {
    qsort (latency, iterations, sizeof (double), compare_doubles);
    JsonBuilder *b = json_builder_new ();
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "model");
    json_builder_add_string_value (b, shape ? shape : model_path);
    json_builder_set_member_name (b, "backend");
    json_builder_add_string_value (b, mrcnn_engine_backend_name (engine));
    json_builder_set_member_name (b, "precision");
    json_builder_add_string_value (b,
        options.precision == MRCNN_PRECISION_FP16 ? "fp16" : "fp32");
    json_builder_set_member_name (b, "width");
    json_builder_add_int_value (b, width);
    json_builder_set_member_name (b, "height");
    json_builder_add_int_value (b, height);
    json_builder_set_member_name (b, "batch");
    json_builder_add_int_value (b, batch);
    json_builder_set_member_name (b, "lanes");
    json_builder_add_int_value (b, mrcnn_engine_get_lanes (engine));
    json_builder_set_member_name (b, "iterations");
    json_builder_add_int_value (b, iterations);
    json_builder_set_member_name (b, "worst_case");
    json_builder_add_boolean_value (b, worst_case);
    json_builder_set_member_name (b, "latency_ms");
    json_builder_begin_object (b);
    add_number (b, "p50", percentile (latency, iterations, 50));
    add_number (b, "p90", percentile (latency, iterations, 90));
    add_number (b, "p99", percentile (latency, iterations, 99));
    json_builder_end_object (b);
    add_number (b, "frames_per_second", batch * iterations / seconds);
    add_number (b, "detections_per_frame",
        (double) detections / ((double) batch * iterations));
    add_number (b, "device_memory_mib",
        mrcnn_engine_device_memory (engine) / 1048576.0);
    if (time_stages) {
      json_builder_set_member_name (b, "stages_ms");
      json_builder_begin_object (b);
      for (int k = 0; k < MRCNN_N_STAGES; k++)
        add_number (b, mrcnn_stage_name (k), stage_sum[k] / iterations);
      json_builder_end_object (b);
    }
    json_builder_end_object (b);
    JsonNode *root = json_builder_get_root (b);
    char *text = json_to_string (root, FALSE);
    printf ("%s\n", text);
    g_free (text);
    json_node_unref (root);
    g_object_unref (b);
  }

  for (int i = 0; i < batch; i++)
    mrcnn_result_clear (&results[i]);
  g_free (results);
  g_free (images);
  g_free (latency);
  g_free (rgb);
  mrcnn_engine_free (engine);
  mrcnn_model_free (model);
  return rc;
}
