/* Builds an MrcnnModel from matterport's Keras Mask R-CNN weights
 * (mask_rcnn_coco.h5 and models trained with that code).  The shape comes
 * from the weights: ResNet depth (blocks per stage), every width, the
 * number of classes; constants from matterport's Config and the sidecar.
 * Batch norms (eps 1e-3) are folded into the convolutions in fp64, and
 * Keras layouts are turned into the engine's (MODEL_SPEC D.1, C.1). */
#include "backend.h"
#include "keras_h5.h"

#include <json-glib/json-glib.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

typedef struct {
  MrcnnKerasFile *file;
  const char *path;
  float eps;
  GError **error;
  gint64 total; /* float32 values loaded so far */
} Loader;

#define model_error(ld, ...) \
  mrcnn_model_error ((ld)->error, (ld)->path, __VA_ARGS__)

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

static gboolean
has (Loader *ld, const char *layer, const char *var)
{
  return mrcnn_keras_find (ld->file, layer, var) != NULL;
}

/* Reads layer/var of the expected shape (-1: any size) as float32;
 * *shape_out (if given) receives the actual shape. */
static float *
load (Loader *ld, const char *layer, const char *var, int ndim,
    const int64_t *expected, int64_t *shape_out)
{
  const MrcnnKerasWeight *w = mrcnn_keras_find (ld->file, layer, var);
  if (!w) {
    char *want = shape_string (ndim, expected);
    model_error (ld, "layer \"%s\" has no weight \"%s\" (expected shape %s, "
        "-1: any)", layer, var, want);
    g_free (want);
    return NULL;
  }
  gboolean ok = w->ndim == ndim;
  for (int i = 0; ok && i < ndim; i++)
    ok = (expected[i] < 0 || expected[i] == w->shape[i])
        /* empty layers would give the network zero channels */
        && w->shape[i] > 0 && w->shape[i] <= MRCNN_MAX_DIM_SIZE;
  if (!ok) {
    char *got = shape_string (w->ndim, w->shape);
    char *want = shape_string (ndim, expected);
    model_error (ld, "layer \"%s\" weight \"%s\" has shape %s, expected %s "
        "(-1: any size from 1 to %d)", layer, var, got, want,
        MRCNN_MAX_DIM_SIZE);
    g_free (got);
    g_free (want);
    return NULL;
  }
  /* a compressed dataset may claim any size: count before allocating */
  gint64 n = 1;
  for (int i = 0; i < ndim && n <= MRCNN_MAX_MODEL_WEIGHTS; i++)
    n *= w->shape[i];
  if (n > MRCNN_MAX_MODEL_WEIGHTS - ld->total) {
    model_error (ld, "the weights exceed %" G_GINT64_FORMAT " values (at "
        "layer \"%s\" weight \"%s\"): refused as too large",
        MRCNN_MAX_MODEL_WEIGHTS, layer, var);
    return NULL;
  }
  ld->total += n;
  float *data = g_new (float, n);
  if (!mrcnn_keras_read (ld->file, w, data, ld->error)) {
    g_free (data);
    return NULL;
  }
  if (shape_out)
    memcpy (shape_out, w->shape, sizeof (int64_t) * ndim);
  return data;
}

/* A Keras Conv2D (kernel [k][k][in][out], bias [out], zero when the file
 * has none) with the batch norm `bn` (NULL: none) folded in fp64:
 * k = gamma / sqrt(var + eps), W' = W k, b' = (b - mean) k + beta.
 * weight receives [out][in][k][k] and bias [out]; in/out < 0 match any. */
