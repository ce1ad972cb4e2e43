/* Builds an MrcnnModel from a torchvision Mask R-CNN state_dict saved as
 * safetensors.  The network shape is read from the tensors; constants come
 * from the optional sidecar, then the optional __metadata__, and default to
 * maskrcnn_resnet50_fpn v1. */
#include "backend.h"
#include "safetensors.h"
#include "sidecar.h"

#include <json-glib/json-glib.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

typedef struct {
  MrcnnSafetensors *file;
  const char *path;
  GError **error;
  GHashTable *sidecar;     /* key -> value text, or NULL */
  const char *config_path;
  gint64 total;            /* float32 values loaded so far */
} Loader;

#define model_error(ld, ...) \
  mrcnn_model_error ((ld)->error, (ld)->path, __VA_ARGS__)

/* The tensor under its current name, or under its legacy (.pth) name. */
static const MrcnnTensorView *
find (Loader *ld, const char *name, const char *legacy)
{
  const MrcnnTensorView *t = mrcnn_safetensors_find (ld->file, name);
  if (!t && legacy)
    t = mrcnn_safetensors_find (ld->file, legacy);
  return t;
}

static char *
shape_string (int ndim, const int64_t *shape)
{
  GString *s = g_string_new ("[");
  for (int i = 0; i < ndim; i++)
    g_string_append_printf (s, i ? ", %" G_GINT64_FORMAT : "%" G_GINT64_FORMAT,
        shape[i]);
  g_string_append_c (s, ']');
  return g_string_free (s, FALSE);
}

/* Loads a float tensor of the expected shape (-1 matches any size) as a new
 * float32 array; *shape_out (if given) receives the actual shape. */
static float *
load (Loader *ld, const char *name, const char *legacy, int ndim,
    const int64_t *expected, int64_t *shape_out)
{
  const MrcnnTensorView *t = find (ld, name, legacy);
  if (!t) {
    model_error (ld, "missing tensor \"%s\"", name);
    return NULL;
  }
  gboolean ok = t->ndim == ndim;
  for (int i = 0; ok && i < ndim; i++)
    ok = expected[i] < 0 || expected[i] == t->shape[i];
  /* an empty layer would give the network zero channels */
  for (int i = 0; ok && i < ndim; i++)
    ok = t->shape[i] > 0;
  if (!ok) {
    char *got = shape_string (t->ndim, t->shape);
    char *want = shape_string (ndim, expected);
    model_error (ld, "tensor \"%s\" has shape %s, expected %s (-1: any "
        "size above 0)", t->name, got, want);
    g_free (got);
    g_free (want);
    return NULL;
  }
  ld->total += t->numel;
  if (ld->total > MRCNN_MAX_MODEL_WEIGHTS) {
    model_error (ld, "the weights exceed %" G_GINT64_FORMAT " values (at "
        "tensor \"%s\"): refused as too large", MRCNN_MAX_MODEL_WEIGHTS,
        t->name);
    return NULL;
  }
  float *data = g_new (float, t->numel);
  if (!mrcnn_tensor_to_f32 (t, data)) {
    model_error (ld, "tensor \"%s\" has dtype %s, expected a floating-point "
        "dtype", t->name, mrcnn_dtype_name (t->dtype));
    g_free (data);
    return NULL;
  }
  if (shape_out)
    memcpy (shape_out, t->shape, sizeof (int64_t) * ndim);
  return data;
}

static void
conv_clear (MrcnnConv *conv)
{
  g_clear_pointer (&conv->weight, g_free);
  g_clear_pointer (&conv->bias, g_free);
}

/* A convolution with its own bias: prefix.weight [out][in][k][k] and
 * prefix.bias.  in/out < 0 accept any size. */
static gboolean
load_conv (Loader *ld, MrcnnConv *conv, const char *prefix,
    const char *legacy_prefix, int in, int out, int kernel, int stride, int pad)
{
  char *wname = g_strconcat (prefix, ".weight", NULL);
  char *bname = g_strconcat (prefix, ".bias", NULL);
  char *wlegacy = legacy_prefix ? g_strconcat (legacy_prefix, ".weight", NULL)
      : NULL;
  char *blegacy = legacy_prefix ? g_strconcat (legacy_prefix, ".bias", NULL)
      : NULL;
  int64_t shape[4];
  int64_t want_w[4] = { out, in, kernel, kernel };
  conv->weight = load (ld, wname, wlegacy, 4, want_w, shape);
  if (conv->weight) {
    int64_t want_b[1] = { shape[0] };
    conv->bias = load (ld, bname, blegacy, 1, want_b, NULL);
  }
  g_free (wname);
  g_free (bname);
  g_free (wlegacy);
  g_free (blegacy);
  if (!conv->bias) {
    conv_clear (conv);
    return FALSE;
  }
  conv->out_channels = (int) shape[0];
  conv->in_channels = (int) shape[1];
  conv->kernel = kernel;
  conv->stride = stride;
  conv->pad = pad;
  return TRUE;
}

