/* libFuzzer target: sidecar configuration text, parsed and applied to a
 * tiny torchvision model and a tiny matterport model (fuzz_models.h).
 * Whatever the text, loading either succeeds or fails with an error naming
 * the sidecar or the weights. */
#include "fuzz_models.h"
#include "model.h"

#include <string.h>

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static GBytes *models[2];

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  (void) argc, (void) argv;
  fuzz_read_models (models);
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char *text = g_strndup ((const char *) data, size);
  for (int i = 0; i < 2; i++) {
    GError *error = NULL;
    MrcnnModel *model = mrcnn_model_load_bytes (models[i], "tiny-model", text,
        "fuzz.cfg", &error);
    if (model) {
      char *description = mrcnn_model_describe (model);
      g_free (description);
      mrcnn_model_free (model);
    } else {
      g_assert (error != NULL && (strstr (error->message, "fuzz.cfg")
              || strstr (error->message, "tiny-model")));
      g_error_free (error);
    }
  }
  g_free (text);
  return 0;
}
