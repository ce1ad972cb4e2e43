/* Keras HDF5 weights: the root (or its model_weights group) lists the
 * layers in `layer_names` (split into layer_names0, 1, ... when large); each
 * layer group lists its datasets in `weight_names` ("scope/var:0"), which
 * is the authority for what a layer holds (MODEL_SPEC D.1). */
#include "keras_h5.h"

#include "model.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <hdf5.h>
#include <string.h>
#include <unistd.h>

/* Caps on a string-list attribute (layer_names of a ResNet-101 model:
 * 450 names, 10 kB). */
#define MAX_NAMES (1 << 20)
#define MAX_NAMES_BYTES (64 << 20)

struct _MrcnnKerasFile {
  char *path;
  hid_t file, root;
  GHashTable *weights; /* "layer/var" -> MrcnnKerasWeight */
};

static void
weight_free (gpointer data)
{
  MrcnnKerasWeight *w = data;
  g_free (w->dataset);
  g_free (w);
}

/* Appends the strings of a string-array attribute, fixed or variable
 * length; FALSE when it is absent or not strings. */
static gboolean
read_strings (hid_t obj, const char *name, GPtrArray *out)
{
  if (H5Aexists (obj, name) <= 0)
    return FALSE;
  hid_t attr = H5Aopen (obj, name, H5P_DEFAULT);
  if (attr < 0)
    return FALSE;
  hid_t type = H5Aget_type (attr), space = H5Aget_space (attr);
  hssize_t n = space >= 0 ? H5Sget_simple_extent_npoints (space) : -1;
  size_t size = type >= 0 ? H5Tget_size (type) : 0;
  /* a damaged attribute may claim any count: refuse it before allocating */
  gboolean ok = type >= 0 && space >= 0 && n >= 0 && n <= MAX_NAMES
      && size <= MAX_NAMES_BYTES / (size_t) MAX (n, 1)
      && H5Tget_class (type) == H5T_STRING;
  if (ok && n > 0 && H5Tis_variable_str (type) > 0) {
    /* libhdf5 converts no character sets: read UTF-8 (h5py's str) as is */
    hid_t mem = H5Tcopy (H5T_C_S1);
    H5Tset_size (mem, H5T_VARIABLE);
    H5Tset_cset (mem, H5Tget_cset (type));
    char **v = g_new0 (char *, n);
    ok = H5Aread (attr, mem, v) >= 0;
    for (hssize_t i = 0; ok && i < n; i++)
      g_ptr_array_add (out, g_strdup (v[i] ? v[i] : ""));
    if (ok)
      H5Dvlen_reclaim (mem, space, H5P_DEFAULT, v);
    g_free (v);
    H5Tclose (mem);
  } else if (ok && n > 0) {
    /* fixed length, NUL padded (or full) */
    char *buf = g_malloc0 ((size_t) n * size + 1);
    ok = size > 0 && H5Aread (attr, type, buf) >= 0;
    for (hssize_t i = 0; ok && i < n; i++)
      g_ptr_array_add (out, g_strndup (buf + i * size, size));
    g_free (buf);
  }
  if (space >= 0)
    H5Sclose (space);
  if (type >= 0)
    H5Tclose (type);
  H5Aclose (attr);
  return ok;
}

static gboolean
read_layer_names (hid_t obj, GPtrArray *out)
{
  if (read_strings (obj, "layer_names", out))
    return TRUE;
  gboolean any = FALSE;
  for (int i = 0;; i++, any = TRUE) {
    char *name = g_strdup_printf ("layer_names%d", i);
    gboolean ok = read_strings (obj, name, out);
    g_free (name);
    if (!ok)
      return any;
  }
}

static gboolean
has_layer_names (hid_t obj)
{
  return H5Aexists (obj, "layer_names") > 0
      || H5Aexists (obj, "layer_names0") > 0;
}

