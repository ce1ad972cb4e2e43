/* Read-only access to Keras HDF5 weights (model.save_weights or the
 * model_weights group of model.save), through libhdf5. */
#ifndef MRCNN_KERAS_H5_H
#define MRCNN_KERAS_H5_H

#include <glib.h>
#include <stdint.h>

#define MRCNN_KERAS_MAX_DIMS 8

typedef struct {
  char *dataset;  /* path below the weights root */
  int ndim;
  int64_t shape[MRCNN_KERAS_MAX_DIMS];
} MrcnnKerasWeight;

typedef struct _MrcnnKerasFile MrcnnKerasFile;

MrcnnKerasFile *mrcnn_keras_open (const char *path, GError **error);
/* The same over a file's content in memory (libhdf5's file image, copied);
 * path names it in errors. */
MrcnnKerasFile *mrcnn_keras_open_image (const void *data, gsize size,
    const char *path, GError **error);
void mrcnn_keras_close (MrcnnKerasFile *file);

/* Variable `var` ("kernel", "bias", "gamma", ...) of the Keras layer
 * `layer`: the layer is the scope of the weight name, so TimeDistributed
 * wrappers and the layers of the nested rpn_model are found by their own
 * names.  NULL when absent. */
const MrcnnKerasWeight *mrcnn_keras_find (const MrcnnKerasFile *file,
    const char *layer, const char *var);

/* Reads a weight as float32 (converted from any float type) into dst,
 * which holds every element. */
gboolean mrcnn_keras_read (const MrcnnKerasFile *file,
    const MrcnnKerasWeight *weight, float *dst, GError **error);

#endif
