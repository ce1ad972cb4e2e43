/* libFuzzer target: a weights file's content through the loaders from
 * memory (mrcnn_model_load_bytes, the code the file loaders run), built
 * once per kind of seed corpus: FUZZ_NAME is the name the content gets,
 * so errors read as they would for such a file.  A model that loads is
 * described and freed; anything else must fail with an error, never crash,
 * leak or read out of bounds. */
#include "model.h"

#include <string.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  GBytes *bytes = g_bytes_new (data, size);
  GError *error = NULL;
  MrcnnModel *model = mrcnn_model_load_bytes (bytes, FUZZ_NAME, NULL, NULL,
      &error);
  if (model) {
    g_assert_no_error (error);
    char *description = mrcnn_model_describe (model);
    g_assert (description != NULL);
    g_free (description);
    mrcnn_model_free (model);
  } else {
    /* every refusal says why, naming the file */
    g_assert (error != NULL && strstr (error->message, FUZZ_NAME) != NULL);
    g_error_free (error);
  }
  g_bytes_unref (bytes);
  return 0;
}