static gboolean
load_folded (Loader *ld, const char *layer, const char *bn, int kernel,
    int in, int out, float **weight, float **bias, int64_t *shape)
{
  int64_t want_k[4] = { kernel, kernel, in, out };
  float *k = load (ld, layer, "kernel", 4, want_k, shape);
  if (!k)
    return FALSE;
  int cin = (int) shape[2], cout = (int) shape[3];
  int64_t want_c[1] = { cout };
  float *b = NULL;
  if (has (ld, layer, "bias") && !(b = load (ld, layer, "bias", 1, want_c,
              NULL))) {
    g_free (k);
    return FALSE;
  }
  static const char *const parts[4] = { "gamma", "beta", "moving_mean",
    "moving_variance" };
  float *norm[4] = { NULL };
  gboolean ok = TRUE;
  for (int i = 0; bn && ok && i < 4; i++)
    ok = (norm[i] = load (ld, bn, parts[i], 1, want_c, NULL)) != NULL;
  if (ok) {
    size_t per_out = (size_t) cin * kernel * kernel;
    *weight = g_new (float, per_out * cout);
    *bias = g_new (float, cout);
    for (int o = 0; o < cout; o++) {
      double scale = bn ? norm[0][o] / sqrt ((double) norm[3][o] + ld->eps)
          : 1.0;
      double b0 = b ? b[o] : 0.0;
      (*bias)[o] = (float) (bn ? (b0 - norm[2][o]) * scale + norm[1][o] : b0);
      for (int c = 0; c < cin; c++)
        for (int y = 0; y < kernel; y++)
          for (int x = 0; x < kernel; x++)
            (*weight)[(((size_t) o * cin + c) * kernel + y) * kernel + x] =
                (float) (k[(((size_t) y * kernel + x) * cin + c) * cout + o]
                * scale);
    }
  }
  for (int i = 0; i < 4; i++)
    g_free (norm[i]);
  g_free (b);
  g_free (k);
  return ok;
}

static gboolean
load_conv (Loader *ld, MrcnnConv *conv, const char *layer, const char *bn,
    int kernel, int in, int out, int stride, int pad)
{
  int64_t shape[4];
  if (!load_folded (ld, layer, bn, kernel, in, out, &conv->weight,
          &conv->bias, shape))
    return FALSE;
  conv->in_channels = (int) shape[2];
  conv->out_channels = (int) shape[3];
  conv->kernel = kernel;
  conv->stride = stride;
  conv->pad = pad;
  return TRUE;
}

/* A valid k x k conv over a k x k input is a fully connected layer; its
 * input index c k k + y k + x matches the [C][P][P] crops the engine
 * pools (Keras flattens HWC, so this is the permutation of C.1). */
static gboolean
load_conv_as_linear (Loader *ld, MrcnnLinear *fc, const char *layer,
    const char *bn, int kernel, int in, int out)
{
  int64_t shape[4];
  if (!load_folded (ld, layer, bn, kernel, in, out, &fc->weight, &fc->bias,
          shape))
    return FALSE;
  fc->in_features = (int) shape[2] * kernel * kernel;
  fc->out_features = (int) shape[3];
  return TRUE;
}

/* A Keras Dense: kernel [in][out] transposed to [out][in]. */
static gboolean
load_dense (Loader *ld, MrcnnLinear *fc, const char *layer, int in, int out)
{
  int64_t shape[2], want_k[2] = { in, out };
  float *k = load (ld, layer, "kernel", 2, want_k, shape);
  if (!k)
    return FALSE;
  int64_t want_b[1] = { shape[1] };
  fc->bias = load (ld, layer, "bias", 1, want_b, NULL);
  if (!fc->bias) {
    g_free (k);
    return FALSE;
  }
  fc->in_features = (int) shape[0];
  fc->out_features = (int) shape[1];
  fc->weight = g_new (float, (size_t) shape[0] * shape[1]);
  for (int i = 0; i < fc->in_features; i++)
    for (int o = 0; o < fc->out_features; o++)
      fc->weight[(size_t) o * fc->in_features + i] =
          k[(size_t) i * fc->out_features + o];
  g_free (k);
  return TRUE;
}

/* Conv2DTranspose 2x2 stride 2: kernel [2][2][out][in] regrouped as
 * [out][2][2][in]. */