/* A bias-free convolution followed by a (frozen) batch norm, folded:
 * k = gamma / sqrt(var + eps), W' = W k, b' = beta - mean k. */
static gboolean
load_conv_bn (Loader *ld, MrcnnConv *conv, const char *conv_name,
    const char *bn_name, int in, int out, int kernel, int stride, int pad,
    float eps)
{
  char *wname = g_strconcat (conv_name, ".weight", NULL);
  int64_t shape[4];
  int64_t want_w[4] = { out, in, kernel, kernel };
  conv->weight = load (ld, wname, NULL, 4, want_w, shape);
  g_free (wname);
  if (!conv->weight)
    return FALSE;
  conv->out_channels = (int) shape[0];
  conv->in_channels = (int) shape[1];
  conv->kernel = kernel;
  conv->stride = stride;
  conv->pad = pad;

  static const char *const parts[4] = { "weight", "bias", "running_mean",
    "running_var" };
  float *bn[4] = { NULL };
  int64_t want_c[1] = { shape[0] };
  gboolean ok = TRUE;
  for (int i = 0; i < 4 && ok; i++) {
    char *name = g_strdup_printf ("%s.%s", bn_name, parts[i]);
    bn[i] = load (ld, name, NULL, 1, want_c, NULL);
    ok = bn[i] != NULL;
    g_free (name);
  }
  if (ok) {
    int per_out = conv->in_channels * kernel * kernel;
    conv->bias = g_new (float, conv->out_channels);
    for (int o = 0; o < conv->out_channels; o++) {
      double k = bn[0][o] / sqrt ((double) bn[3][o] + eps);
      for (int i = 0; i < per_out; i++)
        conv->weight[(size_t) o * per_out + i] =
            (float) (conv->weight[(size_t) o * per_out + i] * k);
      conv->bias[o] = (float) (bn[1][o] - bn[2][o] * k);
    }
  } else {
    conv_clear (conv);
  }
  for (int i = 0; i < 4; i++)
    g_free (bn[i]);
  return ok;
}

static gboolean
load_linear (Loader *ld, MrcnnLinear *fc, const char *prefix, int in, int out)
{
  char *wname = g_strconcat (prefix, ".weight", NULL);
  char *bname = g_strconcat (prefix, ".bias", NULL);
  int64_t shape[2];
  int64_t want_w[2] = { out, in };
  fc->weight = load (ld, wname, NULL, 2, want_w, shape);
  if (fc->weight) {
    int64_t want_b[1] = { shape[0] };
    fc->bias = load (ld, bname, NULL, 1, want_b, NULL);
    if (!fc->bias)
      g_clear_pointer (&fc->weight, g_free);
  }
  g_free (wname);
  g_free (bname);
  if (!fc->weight)
    return FALSE;
  fc->out_features = (int) shape[0];
  fc->in_features = (int) shape[1];
  return TRUE;
}

/* ConvTranspose2d weight [in][out][2][2] regrouped as [out][2][2][in]. */
static gboolean
load_deconv (Loader *ld, MrcnnDeconv *deconv, const char *prefix, int in)
{
  char *wname = g_strconcat (prefix, ".weight", NULL);
  char *bname = g_strconcat (prefix, ".bias", NULL);
  int64_t shape[4];
  int64_t want_w[4] = { in, -1, 2, 2 };
  float *w = load (ld, wname, NULL, 4, want_w, shape);
  if (w) {
    int64_t want_b[1] = { shape[1] };
    deconv->bias = load (ld, bname, NULL, 1, want_b, NULL);
  }
  g_free (wname);
  g_free (bname);
  if (!deconv->bias) {
    g_free (w);
    return FALSE;
  }
  int cin = (int) shape[0], cout = (int) shape[1];
  deconv->in_channels = cin;
  deconv->out_channels = cout;
  deconv->weight = g_new (float, (size_t) cin * cout * 4);
  for (int c = 0; c < cin; c++)
    for (int o = 0; o < cout; o++)
      for (int t = 0; t < 4; t++)
        deconv->weight[((size_t) o * 4 + t) * cin + c] =
            w[((size_t) c * cout + o) * 4 + t];
  g_free (w);
  return TRUE;
}

