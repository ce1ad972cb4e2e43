#include "model.h"
#include "sidecar.h"

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

G_DEFINE_QUARK (mrcnn-error-quark, mrcnn_error)

/* torchvision's COCO category list: index = category id, N/A for unused. */
static const char *const coco_torchvision_names[91] = {
  "__background__", "person", "bicycle", "car", "motorcycle", "airplane",
  "bus", "train", "truck", "boat", "traffic light", "fire hydrant", "N/A",
  "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse",
  "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "N/A", "backpack",
  "umbrella", "N/A", "N/A", "handbag", "tie", "suitcase", "frisbee", "skis",
  "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
  "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass",
  "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
  "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake",
  "chair", "couch", "potted plant", "bed", "N/A", "dining table", "N/A",
  "N/A", "toilet", "N/A", "tv", "laptop", "mouse", "remote", "keyboard",
  "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A",
  "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
  "toothbrush",
};

/* matterport's COCO classes: ids 1..80 are the category ids in ascending
 * order (MODEL_SPEC Part E). */
static const char *const coco_matterport_names[81] = {
  "BG", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train",
  "truck", "boat", "traffic light", "fire hydrant", "stop sign",
  "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
  "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag",
  "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
  "baseball bat", "baseball glove", "skateboard", "surfboard",
  "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon",
  "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot",
  "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
  "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
  "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
  "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
  "hair drier", "toothbrush",
};

void
mrcnn_config_init_torchvision (MrcnnConfig *c)
{
  static const float anchor_sizes[MRCNN_FPN_LEVELS] = { 32, 64, 128, 256,
    512 };
  *c = (MrcnnConfig) {
    .variant = MRCNN_VARIANT_TORCHVISION,
    .min_size = 800,
    .max_size = 1333,
    .size_divisible = 32,
    .image_mean = { 0.485f, 0.456f, 0.406f },
    .image_std = { 0.229f, 0.224f, 0.225f },
    .backbone_bn_eps = 0.0f,
    .head_bn_eps = 1e-5f,
    .n_anchor_sizes = 1,
    .n_aspect_ratios = 3,
    .aspect_ratios = { 0.5f, 1.0f, 2.0f },
    .rpn_pre_nms_top_n = 1000,
    .rpn_post_nms_top_n = 1000,
    .rpn_nms_thresh = 0.7f,
    .rpn_score_thresh = 0.0f,
    .rpn_min_size = 1e-3f,
    .box_score_thresh = 0.05f,
    .box_nms_thresh = 0.5f,
    .box_detections_per_img = 100,
    .box_coder_weights = { 10.0f, 10.0f, 5.0f, 5.0f },
    .bbox_xform_clip = (float) log (1000.0 / 16),
    .box_min_size = 1e-2f,
    .box_roi_size = 7,
    .mask_roi_size = 14,
    .sampling_ratio = 2,
    .mask_threshold = 0.5f,
  };
  for (int l = 0; l < MRCNN_FPN_LEVELS; l++)
    c->anchor_sizes[l][0] = anchor_sizes[l];
}

static const char hdf5_signature[8] = "\x89HDF\r\n\x1a\n";

/* HDF5's signature; files with a user block have it later, so the
 * extension counts too. */
static gboolean
is_hdf5 (const char *path)
{
  char head[8];
  FILE *f = g_fopen (path, "rb");
  gboolean match = f && fread (head, 1, 8, f) == 8
      && memcmp (head, hdf5_signature, 8) == 0;
  if (f)
    fclose (f);
  return match || g_str_has_suffix (path, ".h5")
      || g_str_has_suffix (path, ".hdf5");
}

void
mrcnn_model_default_class_names (MrcnnModel *m)
{
  gboolean matterport = m->config.variant == MRCNN_VARIANT_MATTERPORT;
  const char *const *coco = matterport ? coco_matterport_names
      : coco_torchvision_names;
  int coco_count = matterport ? 81 : 91;
  m->class_names = g_new0 (char *, m->num_classes + 1);
  for (int i = 0; i < m->num_classes; i++)
    m->class_names[i] = m->num_classes == coco_count ? g_strdup (coco[i])
        : i == 0 ? g_strdup (matterport ? "BG" : "__background__")
        : g_strdup_printf ("class_%d", i);
}

static void
conv_foreach (MrcnnConv *conv, const char *name, MrcnnWeightsFunc func,
    gpointer user_data)
{
  char label[96];
  g_snprintf (label, sizeof label, "%s weight", name);
  func (label, conv->weight, (size_t) conv->out_channels * conv->in_channels
      * conv->kernel * conv->kernel, user_data);
  g_snprintf (label, sizeof label, "%s bias", name);
  func (label, conv->bias, (size_t) conv->out_channels, user_data);
}

