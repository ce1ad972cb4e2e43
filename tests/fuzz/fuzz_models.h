/* The tiny models the fuzz targets that need a network start from: a
 * torchvision .safetensors and a matterport .h5, named by FUZZ_MODELS
 * (the two paths separated by ':'), read once at start-up. */
#ifndef FUZZ_MODELS_H
#define FUZZ_MODELS_H

#include <glib.h>
#include <stdlib.h>

/* models[0]: the .safetensors file's bytes, models[1]: the .h5 file's */
static inline void
fuzz_read_models (GBytes *models[2])
{
  const char *paths = getenv ("FUZZ_MODELS");
  if (!paths)
    g_error ("set FUZZ_MODELS to TINY.safetensors:TINY.h5");
  char **split = g_strsplit (paths, ":", 2);
  for (int i = 0; i < 2; i++) {
    char *content;
    gsize length;
    GError *error = NULL;
    if (!split[i] || !g_file_get_contents (split[i], &content, &length,
            &error))
      g_error ("FUZZ_MODELS: %s", error ? error->message : paths);
    models[i] = g_bytes_new_take (content, length);
  }
  g_strfreev (split);
}

#endif