/* ---- metadata ---------------------------------------------------------- */

/* The metadata keys this loader reads (a sidecar may set only these). */
static const char *const metadata_keys[] = {
  "min_size", "max_size", "size_divisible", "image_mean", "image_std",
  "backbone_bn_eps", "anchor_sizes", "aspect_ratios",
  "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test", "rpn_nms_thresh",
  "rpn_score_thresh", "box_score_thresh", "box_nms_thresh",
  "box_detections_per_img", "box_roi_output_size", "mask_roi_output_size",
  "sampling_ratio", "mask_threshold", "class_names", "head_bn_eps",
};

/* A metadata value as text: the sidecar's, else the file's; NULL when
 * absent. */
static const char *
meta_text (Loader *ld, const char *key)
{
  const char *text = ld->sidecar ? g_hash_table_lookup (ld->sidecar, key)
      : NULL;
  return text ? text : mrcnn_safetensors_metadata (ld->file, key);
}

/* An error about a metadata value, naming the file it came from. */
static gboolean
meta_error (Loader *ld, const char *key, const char *format, ...)
    G_GNUC_PRINTF (3, 4);

static gboolean
meta_error (Loader *ld, const char *key, const char *format, ...)
{
  va_list args;
  va_start (args, format);
  char *message = g_strdup_vprintf (format, args);
  va_end (args);
  gboolean from_sidecar = ld->sidecar && g_hash_table_contains (ld->sidecar,
      key);
  g_set_error (ld->error, MRCNN_ERROR, from_sidecar
      ? MRCNN_ERROR_INVALID_ARGUMENT : MRCNN_ERROR_MODEL, "%s: %s",
      from_sidecar ? ld->config_path : ld->path, message);
  g_free (message);
  return FALSE;
}

static gboolean
meta_double (Loader *ld, const char *key, double *out)
{
  const char *text = meta_text (ld, key);
  if (!text)
    return TRUE;
  char *end = NULL;
  double v = g_ascii_strtod (text, &end);
  while (end && g_ascii_isspace (*end))
    end++;
  if (end == text || !end || *end || !isfinite (v))
    return meta_error (ld, key, "metadata \"%s\" = \"%s\" is not a number",
        key, text);
  *out = v;
  return TRUE;
}

static gboolean
meta_float (Loader *ld, const char *key, float *out, double lo, double hi)
{
  double v = *out;
  if (!meta_double (ld, key, &v))
    return FALSE;
  if (v < lo || v > hi)
    return meta_error (ld, key, "metadata \"%s\" = %g is outside [%g, %g]",
        key, v, lo, hi);
  *out = (float) v;
  return TRUE;
}

static gboolean
meta_int (Loader *ld, const char *key, int *out, int lo, int hi)
{
  double v = *out;
  if (!meta_double (ld, key, &v))
    return FALSE;
  if (v != floor (v) || v < lo || v > hi)
    return meta_error (ld, key, "metadata \"%s\" = %g is not an integer in "
        "[%d, %d]", key, v, lo, hi);
  *out = (int) v;
  return TRUE;
}

/* Parses a metadata value as JSON; NULL (and no error) when absent. */
static JsonNode *
meta_json (Loader *ld, const char *key, gboolean *ok)
{
  *ok = TRUE;
  const char *text = meta_text (ld, key);
  if (!text)
    return NULL;
  GError *json_error = NULL;
  if (mrcnn_json_too_deep (text, -1)) {
    *ok = meta_error (ld, key, "metadata \"%s\" is nested deeper than %d "
        "levels", key, MRCNN_MAX_JSON_DEPTH);
    return NULL;
  }
  JsonNode *node = json_from_string (text, &json_error);
  if (!node) {
    *ok = meta_error (ld, key, "metadata \"%s\" is not valid JSON: %s", key,
        json_error ? json_error->message : "empty");
    g_clear_error (&json_error);
  }
  return node;
}

/* A JSON list of numbers; returns its length or -1 on error. */
static int
json_float_list (Loader *ld, const char *key, JsonNode *node, float *out,
    int max)
{
  if (!JSON_NODE_HOLDS_ARRAY (node)) {
    meta_error (ld, key, "metadata \"%s\" must be a list of numbers", key);
    return -1;
  }
  JsonArray *a = json_node_get_array (node);
  int n = (int) json_array_get_length (a);
  if (n < 1 || n > max) {
    meta_error (ld, key, "metadata \"%s\" has %d entries, expected 1 to %d",
        key, n, max);
    return -1;
  }
  for (int i = 0; i < n; i++) {
    JsonNode *e = json_array_get_element (a, i);
    GType type = json_node_get_value_type (e);
    if (!JSON_NODE_HOLDS_VALUE (e) || (type != G_TYPE_DOUBLE
            && type != G_TYPE_INT64)) {
      meta_error (ld, key, "metadata \"%s\" must be a list of numbers", key);
      return -1;
    }
    out[i] = (float) json_node_get_double (e);
  }
  return n;
}

