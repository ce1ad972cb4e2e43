#include "engine-options.h"

#include <string.h>

static char *backend_name = "auto";
static char *precision_name = "fp32";
static int device_id = 0;
static int threads = 0;

static const GOptionEntry engine_option_entries[] = {
  { "backend", 'b', 0, G_OPTION_ARG_STRING, &backend_name,
    "auto, cpu or cuda (default auto: CUDA where a GPU is usable)", "NAME" },
  { "device", 'd', 0, G_OPTION_ARG_INT, &device_id,
    "CUDA GPU to run on, numbered from 0 (default 0)", "N" },
  { "precision", 'p', 0, G_OPTION_ARG_STRING, &precision_name,
    "fp32 or fp16 (default fp32; fp16 needs the CUDA backend)", "NAME" },
  { "threads", 't', 0, G_OPTION_ARG_INT, &threads,
    "CPU threads of the CPU backend (default 0: OpenMP's own count, "
    "OMP_NUM_THREADS or one per core)", "N" },
  { NULL },
};

gboolean
engine_options_parse (GOptionContext *context, const GOptionEntry *entries,
    int *argc, char ***argv, MrcnnOptions *options, GError **error)
{
  g_option_context_add_main_entries (context, entries, NULL);
  g_option_context_add_main_entries (context, engine_option_entries, NULL);
  gboolean parsed = g_option_context_parse (context, argc, argv, error);
  g_option_context_free (context);
  if (!parsed)
    return FALSE;
  mrcnn_options_init (options);
  if (strcmp (backend_name, "auto") == 0)
    options->backend = MRCNN_BACKEND_AUTO;
  else if (strcmp (backend_name, "cpu") == 0)
    options->backend = MRCNN_BACKEND_CPU;
  else if (strcmp (backend_name, "cuda") == 0)
    options->backend = MRCNN_BACKEND_CUDA;
  else {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT,
        "--backend must be auto, cpu or cuda");
    return FALSE;
  }
  if (strcmp (precision_name, "fp32") == 0)
    options->precision = MRCNN_PRECISION_FP32;
  else if (strcmp (precision_name, "fp16") == 0)
    options->precision = MRCNN_PRECISION_FP16;
  else {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT,
        "--precision must be fp32 or fp16");
    return FALSE;
  }
  if (threads < 0) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT,
        "--threads must be 0 (OpenMP's own count) or more");
    return FALSE;
  }
  options->device_id = device_id;
  options->threads = threads;
  return TRUE;
}