static gboolean
load_deconv (Loader *ld, MrcnnDeconv *deconv, const char *layer, int in)
{
  int64_t shape[4], want_k[4] = { 2, 2, -1, in };
  float *k = load (ld, layer, "kernel", 4, want_k, shape);
  if (!k)
    return FALSE;
  int cout = (int) shape[2], cin = (int) shape[3];
  int64_t want_b[1] = { cout };
  deconv->bias = load (ld, layer, "bias", 1, want_b, NULL);
  if (!deconv->bias) {
    g_free (k);
    return FALSE;
  }
  deconv->in_channels = cin;
  deconv->out_channels = cout;
  deconv->weight = g_new (float, (size_t) cin * cout * 4);
  for (int t = 0; t < 4; t++)
    for (int o = 0; o < cout; o++)
      for (int c = 0; c < cin; c++)
        deconv->weight[((size_t) o * 4 + t) * cin + c] =
            k[((size_t) t * cout + o) * cin + c];
  g_free (k);
  return TRUE;
}

/* ---- network ----------------------------------------------------------- */

/* ResNet in Keras style: stride in the first 1x1 of block "a", a shortcut
 * conv only in block "a", blocks named a, b, c, ... (resnet_graph). */
static gboolean
load_backbone (Loader *ld, MrcnnModel *m)
{
  if (!load_conv (ld, &m->stem, "conv1", "bn_conv1", 7, 3, -1, 2, 3))
    return FALSE;
  int in = m->stem.out_channels;
  for (int L = 0; L < 4; L++) {
    int stage = L + 2, n = 0;
    for (; n < 26; n++) {
      char *probe = g_strdup_printf ("res%d%c_branch2a", stage, 'a' + n);
      gboolean present = has (ld, probe, "kernel");
      g_free (probe);
      if (!present)
        break;
    }
    if (n == 0)
      return model_error (ld, "layer \"res%da_branch2a\" has no weight "
          "\"kernel\" (a ResNet needs stages 2 to 5 of bottleneck blocks)",
          stage);
    m->n_blocks[L] = n;
    m->blocks[L] = g_new0 (MrcnnBottleneck, n);
    for (int i = 0; i < n; i++) {
      MrcnnBottleneck *b = &m->blocks[L][i];
      int stride = (i == 0 && L > 0) ? 2 : 1;
      char c = 'a' + i;
      char *conv = g_strdup_printf ("res%d%c_branch2a", stage, c);
      char *bn = g_strdup_printf ("bn%d%c_branch2a", stage, c);
      gboolean ok = load_conv (ld, &b->conv1, conv, bn, 1, in, -1, stride, 0);
      g_free (conv), g_free (bn);
      conv = g_strdup_printf ("res%d%c_branch2b", stage, c);
      bn = g_strdup_printf ("bn%d%c_branch2b", stage, c);
      ok = ok && load_conv (ld, &b->conv2, conv, bn, 3,
          b->conv1.out_channels, -1, 1, 1);
      g_free (conv), g_free (bn);
      conv = g_strdup_printf ("res%d%c_branch2c", stage, c);
      bn = g_strdup_printf ("bn%d%c_branch2c", stage, c);
      ok = ok && load_conv (ld, &b->conv3, conv, bn, 1,
          b->conv2.out_channels, -1, 1, 0);
      g_free (conv), g_free (bn);
      if (ok && i == 0) {
        conv = g_strdup_printf ("res%da_branch1", stage);
        bn = g_strdup_printf ("bn%da_branch1", stage);
        b->has_downsample = TRUE;
        ok = load_conv (ld, &b->downsample, conv, bn, 1, in,
            b->conv3.out_channels, stride, 0);
        g_free (conv), g_free (bn);
      } else if (ok && in != b->conv3.out_channels) {
        ok = model_error (ld, "layer \"res%d%c_branch2c\" has %d output "
            "channels, but an identity block needs %d", stage, c,
            b->conv3.out_channels, in);
      }
      if (!ok)
        return FALSE;
      in = b->conv3.out_channels;
    }
    m->stage_channels[L] = in;
  }
  return TRUE;
}