static void
add_weight (MrcnnKerasFile *f, const char *key, const char *dataset,
    int ndim, const hsize_t *dims)
{
  if (g_hash_table_contains (f->weights, key))
    return;
  MrcnnKerasWeight *w = g_new0 (MrcnnKerasWeight, 1);
  w->dataset = g_strdup (dataset);
  w->ndim = ndim;
  for (int i = 0; i < ndim; i++)
    w->shape[i] = (int64_t) dims[i];
  g_hash_table_insert (f->weights, g_strdup (key), w);
}

/* Registers a layer's datasets under "scope/var", the scope being the
 * name component before the variable (the wrapper's or the nested
 * layer's name), and under "layer/var" when that is free. */
static void
add_layer (MrcnnKerasFile *f, const char *layer)
{
  if (!*layer || H5Lexists (f->root, layer, H5P_DEFAULT) <= 0)
    return;
  hid_t group = H5Gopen2 (f->root, layer, H5P_DEFAULT);
  if (group < 0)
    return;
  GPtrArray *names = g_ptr_array_new_with_free_func (g_free);
  read_strings (group, "weight_names", names);
  for (guint i = 0; i < names->len; i++) {
    const char *name = names->pdata[i];
    hid_t d = H5Dopen2 (group, name, H5P_DEFAULT);
    if (d < 0)
      continue;
    hid_t space = H5Dget_space (d);
    int ndim = space >= 0 ? H5Sget_simple_extent_ndims (space) : -1;
    hsize_t dims[MRCNN_KERAS_MAX_DIMS];
    if (ndim >= 0 && ndim <= MRCNN_KERAS_MAX_DIMS) {
      H5Sget_simple_extent_dims (space, dims, NULL);
      char **parts = g_strsplit (name, "/", -1);
      int n = (int) g_strv_length (parts);
      char *var = g_strndup (parts[n - 1], strcspn (parts[n - 1], ":"));
      char *dataset = g_strconcat (layer, "/", name, NULL);
      char *key = g_strconcat (n > 1 ? parts[n - 2] : layer, "/", var, NULL);
      add_weight (f, key, dataset, ndim, dims);
      g_free (key);
      key = g_strconcat (layer, "/", var, NULL);
      add_weight (f, key, dataset, ndim, dims);
      g_free (key);
      g_free (dataset);
      g_free (var);
      g_strfreev (parts);
    }
    if (space >= 0)
      H5Sclose (space);
    H5Dclose (d);
  }
  g_ptr_array_unref (names);
  H5Gclose (group);
}

void
mrcnn_keras_close (MrcnnKerasFile *f)
{
  if (!f)
    return;
  if (f->root >= 0)
    H5Gclose (f->root);
  if (f->file >= 0)
    H5Fclose (f->file);
  if (f->weights)
    g_hash_table_unref (f->weights);
  g_free (f->path);
  g_free (f);
}

/* Reads the layer table of the open HDF5 file f->file. */
static MrcnnKerasFile *
keras_init (MrcnnKerasFile *f, GError **error)
{
  const char *path = f->path;
  if (f->file < 0) {
    mrcnn_path_error (error, MRCNN_ERROR_FORMAT, path,
        "cannot be opened as HDF5 (truncated or damaged?)");
    mrcnn_keras_close (f);
    return NULL;
  }
  f->root = H5Gopen2 (f->file, "/", H5P_DEFAULT);
  if (f->root >= 0 && !has_layer_names (f->root)
      && H5Lexists (f->root, "model_weights", H5P_DEFAULT) > 0) {
    hid_t sub = H5Gopen2 (f->root, "model_weights", H5P_DEFAULT);
    if (sub >= 0) {
      H5Gclose (f->root);
      f->root = sub;
    }
  }
  GPtrArray *layers = g_ptr_array_new_with_free_func (g_free);
  if (f->root < 0 || !read_layer_names (f->root, layers)) {
    mrcnn_path_error (error, MRCNN_ERROR_FORMAT, path,
        "an HDF5 file but not Keras "
        "weights: no \"layer_names\" attribute at its root or in "
        "\"model_weights\"");
    g_ptr_array_unref (layers);
    mrcnn_keras_close (f);
    return NULL;
  }
  f->weights = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
      weight_free);
  for (guint i = 0; i < layers->len; i++)
    add_layer (f, layers->pdata[i]);
  g_ptr_array_unref (layers);
  return f;
}

