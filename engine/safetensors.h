/* Read-only view of a .safetensors file: the file is mapped, the JSON header
 * parsed with json-glib, and tensors are handed out as views into the map. */
#ifndef MRCNN_SAFETENSORS_H
#define MRCNN_SAFETENSORS_H

#include <glib.h>
#include <stdint.h>

#define MRCNN_MAX_DIMS 8

typedef enum {
  MRCNN_DTYPE_F64,
  MRCNN_DTYPE_F32,
  MRCNN_DTYPE_F16,
  MRCNN_DTYPE_BF16,
  MRCNN_DTYPE_I64,
  MRCNN_DTYPE_I32,
  MRCNN_DTYPE_I16,
  MRCNN_DTYPE_I8,
  MRCNN_DTYPE_U8,
  MRCNN_DTYPE_BOOL,
} MrcnnDtype;

typedef struct {
  const char *name;
  MrcnnDtype dtype;
  int ndim;
  int64_t shape[MRCNN_MAX_DIMS];
  int64_t numel;
  const uint8_t *data; /* unaligned, little-endian */
} MrcnnTensorView;

typedef struct _MrcnnSafetensors MrcnnSafetensors;

/* Maps the file. */
MrcnnSafetensors *mrcnn_safetensors_open (const char *path, GError **error);
/* The same over a file's content in memory, referenced while open; path
 * names it in errors. */
MrcnnSafetensors *mrcnn_safetensors_open_bytes (GBytes *content,
    const char *path, GError **error);
void mrcnn_safetensors_close (MrcnnSafetensors *file);

const char *mrcnn_safetensors_path (const MrcnnSafetensors *file);
/* NULL when absent. */
const MrcnnTensorView *mrcnn_safetensors_find (const MrcnnSafetensors *file,
    const char *name);
/* NULL when absent. */
const char *mrcnn_safetensors_metadata (const MrcnnSafetensors *file,
    const char *key);
gboolean mrcnn_safetensors_has_metadata (const MrcnnSafetensors *file);

/* Converts a floating-point tensor to float32.  FALSE for integer dtypes. */
gboolean mrcnn_tensor_to_f32 (const MrcnnTensorView *tensor, float *dst);
const char *mrcnn_dtype_name (MrcnnDtype dtype);

#endif
