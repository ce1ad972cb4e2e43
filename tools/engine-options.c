#include "engine-options.h"

#include <string.h>

static char *backend_name = "auto";
static char *precision_name = "fp32";
static int device_id = 0;

const GOptionEntry engine_option_entries[] = {
  { "backend", 'b', 0, G_OPTION_ARG_STRING, &backend_name,
    "auto, cpu or cuda (default auto: CUDA where a GPU is usable)", "NAME" },
  { "device", 'd', 0, G_OPTION_ARG_INT, &device_id,
    "CUDA GPU to run on, numbered from 0 (default 0)", "N" },
  { "precision", 'p', 0, G_OPTION_ARG_STRING, &precision_name,
    "fp32 or fp16 (default fp32; fp16 needs the CUDA backend)", "NAME" },
  { NULL },
};

gboolean
engine_options_apply (MrcnnOptions *options, GError **error)
{
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
  options->device_id = device_id;
  return TRUE;
}
