/* libFuzzer target: sidecar configuration text, parsed and applied to a
 * tiny torchvision model and a tiny matterport model (their files are read
 * once, from FUZZ_SIDECAR_MODELS: a .safetensors and an .h5 path separated
 * by ':').  Whatever the text, loading either succeeds or fails with an
 * error naming the sidecar or the weights. */
#include "model.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static GBytes *models[2];

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  (void) argc, (void) argv;
  const char *paths = getenv ("FUZZ_SIDECAR_MODELS");
  if (!paths)
    g_error ("set FUZZ_SIDECAR_MODELS to TINY.safetensors:TINY.h5");
  char **split = g_strsplit (paths, ":", 2);
  for (int i = 0; i < 2; i++) {
    char *content;
    gsize length;
    GError *error = NULL;
    if (!split[i] || !g_file_get_contents (split[i], &content, &length,
            &error))
      g_error ("FUZZ_SIDECAR_MODELS: %s", error ? error->message : paths);
    models[i] = g_bytes_new_take (content, length);
  }
  g_strfreev (split);
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