static guint64
read_le (const guint8 *p, int n)
{
  guint64 v = 0;
  for (int i = n - 1; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

/* libhdf5 1.10 (H5HG__cache_heap_deserialize) walks the objects of a
 * global heap collection, where variable-length strings such as h5py 3's
 * layer_names live, by each object's size, trusting it: a size of 0 makes
 * it loop forever, one that wraps the address (the free space's, too)
 * sends it reading before the collection, and H5HG_read copies an object
 * that runs past the collection's end as far as its size says.  This walks
 * every collection of the file (signature "GCOL", version 1) the same way
 * first and reports the offset of one with an object that does not fit in
 * it. */
static gboolean
find_damaged_global_heap (const guint8 *data, gsize size, gsize *offset)
{
  /* the superblock, at 0 or a power of two from 512, gives the size of
   * lengths */
  static const guint8 signature[8] = { 0x89, 'H', 'D', 'F', '\r', '\n', 0x1a,
    '\n' };
  int L = 0;
  for (gsize at = 0; at + 16 <= size && !L; at = at ? 2 * at : 512)
    if (memcmp (data + at, signature, 8) == 0)
      L = data[at + 8] < 2 ? data[at + 14] : data[at + 10];
  if (L != 2 && L != 4 && L != 8)
    return FALSE; /* libhdf5 refuses such a file itself */
  /* a collection's header ("GCOL", version, 3 reserved bytes) and an
   * object's (index, references, 4 reserved bytes) are both 8 bytes and a
   * length */
  guint64 header = 8 + L;
  const guint8 *hit = data, *end = data + size;
  while ((hit = memmem (hit, end - hit, "GCOL", 4))) {
    guint64 start = hit - data;
    hit++;
    if (start + header > size || data[start + 4] != 1)
      continue;
    guint64 heap_size = read_le (data + start + 8, L);
    if (heap_size > size - start)
      continue; /* beyond the file: libhdf5 fails to read it */
    guint64 p = start + header, heap_end = start + heap_size;
    while (p < heap_end) {
      if (p + header > heap_end)
        break; /* the free space at the end */
      guint64 idx = read_le (data + p, 2);
      guint64 object_size = read_le (data + p + 8, L);
      guint64 need = idx > 0 ? header + ((object_size + 7) & ~7ull)
          : object_size;
      /* the sizes overflow in libhdf5's pointer arithmetic as in ours, so
       * the object itself (its size unaligned, too) must fit */
      if (need == 0 || need > heap_end - p
          || (idx > 0 && object_size > heap_end - p)) {
        *offset = start;
        return TRUE;
      }
      p += need;
    }
  }
  return FALSE;
}

static gboolean
check_global_heaps (const void *data, gsize size, const char *path,
    GError **error)
{
  gsize offset;
  if (data && find_damaged_global_heap (data, size, &offset))
    return mrcnn_path_error (error, MRCNN_ERROR_FORMAT, path,
        "the global heap at byte %" G_GSIZE_FORMAT " (variable-length "
        "strings) is damaged: an object size would make libhdf5 read past "
        "it or without end", offset);
  return TRUE;
}

static MrcnnKerasFile *
keras_new (const char *path)
{
  MrcnnKerasFile *f = g_new0 (MrcnnKerasFile, 1);
  f->path = g_strdup (path);
  f->file = f->root = -1;
  return f;
}

MrcnnKerasFile *
mrcnn_keras_open (const char *path, GError **error)
{
  /* errors are reported here, with the file name, not on stderr */
  H5Eset_auto2 (H5E_DEFAULT, NULL, NULL);
  if (g_access (path, R_OK) != 0) {
    mrcnn_path_error (error, MRCNN_ERROR_IO, path,
        "cannot open: %s", g_strerror (errno));
    return NULL;
  }
  if (H5Fis_hdf5 (path) <= 0) {
    mrcnn_path_error (error, MRCNN_ERROR_FORMAT, path,
        "not an HDF5 file (Keras "
        "weights such as mask_rcnn_coco.h5 are HDF5)");
    return NULL;
  }
  GError *map_error = NULL;
  GMappedFile *mapped = g_mapped_file_new (path, FALSE, &map_error);
  if (!mapped) {
    mrcnn_path_error (error, MRCNN_ERROR_IO, path,
        "cannot map: %s", map_error->message);
    g_error_free (map_error);
    return NULL;
  }
  gboolean heaps_ok = check_global_heaps (g_mapped_file_get_contents (mapped),
      g_mapped_file_get_length (mapped), path, error);
  g_mapped_file_unref (mapped);
  if (!heaps_ok)
    return NULL;
  MrcnnKerasFile *f = keras_new (path);
  f->file = H5Fopen (path, H5F_ACC_RDONLY, H5P_DEFAULT);
  return keras_init (f, error);
}

MrcnnKerasFile *
mrcnn_keras_open_image (const void *data, gsize size, const char *path,
    GError **error)
{
  H5Eset_auto2 (H5E_DEFAULT, NULL, NULL);
  static const char signature[8] = "\x89HDF\r\n\x1a\n";
  if (size < 8 || memcmp (data, signature, 8) != 0) {
    mrcnn_path_error (error, MRCNN_ERROR_FORMAT, path,
        "not an HDF5 file (Keras "
        "weights such as mask_rcnn_coco.h5 are HDF5)");
    return NULL;
  }
  if (!check_global_heaps (data, size, path, error))
    return NULL;
  MrcnnKerasFile *f = keras_new (path);
  /* the core driver reads a copy of the image, never a file by that name */
  hid_t fapl = H5Pcreate (H5P_FILE_ACCESS);
  if (fapl >= 0 && H5Pset_fapl_core (fapl, 1 << 20, FALSE) >= 0
      && H5Pset_file_image (fapl, (void *) data, size) >= 0)
    f->file = H5Fopen (path, H5F_ACC_RDONLY, fapl);
  if (fapl >= 0)
    H5Pclose (fapl);
  return keras_init (f, error);
}

const MrcnnKerasWeight *
mrcnn_keras_find (const MrcnnKerasFile *f, const char *layer,
    const char *var)
{
  char *key = g_strconcat (layer, "/", var, NULL);
  const MrcnnKerasWeight *w = g_hash_table_lookup (f->weights, key);
  g_free (key);
  return w;
}

gboolean
mrcnn_keras_read (const MrcnnKerasFile *f, const MrcnnKerasWeight *w,
    float *dst, GError **error)
{
  hid_t d = H5Dopen2 (f->root, w->dataset, H5P_DEFAULT);
  hid_t type = d >= 0 ? H5Dget_type (d) : -1;
  gboolean is_float = type >= 0 && H5Tget_class (type) == H5T_FLOAT;
  /* the path may name another dataset than the one measured when the
   * layer's weight names are odd ("/x", "a//b"): dst holds w's shape */
  hid_t space = d >= 0 ? H5Dget_space (d) : -1;
  hssize_t count = 1;
  for (int i = 0; i < w->ndim; i++)
    count *= w->shape[i];
  gboolean same = space >= 0 && H5Sget_simple_extent_npoints (space) == count;
  /* libhdf5 converts float16/32/64 to float32 and undoes chunking and
   * compression filters */
  gboolean ok = is_float && same && H5Dread (d, H5T_NATIVE_FLOAT, H5S_ALL,
      H5S_ALL, H5P_DEFAULT, dst) >= 0;
  if (space >= 0)
    H5Sclose (space);
  if (type >= 0)
    H5Tclose (type);
  if (d >= 0)
    H5Dclose (d);
  if (!ok)
    mrcnn_path_error (error, MRCNN_ERROR_FORMAT, f->path,
        "cannot read dataset \"%s\" "
        "as float32: %s", w->dataset, !is_float ? "it is not a "
        "floating-point dataset" : !same ? "its size changed between "
        "lookups (a damaged file)" : "read failed (a compression filter this "
        "libhdf5 lacks, or a damaged file)");
  return ok;
}
