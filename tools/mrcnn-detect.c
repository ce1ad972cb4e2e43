/* mrcnn-detect: runs Mask R-CNN on image files and prints one JSON object
 * per image with boxes, labels, scores and COCO RLE masks. */
#include <errno.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine-options.h"
#include "rgb-file.h"

static char *model_path;
static char *config_path;
static double score_threshold = -1, nms_threshold = -1;
static int max_detections = -1;
static char *dump_dir;
static gboolean print_info;
static int batch = 1;
static char **images;

static const GOptionEntry entries[] = {
  { "model", 'm', 0, G_OPTION_ARG_FILENAME, &model_path,
    "Model weights: torchvision (.safetensors) or matterport Keras (.h5)",
    "PATH" },
  { "config", 'c', 0, G_OPTION_ARG_FILENAME, &config_path,
    "Sidecar configuration (JSON object or KEY = VALUE lines) overriding "
    "the model's constants", "FILE" },
  { "score-threshold", 's', 0, G_OPTION_ARG_DOUBLE, &score_threshold,
    "Minimum detection score (default: the model's)", "X" },
  { "nms-threshold", 'n', 0, G_OPTION_ARG_DOUBLE, &nms_threshold,
    "Per-class NMS IoU threshold (default: the model's)", "X" },
  { "max-detections", 'k', 0, G_OPTION_ARG_INT, &max_detections,
    "Detections kept per image (default: the model's)", "N" },
  { "dump-dir", 0, 0, G_OPTION_ARG_FILENAME, &dump_dir,
    "Write intermediate tensors of the last image as .npy files (with "
    "several images, also each image's in DIR/0, DIR/1, ...)", "DIR" },
  { "batch", 'b', 0, G_OPTION_ARG_INT, &batch,
    "Run the images N at a time, each N one batch (the CUDA backend runs "
    "the backbone, FPN and RPN head of a batch's images of one size at "
    "once); the output is that of one image at a time (default 1)", "N" },
  { "info", 0, 0, G_OPTION_ARG_NONE, &print_info,
    "Print the model's shape and constants as JSON and exit", NULL },
  { G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &images, NULL,
    "IMAGE..." },
  { NULL },
};

static int
die (const char *message)
{
  fprintf (stderr, "mrcnn-detect: %s\n", message);
  return 1;
}

/* The engine writes each image's tensors into dump_dir, over the last
 * image's.  With several images they are kept in dump_dir/<index> too:
 * moved there, but for the last image's, linked, so that dump_dir keeps
 * them as with one image. */
static gboolean
keep_dump (int index, gboolean last, GError **error)
{
  char *name = g_strdup_printf ("%d", index);
  char *sub = g_build_filename (dump_dir, name, NULL);
  GPtrArray *files = g_ptr_array_new_with_free_func (g_free);
  GDir *dir = g_dir_open (dump_dir, 0, error);
  gboolean ok = dir != NULL;
  /* names first: the directory changes as they move */
  for (const char *file; ok && (file = g_dir_read_name (dir));)
    if (g_str_has_suffix (file, ".npy"))
      g_ptr_array_add (files, g_build_filename (dump_dir, file, NULL));
  if (ok && g_mkdir_with_parents (sub, 0755) != 0) {
    g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_FAILED,
        "%s: cannot create: %s", sub, g_strerror (errno));
    ok = FALSE;
  }
  for (guint i = 0; ok && i < files->len; i++) {
    const char *from = g_ptr_array_index (files, i);
    char *base = g_path_get_basename (from);
    char *to = g_build_filename (sub, base, NULL);
    g_unlink (to);
    if ((last ? link (from, to) : g_rename (from, to)) != 0) {
      g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_FAILED,
          "%s: cannot write: %s", to, g_strerror (errno));
      ok = FALSE;
    }
    g_free (to);
    g_free (base);
  }
  if (dir)
    g_dir_close (dir);
  g_ptr_array_unref (files);
  g_free (sub);
  g_free (name);
  return ok;
}