static void
linear_foreach (MrcnnLinear *fc, const char *name, MrcnnWeightsFunc func,
    gpointer user_data)
{
  char label[96];
  g_snprintf (label, sizeof label, "%s weight", name);
  func (label, fc->weight, (size_t) fc->out_features * fc->in_features,
      user_data);
  g_snprintf (label, sizeof label, "%s bias", name);
  func (label, fc->bias, (size_t) fc->out_features, user_data);
}

void
mrcnn_model_foreach_weights (MrcnnModel *m, MrcnnWeightsFunc func,
    gpointer user_data)
{
  char name[64];
  conv_foreach (&m->stem, "backbone stem conv", func, user_data);
  for (int L = 0; L < 4; L++)
    for (int i = 0; i < m->n_blocks[L]; i++) {
      MrcnnBottleneck *b = &m->blocks[L][i];
      MrcnnConv *convs[4] = { &b->conv1, &b->conv2, &b->conv3,
        &b->downsample };
      static const char *const conv_names[4] = { "conv1", "conv2", "conv3",
        "downsample" };
      for (int k = 0; k < (b->has_downsample ? 4 : 3); k++) {
        g_snprintf (name, sizeof name, "backbone stage %d block %d %s", L + 1,
            i + 1, conv_names[k]);
        conv_foreach (convs[k], name, func, user_data);
      }
    }
  for (int L = 0; L < 4; L++) {
    g_snprintf (name, sizeof name, "FPN inner %d", L + 1);
    conv_foreach (&m->fpn_inner[L], name, func, user_data);
    g_snprintf (name, sizeof name, "FPN output %d", L + 1);
    conv_foreach (&m->fpn_layer[L], name, func, user_data);
  }
  for (int j = 0; j < m->n_rpn_convs; j++) {
    g_snprintf (name, sizeof name, "RPN conv %d", j + 1);
    conv_foreach (&m->rpn_convs[j], name, func, user_data);
  }
  conv_foreach (&m->rpn_cls, "RPN objectness", func, user_data);
  conv_foreach (&m->rpn_bbox, "RPN box deltas", func, user_data);
  for (int j = 0; j < m->n_box_convs; j++) {
    g_snprintf (name, sizeof name, "box head conv %d", j + 1);
    conv_foreach (&m->box_convs[j], name, func, user_data);
  }
  for (int j = 0; j < m->n_box_fcs; j++) {
    g_snprintf (name, sizeof name, "box head fc %d", j + 1);
    linear_foreach (&m->box_fcs[j], name, func, user_data);
  }
  linear_foreach (&m->cls_score, "box head class scores", func, user_data);
  linear_foreach (&m->bbox_pred, "box head box deltas", func, user_data);
  for (int j = 0; j < m->n_mask_layers; j++) {
    g_snprintf (name, sizeof name, "mask head conv %d", j + 1);
    conv_foreach (&m->mask_layers[j], name, func, user_data);
  }
  MrcnnDeconv *dc = &m->mask_deconv;
  func ("mask head deconv weight", dc->weight,
      (size_t) dc->out_channels * 4 * dc->in_channels, user_data);
  func ("mask head deconv bias", dc->bias, (size_t) dc->out_channels,
      user_data);
  conv_foreach (&m->mask_logits, "mask head logits", func, user_data);
}

/* Keeps the name of the first array that holds a NaN or an infinity. */
static void
find_non_finite (const char *name, float *values, size_t n,
    gpointer user_data)
{
  char **first = user_data;
  if (*first)
    return;
  for (size_t i = 0; i < n; i++)
    if (!isfinite (values[i])) {
      *first = g_strdup (name);
      return;
    }
}

/* The loading shared by files and content in memory.  Weights that are not
 * finite (in the file, or made so by folding a batch norm with a zero
 * variance) would turn every activation after them into NaN. */
static MrcnnModel *
load (const MrcnnSource *source, gboolean matterport, GHashTable *sidecar,
    const char *config_path, GError **error)
{
  MrcnnModel *m = matterport
      ? mrcnn_model_load_matterport (source, sidecar, config_path, error)
      : mrcnn_model_load_torchvision (source, sidecar, config_path, error);
  if (!m)
    return NULL;
  char *non_finite = NULL;
  mrcnn_model_foreach_weights (m, find_non_finite, &non_finite);
  if (non_finite) {
    mrcnn_model_error (error, source->path, "the %s holds NaN or infinite "
        "values (with batch norm folded in): the file is damaged",
        non_finite);
    g_free (non_finite);
    mrcnn_model_free (m);
    return NULL;
  }
  if (!m->class_names)
    mrcnn_model_default_class_names (m);
  return m;
}