static gboolean
load_fpn (Loader *ld, MrcnnModel *m)
{
  for (int k = 0; k < 4; k++) {
    char *lateral = g_strdup_printf ("fpn_c%dp%d", k + 2, k + 2);
    char *output = g_strdup_printf ("fpn_p%d", k + 2);
    gboolean ok = load_conv (ld, &m->fpn_inner[k], lateral, NULL, 1,
        m->stage_channels[k], k ? m->fpn_channels : -1, 1, 0);
    if (ok)
      m->fpn_channels = m->fpn_inner[k].out_channels;
    ok = ok && load_conv (ld, &m->fpn_layer[k], output, NULL, 3,
        m->fpn_channels, m->fpn_channels, 1, 1);
    g_free (lateral), g_free (output);
    if (!ok)
      return FALSE;
  }
  return TRUE;
}

static gboolean
load_rpn (Loader *ld, MrcnnModel *m)
{
  int A = m->config.n_aspect_ratios;
  m->n_rpn_convs = 1;
  if (!load_conv (ld, &m->rpn_convs[0], "rpn_conv_shared", NULL, 3,
          m->fpn_channels, -1, 1, 1)
      || !load_conv (ld, &m->rpn_cls, "rpn_class_raw", NULL, 1,
          m->rpn_convs[0].out_channels, -1, 1, 0)
      || !load_conv (ld, &m->rpn_bbox, "rpn_bbox_pred", NULL, 1,
          m->rpn_convs[0].out_channels, -1, 1, 0))
    return FALSE;
  /* two logits and four deltas per anchor */
  if (m->rpn_cls.out_channels != 2 * A || m->rpn_bbox.out_channels != 4 * A)
    return model_error (ld, "layers \"rpn_class_raw\" and \"rpn_bbox_pred\" "
        "have %d and %d outputs, but %d anchor ratios (RPN_ANCHOR_RATIOS) "
        "need %d and %d", m->rpn_cls.out_channels, m->rpn_bbox.out_channels,
        A, 2 * A, 4 * A);
  m->num_anchors = A;
  return TRUE;
}

static gboolean
load_heads (Loader *ld, MrcnnModel *m)
{
  MrcnnConfig *c = &m->config;
  const MrcnnKerasWeight *w = mrcnn_keras_find (ld->file,
      "mrcnn_class_conv1", "kernel");
  /* POOL_SIZE is the box head's kernel size */
  if (w && w->ndim == 4 && w->shape[0] == w->shape[1] && w->shape[0] > 1
      && w->shape[0] <= 64)
    c->box_roi_size = (int) w->shape[0];
  MrcnnLinear *fc6 = &m->box_fcs[0], *fc7 = &m->box_fcs[1];
  m->n_box_fcs = 2;
  if (!load_conv_as_linear (ld, fc6, "mrcnn_class_conv1", "mrcnn_class_bn1",
          c->box_roi_size, m->fpn_channels, -1)
      || !load_conv_as_linear (ld, fc7, "mrcnn_class_conv2",
          "mrcnn_class_bn2", 1, fc6->out_features, -1)
      || !load_dense (ld, &m->cls_score, "mrcnn_class_logits",
          fc7->out_features, -1))
    return FALSE;
  m->num_classes = m->cls_score.out_features;
  if (m->num_classes < 2)
    return model_error (ld, "layer \"mrcnn_class_logits\" has %d classes; "
        "at least background and one class are needed", m->num_classes);
  if (!load_dense (ld, &m->bbox_pred, "mrcnn_bbox_fc", fc7->out_features,
          4 * m->num_classes))
    return FALSE;

  int in = m->fpn_channels;
  for (int j = 0;; j++) {
    char *conv = g_strdup_printf ("mrcnn_mask_conv%d", j + 1);
    char *bn = g_strdup_printf ("mrcnn_mask_bn%d", j + 1);
    gboolean present = has (ld, conv, "kernel"), ok = TRUE;
    if (present && j == MRCNN_MAX_MASK_LAYERS)
      ok = model_error (ld, "mask head has more than %d layers",
          MRCNN_MAX_MASK_LAYERS);
    else if (present)
      ok = load_conv (ld, &m->mask_layers[j], conv, bn, 3, in, -1, 1, 1);
    g_free (conv), g_free (bn);
    if (!ok)
      return FALSE;
    if (!present)
      break;
    in = m->mask_layers[j].out_channels;
    m->n_mask_layers = j + 1;
  }
  if (m->n_mask_layers == 0)
    return model_error (ld, "layer \"mrcnn_mask_conv1\" has no weight "
        "\"kernel\" (this engine runs Mask R-CNN, which needs a mask head)");
  return load_deconv (ld, &m->mask_deconv, "mrcnn_mask_deconv", in)
      && load_conv (ld, &m->mask_logits, "mrcnn_mask", NULL, 1,
      m->mask_deconv.out_channels, m->num_classes, 1, 0);
}