static gboolean
meta_float3 (Loader *ld, const char *key, float out[3])
{
  gboolean ok;
  JsonNode *node = meta_json (ld, key, &ok);
  if (!node)
    return ok;
  float v[3];
  int n = json_float_list (ld, key, node, v, 3);
  json_node_unref (node);
  if (n < 0)
    return FALSE;
  if (n != 3)
    return meta_error (ld, key, "metadata \"%s\" needs 3 values", key);
  memcpy (out, v, sizeof v);
  return TRUE;
}

/* anchor_sizes: one list per level; aspect_ratios: one list per level, all
 * equal (or a single flat list). */
static gboolean
meta_anchors (Loader *ld, MrcnnConfig *c)
{
  gboolean ok;
  JsonNode *node = meta_json (ld, "anchor_sizes", &ok);
  if (node) {
    JsonArray *a = JSON_NODE_HOLDS_ARRAY (node) ? json_node_get_array (node)
        : NULL;
    if (!a || json_array_get_length (a) != MRCNN_FPN_LEVELS)
      ok = meta_error (ld, "anchor_sizes", "metadata \"anchor_sizes\" must "
          "list %d levels", MRCNN_FPN_LEVELS);
    for (int l = 0; ok && l < MRCNN_FPN_LEVELS; l++) {
      int n = json_float_list (ld, "anchor_sizes", json_array_get_element (a,
              l), c->anchor_sizes[l], MRCNN_MAX_ANCHOR_SHAPES);
      if (n < 0)
        ok = FALSE;
      else if (l > 0 && n != c->n_anchor_sizes)
        ok = meta_error (ld, "anchor_sizes", "metadata \"anchor_sizes\": "
            "every level needs the same number of sizes");
      else
        c->n_anchor_sizes = n;
    }
    json_node_unref (node);
  }
  if (!ok)
    return FALSE;

  node = meta_json (ld, "aspect_ratios", &ok);
  if (!node)
    return ok;
  JsonNode *first = node;
  if (JSON_NODE_HOLDS_ARRAY (node) && json_array_get_length
      (json_node_get_array (node)) > 0
      && JSON_NODE_HOLDS_ARRAY (json_array_get_element (json_node_get_array
              (node), 0))) {
    JsonArray *levels = json_node_get_array (node);
    first = json_array_get_element (levels, 0);
    char *ref = json_to_string (first, FALSE);
    for (guint l = 1; ok && l < json_array_get_length (levels); l++) {
      char *other = json_to_string (json_array_get_element (levels, l), FALSE);
      if (strcmp (ref, other) != 0)
        ok = meta_error (ld, "aspect_ratios", "metadata \"aspect_ratios\" "
            "differs between levels; this engine needs the same ratios on "
            "every level");
      g_free (other);
    }
    g_free (ref);
  }
  if (ok) {
    int n = json_float_list (ld, "aspect_ratios", first, c->aspect_ratios,
        MRCNN_MAX_ANCHOR_SHAPES);
    ok = n > 0;
    if (ok)
      c->n_aspect_ratios = n;
  }
  json_node_unref (node);
  return ok;
}

static gboolean
read_config (Loader *ld, MrcnnConfig *c)
{
  return meta_int (ld, "min_size", &c->min_size, 1, 8192)
      && meta_int (ld, "max_size", &c->max_size, 1, 8192)
      && meta_int (ld, "size_divisible", &c->size_divisible, 1, 512)
      && meta_float3 (ld, "image_mean", c->image_mean)
      && meta_float3 (ld, "image_std", c->image_std)
      && meta_float (ld, "backbone_bn_eps", &c->backbone_bn_eps, 0, 1)
      && meta_float (ld, "head_bn_eps", &c->head_bn_eps, 0, 1)
      && meta_anchors (ld, c)
      && meta_int (ld, "rpn_pre_nms_top_n_test", &c->rpn_pre_nms_top_n, 1,
          1000000)
      && meta_int (ld, "rpn_post_nms_top_n_test", &c->rpn_post_nms_top_n, 1,
          1000000)
      && meta_float (ld, "rpn_nms_thresh", &c->rpn_nms_thresh, 0, 1)
      && meta_float (ld, "rpn_score_thresh", &c->rpn_score_thresh, 0, 1)
      && meta_float (ld, "box_score_thresh", &c->box_score_thresh, 0, 1)
      && meta_float (ld, "box_nms_thresh", &c->box_nms_thresh, 0, 1)
      && meta_int (ld, "box_detections_per_img", &c->box_detections_per_img,
          1, MRCNN_MAX_DETECTIONS)
      && meta_int (ld, "box_roi_output_size", &c->box_roi_size, 1, 64)
      && meta_int (ld, "mask_roi_output_size", &c->mask_roi_size, 1, 64)
      && meta_int (ld, "sampling_ratio", &c->sampling_ratio, 1, 16)
      && meta_float (ld, "mask_threshold", &c->mask_threshold, 0, 1);
}