MrcnnModel *
mrcnn_model_load_with_config (const char *path, const char *config_path,
    GError **error)
{
  g_return_val_if_fail (path != NULL, NULL);
  GHashTable *sidecar = NULL;
  if (config_path && !(sidecar = mrcnn_sidecar_load (config_path, error)))
    return NULL;
  MrcnnSource source = { path, NULL };
  MrcnnModel *m = load (&source, is_hdf5 (path), sidecar, config_path, error);
  if (sidecar)
    g_hash_table_unref (sidecar);
  return m;
}

MrcnnModel *
mrcnn_model_load_bytes (GBytes *weights, const char *name,
    const char *config_text, const char *config_name, GError **error)
{
  GHashTable *sidecar = NULL;
  if (config_text && !(sidecar = mrcnn_sidecar_parse (config_text,
              config_name, error)))
    return NULL;
  gsize size = 0;
  const char *data = g_bytes_get_data (weights, &size);
  gboolean matterport = size >= 8 && memcmp (data, hdf5_signature, 8) == 0;
  MrcnnSource source = { name, weights };
  MrcnnModel *m = load (&source, matterport, sidecar, config_name, error);
  if (sidecar)
    g_hash_table_unref (sidecar);
  return m;
}

MrcnnModel *
mrcnn_model_load (const char *path, GError **error)
{
  return mrcnn_model_load_with_config (path, NULL, error);
}

static void
conv_free (MrcnnConv *conv)
{
  g_free (conv->weight);
  g_free (conv->bias);
}

static void
linear_free (MrcnnLinear *fc)
{
  g_free (fc->weight);
  g_free (fc->bias);
}

void
mrcnn_model_free (MrcnnModel *m)
{
  if (!m)
    return;
  conv_free (&m->stem);
  for (int L = 0; L < 4; L++) {
    for (int i = 0; m->blocks[L] && i < m->n_blocks[L]; i++) {
      conv_free (&m->blocks[L][i].conv1);
      conv_free (&m->blocks[L][i].conv2);
      conv_free (&m->blocks[L][i].conv3);
      conv_free (&m->blocks[L][i].downsample);
    }
    g_free (m->blocks[L]);
    conv_free (&m->fpn_inner[L]);
    conv_free (&m->fpn_layer[L]);
  }
  for (int j = 0; j < MRCNN_MAX_RPN_CONVS; j++)
    conv_free (&m->rpn_convs[j]);
  conv_free (&m->rpn_cls);
  conv_free (&m->rpn_bbox);
  for (int j = 0; j < MRCNN_MAX_BOX_CONVS; j++)
    conv_free (&m->box_convs[j]);
  for (int j = 0; j < MRCNN_MAX_BOX_FCS; j++)
    linear_free (&m->box_fcs[j]);
  linear_free (&m->cls_score);
  linear_free (&m->bbox_pred);
  for (int j = 0; j < MRCNN_MAX_MASK_LAYERS; j++)
    conv_free (&m->mask_layers[j]);
  g_free (m->mask_deconv.weight);
  g_free (m->mask_deconv.bias);
  conv_free (&m->mask_logits);
  g_strfreev (m->class_names);
  g_free (m->path);
  g_free (m);
}

const char *
mrcnn_model_variant (const MrcnnModel *m)
{
  return m->config.variant == MRCNN_VARIANT_MATTERPORT ? "matterport"
      : "torchvision";
}

int
mrcnn_model_num_classes (const MrcnnModel *m)
{
  return m->num_classes;
}

const char *
mrcnn_model_class_name (const MrcnnModel *m, int class_id)
{
  if (class_id < 0 || class_id >= m->num_classes)
    return NULL;
  return m->class_names[class_id];
}

static void
add_floats (JsonBuilder *b, const char *name, const float *v, int n)
{
  json_builder_set_member_name (b, name);
  json_builder_begin_array (b);
  for (int i = 0; i < n; i++)
    json_builder_add_double_value (b, v[i]);
  json_builder_end_array (b);
}

static void
add_ints (JsonBuilder *b, const char *name, const int *v, int n)
{
  json_builder_set_member_name (b, name);
  json_builder_begin_array (b);
  for (int i = 0; i < n; i++)
    json_builder_add_int_value (b, v[i]);
  json_builder_end_array (b);
}

