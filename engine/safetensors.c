#include "safetensors.h"

#include "model.h"
#include "sidecar.h"

#include <errno.h>
#include <json-glib/json-glib.h>
#include <string.h>

/* A header larger than this is refused before it is parsed (a ResNet-50
 * model's is 40 kB; json-glib needs many times a header's size). */
#define MAX_HEADER_BYTES (16 * 1024 * 1024)

struct _MrcnnSafetensors {
  char *path;
  GBytes *bytes; /* the file's content, mapped or in memory */
  GHashTable *tensors;  /* name -> MrcnnTensorView */
  GHashTable *metadata; /* key -> value */
};

static const struct {
  const char *name;
  MrcnnDtype dtype;
  int size;
} dtypes[] = {
  { "F64", MRCNN_DTYPE_F64, 8 },
  { "F32", MRCNN_DTYPE_F32, 4 },
  { "F16", MRCNN_DTYPE_F16, 2 },
  { "BF16", MRCNN_DTYPE_BF16, 2 },
  { "I64", MRCNN_DTYPE_I64, 8 },
  { "I32", MRCNN_DTYPE_I32, 4 },
  { "I16", MRCNN_DTYPE_I16, 2 },
  { "I8", MRCNN_DTYPE_I8, 1 },
  { "U8", MRCNN_DTYPE_U8, 1 },
  { "BOOL", MRCNN_DTYPE_BOOL, 1 },
};

const char *
mrcnn_dtype_name (MrcnnDtype dtype)
{
  for (gsize i = 0; i < G_N_ELEMENTS (dtypes); i++)
    if (dtypes[i].dtype == dtype)
      return dtypes[i].name;
  return "?";
}

static void
tensor_view_free (gpointer data)
{
  MrcnnTensorView *view = data;
  g_free ((char *) view->name);
  g_free (view);
}

static gboolean
parse_tensor (MrcnnSafetensors *file, const char *name, JsonNode *node,
    const uint8_t *data, guint64 data_size, GError **error)
{
  const char *path = file->path;
  if (!JSON_NODE_HOLDS_OBJECT (node))
    return mrcnn_path_error (error, MRCNN_ERROR_FORMAT, path,
        "bad JSON header: entry \"%s\" is not an object", name);
  JsonObject *obj = json_node_get_object (node);
  JsonNode *dtype_node = json_object_get_member (obj, "dtype");
  JsonNode *shape_node = json_object_get_member (obj, "shape");
  JsonNode *offsets_node = json_object_get_member (obj, "data_offsets");
  if (!dtype_node || json_node_get_value_type (dtype_node) != G_TYPE_STRING
      || !shape_node || !JSON_NODE_HOLDS_ARRAY (shape_node)
      || !offsets_node || !JSON_NODE_HOLDS_ARRAY (offsets_node))
    return mrcnn_path_error (error, MRCNN_ERROR_FORMAT, path,
        "bad JSON header: tensor \"%s\" needs dtype, shape and data_offsets",
        name);

  const char *dtype_name = json_node_get_string (dtype_node);
  int elem_size = 0;
  MrcnnTensorView *view = g_new0 (MrcnnTensorView, 1);
  for (gsize i = 0; i < G_N_ELEMENTS (dtypes); i++)
    if (strcmp (dtypes[i].name, dtype_name) == 0) {
      view->dtype = dtypes[i].dtype;
      elem_size = dtypes[i].size;
    }
  if (elem_size == 0) {
    g_free (view);
    return mrcnn_path_error (error, MRCNN_ERROR_FORMAT, path,
        "tensor \"%s\" has unknown dtype \"%s\"", name, dtype_name);
  }

  JsonArray *shape = json_node_get_array (shape_node);
  guint ndim = json_array_get_length (shape);
  if (ndim > MRCNN_MAX_DIMS) {
    g_free (view);
    return mrcnn_path_error (error, MRCNN_ERROR_FORMAT, path,
        "tensor \"%s\" has %u dimensions (at most %d supported)", name, ndim,
        MRCNN_MAX_DIMS);
  }
  guint64 numel = 1;
  for (guint i = 0; i < ndim; i++) {
    JsonNode *dim = json_array_get_element (shape, i);
    gint64 d = json_node_get_value_type (dim) == G_TYPE_INT64
        ? json_node_get_int (dim) : -1;
    /* a zero dimension makes any other fit the file: cap them too */
    if (d < 0 || d > MRCNN_MAX_DIM_SIZE
        || (d > 0 && numel > data_size / (guint64) d)) {
      g_free (view);
      return mrcnn_path_error (error, MRCNN_ERROR_FORMAT, path,
          "tensor \"%s\" has an invalid shape or is larger than the file",
          name);
    }
    view->shape[i] = d;
    numel *= (guint64) d;
  }
  view->ndim = (int) ndim;
  view->numel = (int64_t) numel;

  JsonArray *offsets = json_node_get_array (offsets_node);
  gboolean integers = json_array_get_length (offsets) == 2;
  for (guint i = 0; integers && i < 2; i++)
    integers = json_node_get_value_type (json_array_get_element (offsets, i))
        == G_TYPE_INT64;
  if (!integers) {
    g_free (view);
    return mrcnn_path_error (error, MRCNN_ERROR_FORMAT, path,
        "bad JSON header: data_offsets of \"%s\" must be two integers", name);
  }
  gint64 begin = json_array_get_int_element (offsets, 0);
  gint64 end = json_array_get_int_element (offsets, 1);
  if (begin < 0 || end < begin) {
    g_free (view);
    return mrcnn_path_error (error, MRCNN_ERROR_FORMAT, path,
        "tensor \"%s\" has invalid data_offsets [%" G_GINT64_FORMAT ", %"
        G_GINT64_FORMAT "]", name, begin, end);
  }
  if ((guint64) end > data_size) {
    g_free (view);
    return mrcnn_path_error (error, MRCNN_ERROR_FORMAT, path,
        "file is truncated: tensor \"%s\" ends at byte %" G_GINT64_FORMAT
        " of the data but the file holds only %" G_GUINT64_FORMAT, name, end,
        data_size);
  }
  if ((guint64) (end - begin) != numel * (guint64) elem_size) {
    g_free (view);
    return mrcnn_path_error (error, MRCNN_ERROR_FORMAT, path,
        "tensor \"%s\": data_offsets span %" G_GINT64_FORMAT " bytes but shape "
        "and dtype need %" G_GUINT64_FORMAT, name, end - begin,
        numel * (guint64) elem_size);
  }
  view->data = data + begin;
  view->name = g_strdup (name);
  g_hash_table_insert (file->tensors, (char *) view->name, view);
  return TRUE;
}