static gboolean
read_class_names (Loader *ld, MrcnnModel *m)
{
  gboolean ok;
  JsonNode *node = meta_json (ld, "class_names", &ok);
  if (!node)
    return ok;
  JsonArray *a = JSON_NODE_HOLDS_ARRAY (node) ? json_node_get_array (node)
      : NULL;
  if (!a || (int) json_array_get_length (a) != m->num_classes) {
    json_node_unref (node);
    return meta_error (ld, "class_names", "metadata \"class_names\" must "
        "be a list of %d names (one per class, background first), not %d",
        m->num_classes, a ? (int) json_array_get_length (a) : 0);
  }
  m->class_names = g_new0 (char *, m->num_classes + 1);
  for (int i = 0; i < m->num_classes; i++) {
    JsonNode *e = json_array_get_element (a, i);
    if (json_node_get_value_type (e) != G_TYPE_STRING) {
      json_node_unref (node);
      return meta_error (ld, "class_names", "metadata \"class_names\" "
          "entry %d is not a string", i);
    }
    m->class_names[i] = g_strdup (json_node_get_string (e));
  }
  json_node_unref (node);
  return TRUE;
}

/* ---- network ----------------------------------------------------------- */

static gboolean
load_backbone (Loader *ld, MrcnnModel *m)
{
  float eps = m->config.backbone_bn_eps;
  if (!load_conv_bn (ld, &m->stem, "backbone.body.conv1", "backbone.body.bn1",
          3, -1, 7, 2, 3, eps))
    return FALSE;
  int in = m->stem.out_channels;
  for (int L = 0; L < 4; L++) {
    int n = 0;
    for (;; n++) {
      char *probe = g_strdup_printf ("backbone.body.layer%d.%d.conv1.weight",
          L + 1, n);
      gboolean present = find (ld, probe, NULL) != NULL;
      g_free (probe);
      if (!present)
        break;
    }
    if (n == 0)
      return model_error (ld, "missing tensor \"backbone.body.layer%d.0.conv1"
          ".weight\" (a ResNet needs four stages of bottleneck blocks)", L + 1);
    m->n_blocks[L] = n;
    m->blocks[L] = g_new0 (MrcnnBottleneck, n);
    for (int i = 0; i < n; i++) {
      MrcnnBottleneck *b = &m->blocks[L][i];
      int stride = (i == 0 && L > 0) ? 2 : 1;
      char *p = g_strdup_printf ("backbone.body.layer%d.%d", L + 1, i);
      char *conv = g_strconcat (p, ".conv1", NULL), *bn = g_strconcat (p,
          ".bn1", NULL);
      gboolean ok = load_conv_bn (ld, &b->conv1, conv, bn, in, -1, 1, 1, 0,
          eps);
      g_free (conv), g_free (bn);
      conv = g_strconcat (p, ".conv2", NULL), bn = g_strconcat (p, ".bn2",
          NULL);
      ok = ok && load_conv_bn (ld, &b->conv2, conv, bn,
          b->conv1.out_channels, -1, 3, stride, 1, eps);
      g_free (conv), g_free (bn);
      conv = g_strconcat (p, ".conv3", NULL), bn = g_strconcat (p, ".bn3",
          NULL);
      ok = ok && load_conv_bn (ld, &b->conv3, conv, bn,
          b->conv2.out_channels, -1, 1, 1, 0, eps);
      g_free (conv), g_free (bn);
      conv = g_strconcat (p, ".downsample.0", NULL);
      char *probe = g_strconcat (conv, ".weight", NULL);
      b->has_downsample = find (ld, probe, NULL) != NULL;
      g_free (probe);
      bn = g_strconcat (p, ".downsample.1", NULL);
      if (ok && b->has_downsample)
        ok = load_conv_bn (ld, &b->downsample, conv, bn, in,
            b->conv3.out_channels, 1, stride, 0, eps);
      g_free (conv), g_free (bn);
      if (ok && !b->has_downsample && (stride != 1
              || in != b->conv3.out_channels))
        ok = model_error (ld, "missing tensor \"%s.downsample.0.weight\" "
            "(block changes shape, so it needs a downsample)", p);
      g_free (p);
      if (!ok)
        return FALSE;
      in = b->conv3.out_channels;
    }
    m->stage_channels[L] = in;
  }
  return TRUE;
}