static void
add_int (JsonBuilder *b, const char *name, int v)
{
  json_builder_set_member_name (b, name);
  json_builder_add_int_value (b, v);
}

static void
add_double (JsonBuilder *b, const char *name, double v)
{
  json_builder_set_member_name (b, name);
  json_builder_add_double_value (b, v);
}

static void
add_string (JsonBuilder *b, const char *name, const char *v)
{
  json_builder_set_member_name (b, name);
  json_builder_add_string_value (b, v);
}

/* matterport's constants under its Config attribute names. */
static void
describe_matterport (JsonBuilder *b, const MrcnnModel *m)
{
  static const char *const modes[] = { "square", "pad64", "none" };
  const MrcnnConfig *c = &m->config;
  int depth = 0;
  for (int L = 0; L < 4; L++)
    depth += 3 * m->n_blocks[L];
  char *backbone = g_strdup_printf ("resnet%d", depth + 2);
  add_string (b, "variant", "matterport");
  add_string (b, "BACKBONE", backbone);
  g_free (backbone);
  add_int (b, "NUM_CLASSES", m->num_classes);
  add_int (b, "IMAGE_MIN_DIM", c->min_size);
  add_int (b, "IMAGE_MAX_DIM", c->max_size);
  add_string (b, "IMAGE_RESIZE_MODE", modes[c->resize_mode]);
  add_double (b, "IMAGE_MIN_SCALE", c->min_scale);
  json_builder_set_member_name (b, "MEAN_PIXEL");
  json_builder_begin_array (b);
  for (int i = 0; i < 3; i++)
    json_builder_add_double_value (b, c->mean_pixel[i]);
  json_builder_end_array (b);
  float scales[MRCNN_FPN_LEVELS];
  for (int l = 0; l < MRCNN_FPN_LEVELS; l++)
    scales[l] = c->anchor_sizes[l][0];
  add_floats (b, "RPN_ANCHOR_SCALES", scales, MRCNN_FPN_LEVELS);
  add_floats (b, "RPN_ANCHOR_RATIOS", c->aspect_ratios, c->n_aspect_ratios);
  add_int (b, "RPN_ANCHOR_STRIDE", 1);
  static const float strides[MRCNN_FPN_LEVELS] = { 4, 8, 16, 32, 64 };
  add_floats (b, "BACKBONE_STRIDES", strides, MRCNN_FPN_LEVELS);
  add_floats (b, "RPN_BBOX_STD_DEV", c->rpn_bbox_std, 4);
  add_floats (b, "BBOX_STD_DEV", c->bbox_std, 4);
  add_int (b, "PRE_NMS_LIMIT", c->rpn_pre_nms_top_n);
  add_double (b, "RPN_NMS_THRESHOLD", c->rpn_nms_thresh);
  add_int (b, "POST_NMS_ROIS_INFERENCE", c->rpn_post_nms_top_n);
  add_double (b, "DETECTION_MIN_CONFIDENCE", c->box_score_thresh);
  add_double (b, "DETECTION_NMS_THRESHOLD", c->box_nms_thresh);
  add_int (b, "DETECTION_MAX_INSTANCES", c->box_detections_per_img);
  add_int (b, "POOL_SIZE", c->box_roi_size);
  add_int (b, "MASK_POOL_SIZE", c->mask_roi_size);
  add_double (b, "mask_threshold", c->mask_threshold);
  add_int (b, "rpn_channels", m->rpn_convs[0].out_channels);
}