static gboolean
parse_metadata (MrcnnSafetensors *file, JsonNode *node, GError **error)
{
  if (!JSON_NODE_HOLDS_OBJECT (node))
    return mrcnn_path_error (error, MRCNN_ERROR_FORMAT, file->path,
        "bad JSON header: __metadata__ is not an object");
  JsonObject *obj = json_node_get_object (node);
  JsonObjectIter iter;
  const char *key;
  JsonNode *value;
  json_object_iter_init (&iter, obj);
  while (json_object_iter_next (&iter, &key, &value)) {
    if (json_node_get_value_type (value) != G_TYPE_STRING)
      return mrcnn_path_error (error, MRCNN_ERROR_FORMAT, file->path,
          "bad JSON header: __metadata__ value of \"%s\" is not a string", key);
    g_hash_table_insert (file->metadata, g_strdup (key),
        g_strdup (json_node_get_string (value)));
  }
  return TRUE;
}

MrcnnSafetensors *
mrcnn_safetensors_open (const char *path, GError **error)
{
  GError *map_error = NULL;
  GMappedFile *map = g_mapped_file_new (path, FALSE, &map_error);
  if (!map) {
    int code = map_error->domain == G_FILE_ERROR
        && map_error->code == G_FILE_ERROR_NOENT ? ENOENT : 0;
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_IO, "%s: cannot open: %s",
        path, code ? g_strerror (code) : map_error->message);
    g_error_free (map_error);
    return NULL;
  }
  GBytes *bytes = g_mapped_file_get_bytes (map);
  g_mapped_file_unref (map);
  MrcnnSafetensors *file = mrcnn_safetensors_open_bytes (bytes, path, error);
  g_bytes_unref (bytes);
  return file;
}