/* A conv (+ ReLU where the layer has one) of torchvision's
 * Conv2dNormActivation at prefix: "prefix.0" with its own bias, or, where
 * "prefix.1" holds a batch norm (v2), a bias-free conv with that batch norm
 * folded in. */
static gboolean
load_conv_block (Loader *ld, MrcnnConv *conv, const char *prefix,
    const char *legacy_prefix, int in, int out, int kernel, int stride,
    int pad, float eps)
{
  char *conv_name = g_strconcat (prefix, ".0", NULL);
  char *bn_name = g_strconcat (prefix, ".1", NULL);
  gboolean has_bn = FALSE;
  static const char *const bn_parts[] = { "weight", "bias", "running_mean",
    "running_var" };
  for (gsize i = 0; i < G_N_ELEMENTS (bn_parts); i++) {
    char *probe = g_strdup_printf ("%s.%s", bn_name, bn_parts[i]);
    has_bn = has_bn || find (ld, probe, NULL);
    g_free (probe);
  }
  gboolean ok = has_bn
      ? load_conv_bn (ld, conv, conv_name, bn_name, in, out, kernel, stride,
      pad, eps)
      : load_conv (ld, conv, conv_name, legacy_prefix, in, out, kernel,
      stride, pad);
  g_free (conv_name), g_free (bn_name);
  return ok;
}

static gboolean
load_fpn (Loader *ld, MrcnnModel *m)
{
  float eps = m->config.backbone_bn_eps;
  for (int k = 0; k < 4; k++) {
    char *name = g_strdup_printf ("backbone.fpn.inner_blocks.%d", k);
    gboolean ok = load_conv_block (ld, &m->fpn_inner[k], name, name,
        m->stage_channels[k], k ? m->fpn_channels : -1, 1, 1, 0, eps);
    g_free (name);
    if (!ok)
      return FALSE;
    m->fpn_channels = m->fpn_inner[k].out_channels;
    name = g_strdup_printf ("backbone.fpn.layer_blocks.%d", k);
    ok = load_conv_block (ld, &m->fpn_layer[k], name, name, m->fpn_channels,
        m->fpn_channels, 3, 1, 1, eps);
    g_free (name);
    if (!ok)
      return FALSE;
  }
  return TRUE;
}

/* How many of prefix.0, prefix.1, ... have "prefix.<j><suffix>" (at most
 * max; one more is an error naming what); -1 and an error naming the
 * missing tensor where a layer is missing between two present ones. */
static int
count_layers (Loader *ld, const char *prefix, const char *suffix, int max,
    const char *what)
{
  for (int j = 0;; j++) {
    char *probe = g_strdup_printf ("%s.%d%s", prefix, j, suffix);
    gboolean present = find (ld, probe, NULL) != NULL;
    if (present && j == max) {
      g_free (probe);
      model_error (ld, "%s has more than %d layers", what, max);
      return -1;
    }
    if (!present) {
      char *next = g_strdup_printf ("%s.%d%s", prefix, j + 1, suffix);
      gboolean gap = find (ld, next, NULL) != NULL;
      if (gap)
        model_error (ld, "missing tensor \"%s\" (%s has \"%s\" after it)",
            probe, what, next);
      g_free (next);
      g_free (probe);
      return gap ? -1 : j;
    }
    g_free (probe);
  }
}