/* torchvision's constants under the __metadata__ key names. */
static void
describe_torchvision (JsonBuilder *b, const MrcnnModel *m)
{
  const MrcnnConfig *c = &m->config;
  json_builder_set_member_name (b, "variant");
  json_builder_add_string_value (b, "torchvision");
  add_int (b, "min_size", c->min_size);
  add_int (b, "max_size", c->max_size);
  add_floats (b, "image_mean", c->image_mean, 3);
  add_floats (b, "image_std", c->image_std, 3);
  add_int (b, "size_divisible", c->size_divisible);
  add_double (b, "backbone_bn_eps", c->backbone_bn_eps);
  if (m->n_box_convs > 0)
    add_double (b, "head_bn_eps", c->head_bn_eps);
  add_int (b, "rpn_pre_nms_top_n", c->rpn_pre_nms_top_n);
  add_int (b, "rpn_post_nms_top_n", c->rpn_post_nms_top_n);
  add_double (b, "rpn_nms_thresh", c->rpn_nms_thresh);
  add_double (b, "box_score_thresh", c->box_score_thresh);
  add_double (b, "box_nms_thresh", c->box_nms_thresh);
  add_int (b, "box_detections_per_img", c->box_detections_per_img);
  add_double (b, "mask_threshold", c->mask_threshold);
  json_builder_set_member_name (b, "anchor_sizes");
  json_builder_begin_array (b);
  for (int l = 0; l < MRCNN_FPN_LEVELS; l++) {
    json_builder_begin_array (b);
    for (int i = 0; i < c->n_anchor_sizes; i++)
      json_builder_add_double_value (b, c->anchor_sizes[l][i]);
    json_builder_end_array (b);
  }
  json_builder_end_array (b);
  /* per level, like anchor_sizes and the metadata (the same on each) */
  json_builder_set_member_name (b, "aspect_ratios");
  json_builder_begin_array (b);
  for (int l = 0; l < MRCNN_FPN_LEVELS; l++) {
    json_builder_begin_array (b);
    for (int i = 0; i < c->n_aspect_ratios; i++)
      json_builder_add_double_value (b, c->aspect_ratios[i]);
    json_builder_end_array (b);
  }
  json_builder_end_array (b);
  add_int (b, "num_classes", m->num_classes);
}

/* What the network is, in the names its authors give it: torchvision's
 * builder where the shape is one of theirs. */
static char *
architecture (const MrcnnModel *m)
{
  int blocks = 0;
  for (int L = 0; L < 4; L++)
    blocks += m->n_blocks[L];
  int depth = 3 * blocks + 2; /* bottleneck blocks: 3 convs each */
  if (m->config.variant == MRCNN_VARIANT_MATTERPORT)
    return g_strdup_printf ("ResNet-%d-FPN Mask R-CNN (matterport)", depth);
  gboolean v2 = m->n_box_convs > 0;
  gboolean standard = depth == 50 && m->stem.out_channels == 64
      && m->fpn_channels == 256;
  if (standard)
    return g_strdup (v2 ? "maskrcnn_resnet50_fpn_v2" : "maskrcnn_resnet50_fpn");
  return g_strdup_printf ("ResNet-%d-FPN Mask R-CNN, torchvision %s heads",
      depth, v2 ? "v2" : "v1");
}

char *
mrcnn_model_describe (const MrcnnModel *m)
{
  JsonBuilder *b = json_builder_new ();
  json_builder_begin_object (b);
  char *arch = architecture (m);
  add_string (b, "architecture", arch);
  g_free (arch);
  if (m->config.variant == MRCNN_VARIANT_MATTERPORT)
    describe_matterport (b, m);
  else
    describe_torchvision (b, m);
  add_ints (b, "blocks", m->n_blocks, 4);
  add_int (b, "stem_channels", m->stem.out_channels);
  add_int (b, "fpn_channels", m->fpn_channels);
  add_int (b, "rpn_convs", m->n_rpn_convs);
  int widths[MAX (MRCNN_MAX_BOX_CONVS, MRCNN_MAX_MASK_LAYERS)];
  for (int j = 0; j < m->n_box_convs; j++)
    widths[j] = m->box_convs[j].out_channels;
  add_ints (b, "box_head_channels", widths, m->n_box_convs);
  for (int j = 0; j < m->n_box_fcs; j++)
    widths[j] = m->box_fcs[j].out_features;
  add_ints (b, "box_head_features", widths, m->n_box_fcs);
  add_int (b, "representation_size", widths[m->n_box_fcs - 1]);
  for (int j = 0; j < m->n_mask_layers; j++)
    widths[j] = m->mask_layers[j].out_channels;
  add_ints (b, "mask_channels", widths, m->n_mask_layers);
  json_builder_set_member_name (b, "class_names");
  json_builder_begin_array (b);
  for (int i = 0; i < m->num_classes; i++)
    json_builder_add_string_value (b, m->class_names[i]);
  json_builder_end_array (b);
  json_builder_end_object (b);

  JsonNode *root = json_builder_get_root (b);
  char *text = json_to_string (root, FALSE);
  json_node_unref (root);
  g_object_unref (b);
  return text;
}

gboolean
mrcnn_path_error (GError **error, int code, const char *path,
    const char *format, ...)
{
  va_list args;
  va_start (args, format);
  char *message = g_strdup_vprintf (format, args);
  va_end (args);
  g_set_error (error, MRCNN_ERROR, code, "%s: %s", path, message);
  g_free (message);
  return FALSE;
}