MrcnnSafetensors *
mrcnn_safetensors_open_bytes (GBytes *content, const char *path,
    GError **error)
{
  MrcnnSafetensors *file = g_new0 (MrcnnSafetensors, 1);
  file->path = g_strdup (path);
  file->bytes = g_bytes_ref (content);
  file->tensors = g_hash_table_new_full (g_str_hash, g_str_equal, NULL,
      tensor_view_free);
  file->metadata = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
      g_free);

  gsize length = 0;
  const uint8_t *bytes = g_bytes_get_data (content, &length);
  guint64 size = length;
  JsonParser *parser = NULL;
  if (size == 0) {
    mrcnn_path_error (error, MRCNN_ERROR_FORMAT, path, "file is empty");
    goto error;
  }
  if (size < 8) {
    mrcnn_path_error (error, MRCNN_ERROR_FORMAT, path,
        "file is truncated: %" G_GUINT64_FORMAT " bytes, too short for the "
        "8-byte header length of a safetensors file", size);
    goto error;
  }
  guint64 header_len = 0;
  for (int i = 7; i >= 0; i--)
    header_len = (header_len << 8) | bytes[i];
  if (header_len > size - 8 || header_len > MAX_HEADER_BYTES) {
    mrcnn_path_error (error, MRCNN_ERROR_FORMAT, path,
        "header length %" G_GUINT64_FORMAT " exceeds the file size (%"
        G_GUINT64_FORMAT " bytes) or the %d-byte limit: not a safetensors "
        "file, or truncated", header_len, size, MAX_HEADER_BYTES);
    goto error;
  }

  if (mrcnn_json_too_deep ((const char *) bytes + 8, (gssize) header_len)) {
    mrcnn_path_error (error, MRCNN_ERROR_FORMAT, path,
        "bad JSON header: nested deeper "
        "than %d levels", MRCNN_MAX_JSON_DEPTH);
    goto error;
  }
  parser = json_parser_new ();
  GError *json_error = NULL;
  if (!json_parser_load_from_data (parser, (const char *) bytes + 8,
          (gssize) header_len, &json_error)) {
    mrcnn_path_error (error, MRCNN_ERROR_FORMAT, path, "bad JSON header: %s",
        json_error->message);
    g_error_free (json_error);
    goto error;
  }
  JsonNode *root = json_parser_get_root (parser);
  if (!root || !JSON_NODE_HOLDS_OBJECT (root)) {
    mrcnn_path_error (error, MRCNN_ERROR_FORMAT, path,
        "bad JSON header: the header is not a JSON object");
    goto error;
  }

  const uint8_t *data = bytes + 8 + header_len;
  guint64 data_size = size - 8 - header_len;
  JsonObjectIter iter;
  const char *name;
  JsonNode *node;
  json_object_iter_init (&iter, json_node_get_object (root));
  while (json_object_iter_next (&iter, &name, &node)) {
    gboolean ok = strcmp (name, "__metadata__") == 0
        ? parse_metadata (file, node, error)
        : parse_tensor (file, name, node, data, data_size, error);
    if (!ok)
      goto error;
  }
  g_object_unref (parser);
  return file;

error:
  if (parser)
    g_object_unref (parser);
  mrcnn_safetensors_close (file);
  return NULL;
}

void
mrcnn_safetensors_close (MrcnnSafetensors *file)
{
  if (!file)
    return;
  g_hash_table_destroy (file->tensors);
  g_hash_table_destroy (file->metadata);
  g_bytes_unref (file->bytes);
  g_free (file->path);
  g_free (file);
}

const char *
mrcnn_safetensors_path (const MrcnnSafetensors *file)
{
  return file->path;
}

const MrcnnTensorView *
mrcnn_safetensors_find (const MrcnnSafetensors *file, const char *name)
{
  return g_hash_table_lookup (file->tensors, name);
}

const char *
mrcnn_safetensors_metadata (const MrcnnSafetensors *file, const char *key)
{
  return g_hash_table_lookup (file->metadata, key);
}

gboolean
mrcnn_safetensors_has_metadata (const MrcnnSafetensors *file)
{
  return g_hash_table_size (file->metadata) > 0;
}

static float
half_to_float (uint16_t h)
{
  uint32_t sign = (uint32_t) (h & 0x8000) << 16;
  uint32_t exponent = (h >> 10) & 0x1f;
  uint32_t mantissa = h & 0x3ff;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000 | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {
    /* subnormal: normalise the mantissa */
    int shift = 0;
    while (!(mantissa & 0x400)) {
      mantissa <<= 1;
      shift++;
    }
    bits = sign | ((uint32_t) (113 - shift) << 23) | ((mantissa & 0x3ff) << 13);
  }
  float f;
  memcpy (&f, &bits, 4);
  return f;
}

gboolean
mrcnn_tensor_to_f32 (const MrcnnTensorView *tensor, float *dst)
{
  const uint8_t *src = tensor->data;
  switch (tensor->dtype) {
    case MRCNN_DTYPE_F32:
      memcpy (dst, src, (size_t) tensor->numel * 4);
      return TRUE;
    case MRCNN_DTYPE_F64:
      for (int64_t i = 0; i < tensor->numel; i++) {
        double d;
        memcpy (&d, src + 8 * i, 8);
        dst[i] = (float) d;
      }
      return TRUE;
    case MRCNN_DTYPE_F16:
      for (int64_t i = 0; i < tensor->numel; i++)
        dst[i] = half_to_float ((uint16_t) (src[2 * i] | src[2 * i + 1] << 8));
      return TRUE;
    case MRCNN_DTYPE_BF16:
      for (int64_t i = 0; i < tensor->numel; i++) {
        uint32_t bits = (uint32_t) (src[2 * i] | src[2 * i + 1] << 8) << 16;
        memcpy (&dst[i], &bits, 4);
      }
      return TRUE;
    default:
      return FALSE;
  }
}