static gboolean
load_rpn (Loader *ld, MrcnnModel *m)
{
  const MrcnnConfig *c = &m->config;
  int fpn = m->fpn_channels;
  int anchors = c->n_anchor_sizes * c->n_aspect_ratios;
  int n = count_layers (ld, "rpn.head.conv", ".0.weight", MRCNN_MAX_RPN_CONVS,
      "the RPN head");
  if (n < 0)
    return FALSE;
  /* v1 files saved by torchvision before 0.13 name the one conv
   * rpn.head.conv */
  m->n_rpn_convs = MAX (n, 1);
  for (int j = 0; j < m->n_rpn_convs; j++) {
    char *name = g_strdup_printf ("rpn.head.conv.%d", j);
    gboolean ok = load_conv_block (ld, &m->rpn_convs[j], name,
        j == 0 ? "rpn.head.conv" : NULL, fpn, fpn, 3, 1, 1, 0);
    g_free (name);
    if (!ok)
      return FALSE;
  }
  if (!load_conv (ld, &m->rpn_cls, "rpn.head.cls_logits", NULL, fpn,
          anchors, 1, 1, 0)
      || !load_conv (ld, &m->rpn_bbox, "rpn.head.bbox_pred", NULL, fpn,
          4 * anchors, 1, 1, 0))
    return FALSE;
  m->num_anchors = anchors;
  return TRUE;
}

/* v1: TwoMLPHead (fc6, fc7); v2: FastRCNNConvFCHead, conv + BN + ReLU
 * blocks roi_heads.box_head.<j>, a Flatten, then Linear (+ ReLU) layers at
 * every second index after it. */
static gboolean
load_box_head (Loader *ld, MrcnnModel *m)
{
  int s = m->config.box_roi_size;
  int in = m->fpn_channels;
  if (find (ld, "roi_heads.box_head.fc6.weight", NULL)) {
    m->n_box_fcs = 2;
    return load_linear (ld, &m->box_fcs[0], "roi_heads.box_head.fc6",
        in * s * s, -1)
        && load_linear (ld, &m->box_fcs[1], "roi_heads.box_head.fc7",
        m->box_fcs[0].out_features, -1);
  }
  int n = count_layers (ld, "roi_heads.box_head", ".0.weight",
      MRCNN_MAX_BOX_CONVS, "the box head");
  if (n < 0)
    return FALSE;
  if (n == 0)
    return model_error (ld, "missing tensor \"roi_heads.box_head.fc6.weight\""
        " (v1) or \"roi_heads.box_head.0.0.weight\" (v2): no box head");
  m->n_box_convs = n;
  for (int j = 0; j < n; j++) {
    char *name = g_strdup_printf ("roi_heads.box_head.%d", j);
    gboolean ok = load_conv_block (ld, &m->box_convs[j], name, NULL, in, -1,
        3, 1, 1, m->config.head_bn_eps);
    g_free (name);
    if (!ok)
      return FALSE;
    in = m->box_convs[j].out_channels;
  }
  in *= s * s;
  /* index n is the Flatten, the Linear layers sit at n + 1, n + 3, ... */
  for (int j = 0;; j++) {
    char *name = g_strdup_printf ("roi_heads.box_head.%d", n + 1 + 2 * j);
    char *probe = g_strconcat (name, ".weight", NULL);
    gboolean present = find (ld, probe, NULL) != NULL;
    gboolean ok = TRUE;
    if (!present && j == 0)
      ok = model_error (ld, "missing tensor \"%s\" (the box head's fully "
          "connected layer after its %d convolutions)", probe, n);
    else if (present && j == MRCNN_MAX_BOX_FCS)
      ok = model_error (ld, "the box head has more than %d fully connected "
          "layers", MRCNN_MAX_BOX_FCS);
    else if (present)
      ok = load_linear (ld, &m->box_fcs[j], name, in, -1);
    g_free (name), g_free (probe);
    if (!ok)
      return FALSE;
    if (!present)
      return TRUE;
    in = m->box_fcs[j].out_features;
    m->n_box_fcs = j + 1;
  }
}

