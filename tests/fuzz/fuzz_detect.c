/* libFuzzer target: detection on odd frames with damaged weights.  The tiny
 * torchvision and matterport models (fuzz_models.h) are loaded once, with a
 * sidecar that keeps their frames small.  Each input overwrites a few weights with values
 * it chooses (huge ones, and NaN or infinities, which the loaders refuse but
 * overflowing activations produce anyway), sets the frame size, the
 * thresholds and the pixels, and runs one detection on the CPU backend.
 * Whatever the input, the result must be one a user can rely on: finite
 * scores in (0, 1], known labels, finite boxes, masks inside the frame with
 * values in [0, 1].
 *
 * Input: byte 0 (bit 0: matterport; bit 1: score threshold 0, so that every
 * candidate reaches the heads and the paste), bytes 1-2 (width and height,
 * 1..96), byte 3 (patches, 0..7), 9 bytes a patch (the weight array, a
 * 32-bit element index, a float32 value), then RGB pixels (repeated to
 * fill the frame). */
#include "fuzz_models.h"
#include "geometry.h"
#include "model.h"

#include <math.h>
#include <string.h>

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

#define MAX_SIDE 96
#define MAX_PATCHES 8
#define PATCH_SIZE 9

typedef struct {
  float *values;
  size_t n;
} WeightArray;

typedef struct {
  MrcnnModel *model;
  MrcnnEngine *engine;
  GArray *arrays; /* WeightArray, every weight and bias of the model */
} Target;

static Target targets[2];
static MrcnnResult result;
static uint8_t pixels[MAX_SIDE * MAX_SIDE * 3];

/* Frames at 64 pixels on the long side and 200 proposals, so that an input
 * runs in milliseconds, still enough for 100 detections with the score
 * threshold at 0; the rest of each model's constants are its own. */
static const char *const sidecars[2] = {
  "{\"min_size\": 48, \"max_size\": 64, \"rpn_pre_nms_top_n_test\": 300, "
      "\"rpn_post_nms_top_n_test\": 200}",
  "IMAGE_MIN_DIM = 64\nIMAGE_MAX_DIM = 64\nIMAGE_RESIZE_MODE = 'square'\n"
      "PRE_NMS_LIMIT = 300\nPOST_NMS_ROIS_INFERENCE = 200\n",
};

static void
add_array (const char *name, float *values, size_t n, gpointer user_data)
{
  (void) name;
  WeightArray array = { values, n };
  g_array_append_val ((GArray *) user_data, array);
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  (void) argc, (void) argv;
  GBytes *models[2];
  fuzz_read_models (models);
  for (int i = 0; i < 2; i++) {
    Target *t = &targets[i];
    GError *error = NULL;
    t->model = mrcnn_model_load_bytes (models[i], "tiny-model", sidecars[i],
        "fuzz.cfg", &error);
    g_bytes_unref (models[i]);
    MrcnnOptions options;
    mrcnn_options_init (&options);
    options.backend = MRCNN_BACKEND_CPU;
    if (!t->model || !(t->engine = mrcnn_engine_new (t->model, &options,
                &error)))
      g_error ("%s", error->message);
    t->arrays = g_array_new (FALSE, FALSE, sizeof (WeightArray));
    mrcnn_model_foreach_weights (t->model, add_array, t->arrays);
  }
  mrcnn_result_init (&result);
  return 0;
}

static void
check_result (const MrcnnModel *model, int width, int height)
{
  g_assert_cmpint (result.image_width, ==, width);
  g_assert_cmpint (result.image_height, ==, height);
  for (int i = 0; i < result.n_detections; i++) {
    const MrcnnDetection *d = &result.detections[i];
    g_assert (isfinite (d->score) && d->score > 0 && d->score <= 1);
    g_assert (i == 0 || d->score <= result.detections[i - 1].score);
    g_assert_cmpint (d->label_id, >=, 1);
    g_assert_cmpint (d->label_id, <, mrcnn_model_num_classes (model));
    for (int k = 0; k < 4; k++)
      g_assert (isfinite (d->box[k]));
    g_assert (d->mask_x >= 0 && d->mask_y >= 0);
    g_assert (d->mask_width >= 0 && d->mask_x + d->mask_width <= width);
    g_assert (d->mask_height >= 0 && d->mask_y + d->mask_height <= height);
    size_t n = (size_t) d->mask_width * d->mask_height;
    for (size_t p = 0; p < n; p++) {
      g_assert (d->mask[p] >= 0 && d->mask[p] <= 1); /* false for NaN */
      g_assert (d->mask_binary[p] <= 1);
    }
  }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (size < 4)
    return 0;
  Target *t = &targets[data[0] & 1];
  int width = 1 + data[1] % MAX_SIDE, height = 1 + data[2] % MAX_SIDE;
  int n_patches = MIN (data[3] % MAX_PATCHES, (int) (size - 4) / PATCH_SIZE);
  const uint8_t *p = data + 4;

  struct {
    float *at;
    float old;
  } patched[MAX_PATCHES];
  for (int i = 0; i < n_patches; i++, p += PATCH_SIZE) {
    const WeightArray *a = &g_array_index (t->arrays, WeightArray,
        p[0] % t->arrays->len);
    uint32_t index;
    float value;
    memcpy (&index, p + 1, 4);
    memcpy (&value, p + 5, 4);
    patched[i].at = a->values + index % a->n;
    patched[i].old = *patched[i].at;
    *patched[i].at = value;
  }

  size_t n_pixels = (size_t) width * height * 3, left = data + size - p;
  for (size_t i = 0; i < n_pixels; i++)
    pixels[i] = left ? p[i % left] : (uint8_t) i;
  g_assert (mrcnn_engine_set_thresholds (t->engine,
          data[0] & 2 ? 0.0f : -1.0f, -1.0f, -1, -1.0f, NULL));
  MrcnnImage image = { pixels, width, height, width * 3 };
  GError *error = NULL;
  if (mrcnn_engine_detect (t->engine, &image, &result, &error)) {
    check_result (t->model, width, height);
  } else {
    /* only a frame the model cannot resize (a side that would round to
     * zero) is refused, never one because of the weights */
    MrcnnGeometry geometry;
    g_assert (g_error_matches (error, MRCNN_ERROR,
            MRCNN_ERROR_INVALID_ARGUMENT));
    g_assert (!mrcnn_geometry_compute (&t->model->config, width, height,
            &geometry, NULL));
    g_error_free (error);
  }

  /* the model as loaded for the next input */
  for (int i = n_patches - 1; i >= 0; i--)
    *patched[i].at = patched[i].old;
  return 0;
}