/* NUM_CLASSES and CLASS_NAMES from the sidecar, against the weights. */
static gboolean
read_classes (MrcnnModel *m, GHashTable *sidecar, const char *config_path,
    GError **error)
{
  JsonNode *n = sidecar ? g_hash_table_lookup (sidecar, "NUM_CLASSES") : NULL;
  if (n && (!JSON_NODE_HOLDS_VALUE (n)
          || json_node_get_value_type (n) != G_TYPE_INT64)) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT,
        "%s: NUM_CLASSES must be an integer", config_path);
    return FALSE;
  }
  if (n && json_node_get_int (n) != m->num_classes) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_MODEL, "%s: NUM_CLASSES is "
        "%" G_GINT64_FORMAT ", but the weights in %s have %d classes",
        config_path, json_node_get_int (n), m->path, m->num_classes);
    return FALSE;
  }
  JsonNode *names = sidecar ? g_hash_table_lookup (sidecar, "CLASS_NAMES")
      : NULL;
  if (!names)
    return TRUE;
  JsonArray *a = JSON_NODE_HOLDS_ARRAY (names) ? json_node_get_array (names)
      : NULL;
  int count = a ? (int) json_array_get_length (a) : -1;
  for (int i = 0; i < count; i++) {
    JsonNode *e = json_array_get_element (a, i);
    if (!JSON_NODE_HOLDS_VALUE (e)
        || json_node_get_value_type (e) != G_TYPE_STRING)
      count = -1;
  }
  if (count < 0) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT,
        "%s: CLASS_NAMES must be a list of strings (\"BG\" first)",
        config_path);
    return FALSE;
  }
  if (count != m->num_classes) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_MODEL, "%s: CLASS_NAMES has "
        "%d names, but the weights in %s have %d classes (\"BG\" included)",
        config_path, count, m->path, m->num_classes);
    return FALSE;
  }
  m->class_names = g_new0 (char *, count + 1);
  for (int i = 0; i < count; i++)
    m->class_names[i] = g_strdup (json_array_get_string_element (a, i));
  return TRUE;
}

MrcnnModel *
mrcnn_model_load_matterport (const MrcnnSource *source, GHashTable *sidecar,
    const char *config_path, GError **error)
{
  const char *path = source->path;
  MrcnnModel *m = g_new0 (MrcnnModel, 1);
  m->path = g_strdup (path);
  mrcnn_config_init_matterport (&m->config);
  if (sidecar && !mrcnn_config_apply_matterport (&m->config, sidecar,
          config_path, error)) {
    mrcnn_model_free (m);
    return NULL;
  }
  MrcnnKerasFile *file = source->bytes
      ? mrcnn_keras_open_image (g_bytes_get_data (source->bytes, NULL),
          g_bytes_get_size (source->bytes), path, error)
      : mrcnn_keras_open (path, error);
  if (!file) {
    mrcnn_model_free (m);
    return NULL;
  }
  Loader ld = { file, path, m->config.backbone_bn_eps, error, 0 };
  gboolean ok = load_backbone (&ld, m)
      && load_fpn (&ld, m)
      && load_rpn (&ld, m)
      && load_heads (&ld, m)
      && read_classes (m, sidecar, config_path, error);
  mrcnn_keras_close (file);
  if (!ok) {
    mrcnn_model_free (m);
    return NULL;
  }
  return m;
}