static gboolean
load_roi_heads (Loader *ld, MrcnnModel *m)
{
  if (!load_box_head (ld, m))
    return FALSE;
  int representation = m->box_fcs[m->n_box_fcs - 1].out_features;
  if (!load_linear (ld, &m->cls_score, "roi_heads.box_predictor.cls_score",
          representation, -1))
    return FALSE;
  m->num_classes = m->cls_score.out_features;
  if (m->num_classes < 2)
    return model_error (ld, "tensor \"roi_heads.box_predictor.cls_score"
        ".weight\" has %d classes; at least background and one class are "
        "needed", m->num_classes);
  if (!load_linear (ld, &m->bbox_pred, "roi_heads.box_predictor.bbox_pred",
          representation, 4 * m->num_classes))
    return FALSE;

  /* a gap in the layers is an error; files saved by torchvision before
   * 0.13 name them mask_fcn1, mask_fcn2, ... */
  if (count_layers (ld, "roi_heads.mask_head", ".0.weight",
          MRCNN_MAX_MASK_LAYERS, "the mask head") < 0)
    return FALSE;
  int in = m->fpn_channels;
  for (int j = 0;; j++) {
    char *name = g_strdup_printf ("roi_heads.mask_head.%d", j);
    char *legacy = g_strdup_printf ("roi_heads.mask_head.mask_fcn%d", j + 1);
    char *probe = g_strconcat (name, ".0.weight", NULL);
    char *probe_legacy = g_strconcat (legacy, ".weight", NULL);
    gboolean present = find (ld, probe, probe_legacy) != NULL;
    gboolean ok = TRUE;
    if (present && j == MRCNN_MAX_MASK_LAYERS)
      ok = model_error (ld, "mask head has more than %d layers",
          MRCNN_MAX_MASK_LAYERS);
    else if (present)
      ok = load_conv_block (ld, &m->mask_layers[j], name, legacy, in, -1, 3,
          1, 1, m->config.head_bn_eps);
    g_free (name), g_free (legacy), g_free (probe), g_free (probe_legacy);
    if (!ok)
      return FALSE;
    if (!present)
      break;
    in = m->mask_layers[j].out_channels;
    m->n_mask_layers = j + 1;
  }
  if (m->n_mask_layers == 0)
    return model_error (ld, "missing tensor \"roi_heads.mask_head.0.0.weight\""
        " (this engine runs Mask R-CNN, which needs a mask head)");
  if (!load_deconv (ld, &m->mask_deconv, "roi_heads.mask_predictor.conv5_mask",
          in))
    return FALSE;
  return load_conv (ld, &m->mask_logits,
      "roi_heads.mask_predictor.mask_fcn_logits", NULL,
      m->mask_deconv.out_channels, m->num_classes, 1, 1, 0);
}

/* The sidecar's values as metadata text (strings as they are, anything
 * else as JSON); NULL and an error naming the first unknown key. */
static GHashTable *
sidecar_text (GHashTable *sidecar, const char *config_path, GError **error)
{
  GHashTable *text = g_hash_table_new_full (g_str_hash, g_str_equal, NULL,
      g_free);
  GHashTableIter iter;
  gpointer key, value;
  g_hash_table_iter_init (&iter, sidecar);
  while (g_hash_table_iter_next (&iter, &key, &value)) {
    gboolean known = FALSE;
    for (gsize i = 0; i < G_N_ELEMENTS (metadata_keys); i++)
      known = known || strcmp (key, metadata_keys[i]) == 0;
    if (!known) {
      g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT,
          "%s: unknown key \"%s\" for a torchvision model (known: the "
          "safetensors metadata keys, e.g. min_size, box_score_thresh, "
          "class_names)", config_path, (const char *) key);
      g_hash_table_unref (text);
      return NULL;
    }
    JsonNode *node = value;
    g_hash_table_insert (text, key,
        json_node_get_value_type (node) == G_TYPE_STRING
        ? g_strdup (json_node_get_string (node))
        : json_to_string (node, FALSE));
  }
  return text;
}

MrcnnModel *
mrcnn_model_load_torchvision (const MrcnnSource *source, GHashTable *sidecar,
    const char *config_path, GError **error)
{
  const char *path = source->path;
  GHashTable *overrides = NULL;
  if (sidecar && !(overrides = sidecar_text (sidecar, config_path, error)))
    return NULL;
  MrcnnSafetensors *file = source->bytes
      ? mrcnn_safetensors_open_bytes (source->bytes, path, error)
      : mrcnn_safetensors_open (path, error);
  if (!file) {
    g_clear_pointer (&overrides, g_hash_table_unref);
    return NULL;
  }
  Loader ld = { file, path, error, overrides, config_path, 0 };
  MrcnnModel *m = g_new0 (MrcnnModel, 1);
  m->path = g_strdup (path);
  mrcnn_config_init_torchvision (&m->config);
  /* v1's COCO weights fold their frozen batch norms with eps 0; v2's
   * (batch norm in the FPN too) keep BatchNorm2d's 1e-5 */
  if (find (&ld, "backbone.fpn.inner_blocks.0.1.weight", NULL))
    m->config.backbone_bn_eps = 1e-5f;
  gboolean ok = read_config (&ld, &m->config)
      && load_backbone (&ld, m)
      && load_fpn (&ld, m)
      && load_rpn (&ld, m)
      && load_roi_heads (&ld, m)
      && read_class_names (&ld, m);
  mrcnn_safetensors_close (file);
  g_clear_pointer (&overrides, g_hash_table_unref);
  if (!ok) {
    mrcnn_model_free (m);
    return NULL;
  }
  return m;
}