static char *
result_json (const char *path, const MrcnnResult *r)
{
  JsonBuilder *b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "image");
  json_builder_add_string_value (b, path);
  json_builder_set_member_name (b, "width");
  json_builder_add_int_value (b, r->image_width);
  json_builder_set_member_name (b, "height");
  json_builder_add_int_value (b, r->image_height);
  json_builder_set_member_name (b, "detections");
  json_builder_begin_array (b);
  for (int i = 0; i < r->n_detections; i++) {
    const MrcnnDetection *d = &r->detections[i];
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "label_id");
    json_builder_add_int_value (b, d->label_id);
    json_builder_set_member_name (b, "label");
    json_builder_add_string_value (b, d->label);
    json_builder_set_member_name (b, "score");
    json_builder_add_double_value (b, d->score);
    json_builder_set_member_name (b, "box");
    json_builder_begin_array (b);
    for (int k = 0; k < 4; k++)
      json_builder_add_double_value (b, d->box[k]);
    json_builder_end_array (b);
    json_builder_set_member_name (b, "mask");
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "size");
    json_builder_begin_array (b);
    json_builder_add_int_value (b, r->image_height);
    json_builder_add_int_value (b, r->image_width);
    json_builder_end_array (b);
    json_builder_set_member_name (b, "counts");
    char *counts = mrcnn_rle_encode_detection (d, r->image_width,
        r->image_height);
    json_builder_add_string_value (b, counts);
    g_free (counts);
    json_builder_end_object (b);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_end_object (b);
  JsonNode *root = json_builder_get_root (b);
  char *text = json_to_string (root, FALSE);
  json_node_unref (root);
  g_object_unref (b);
  return text;
}

int
main (int argc, char **argv)
{
  GError *error = NULL;
  GOptionContext *context = g_option_context_new (NULL);
  g_option_context_set_summary (context, "Runs Mask R-CNN on PNG or JPEG "
      "images and prints one JSON object per image.");
  MrcnnOptions options;
  if (!engine_options_parse (context, entries, &argc, &argv, &options,
          &error)) {
    int rc = die (error->message);
    g_error_free (error);
    return rc;
  }
  options.score_threshold = (float) score_threshold;
  options.nms_threshold = (float) nms_threshold;
  options.max_detections = max_detections;
  options.dump_dir = dump_dir;
  options.max_batch = batch;

  if (batch < 1 || batch > MRCNN_MAX_BATCH)
    return die ("--batch must be between 1 and 64");
  if (batch > 1 && dump_dir)
    return die ("--dump-dir writes one image's tensors at a time: not with "
        "--batch");
  if (!model_path)
    return die ("no model given: pass --model PATH to a .safetensors or "
        ".h5 file");
  if (!print_info && (!images || !images[0]))
    return die ("no image given (see --help)");

  MrcnnModel *model = mrcnn_model_load_with_config (model_path, config_path,
      &error);
  if (!model) {
    int rc = die (error->message);
    g_error_free (error);
    return rc;
  }
  if (print_info) {
    char *info = mrcnn_model_describe (model);
    printf ("%s\n", info);
    g_free (info);
    mrcnn_model_free (model);
    return 0;
  }
  MrcnnEngine *engine = mrcnn_engine_new (model, &options, &error);
  if (!engine) {
    int rc = die (error->message);
    g_error_free (error);
    mrcnn_model_free (model);
    return rc;
  }

  int rc = 0, n_images = (int) g_strv_length (images);
  MrcnnImage *frames = g_new0 (MrcnnImage, batch);
  MrcnnResult *results = g_new (MrcnnResult, batch);
  for (int i = 0; i < batch; i++)
    mrcnn_result_init (&results[i]);
  for (int first = 0; first < n_images && rc == 0; first += batch) {
    /* the images of this call that load; a failure to load one ends the
     * run after the images before it */
    GError *load_error = NULL;
    int loaded = 0, n = MIN (batch, n_images - first);
    for (; loaded < n; loaded++) {
      int w = 0, h = 0;
      guint8 *rgb = rgb_file_load (images[first + loaded], &w, &h,
          &load_error);
      if (!rgb)
        break;
      frames[loaded] = (MrcnnImage) { rgb, w, h, 3 * w };
    }
    int done = loaded;
    if (batch == 1 && loaded == 1)
      done = mrcnn_engine_detect (engine, &frames[0], &results[0], &error);
    else if (loaded > 0)
      done = mrcnn_engine_detect_batch (engine, frames, NULL, loaded,
          results, &error);
    for (int i = 0; i < done && rc == 0; i++) {
      const char *path = images[first + i];
      char *json = result_json (path, &results[i]);
      printf ("%s\n", json);
      fflush (stdout);
      g_free (json);
      if (dump_dir && images[1]
          && !keep_dump (first + i, images[first + i + 1] == NULL, &error)) {
        rc = die (error->message);
        g_clear_error (&error);
      }
    }
    if (rc == 0 && done < loaded) {
      char *message = g_strdup_printf ("%s: %s", images[first + done],
          error->message);
      rc = die (message);
      g_free (message);
    } else if (rc == 0 && load_error) {
      rc = die (load_error->message);
    }
    g_clear_error (&error);
    g_clear_error (&load_error);
    for (int i = 0; i < loaded; i++)
      g_free ((guint8 *) frames[i].data);
  }
  for (int i = 0; i < batch; i++)
    mrcnn_result_clear (&results[i]);
  g_free (results);
  g_free (frames);
  mrcnn_engine_free (engine);
  mrcnn_model_free (model);
  g_strfreev (images);
  return rc;
}
