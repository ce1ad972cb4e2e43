/* The network as loaded in host memory: shapes, constants and weights with
 * batch norm already folded into the convolutions.  Backends read it and
 * never change it. */
#ifndef MRCNN_MODEL_H
#define MRCNN_MODEL_H

#include "mrcnn.h"

G_BEGIN_DECLS

#define MRCNN_FPN_LEVELS 5   /* P2..P5 and the pooled P6 */
#define MRCNN_ROI_LEVELS 4   /* ROIAlign reads P2..P5 */
#define MRCNN_MAX_ANCHOR_SHAPES 8
#define MRCNN_MAX_MASK_LAYERS 8
#define MRCNN_MAX_RPN_CONVS 4
#define MRCNN_MAX_BOX_CONVS 8
#define MRCNN_MAX_BOX_FCS 4

typedef struct {
  int in_channels, out_channels;
  int kernel, stride, pad;
  float *weight; /* [out][in][kernel][kernel] */
  float *bias;   /* [out] */
} MrcnnConv;

typedef struct {
  int in_features, out_features;
  float *weight; /* [out][in] */
  float *bias;   /* [out] */
} MrcnnLinear;

/* ConvTranspose2d with kernel 2, stride 2: a per-pixel GEMM to 4 outputs. */
typedef struct {
  int in_channels, out_channels;
  float *weight; /* [out][2][2][in] */
  float *bias;   /* [out] */
} MrcnnDeconv;

typedef struct {
  MrcnnConv conv1, conv2, conv3;
  gboolean has_downsample;
  MrcnnConv downsample;
} MrcnnBottleneck;

/* Which network family the weights come from; the CPU backend runs each
 * family's own arithmetic where the two differ (MODEL_SPEC Part C). */
typedef enum {
  MRCNN_VARIANT_TORCHVISION,
  MRCNN_VARIANT_MATTERPORT,
} MrcnnVariant;

/* matterport's IMAGE_RESIZE_MODE */
typedef enum {
  MRCNN_RESIZE_SQUARE,
  MRCNN_RESIZE_PAD64,
  MRCNN_RESIZE_NONE,
} MrcnnResizeMode;

/* Constants of either variant.  For matterport: min_size/max_size are
 * IMAGE_MIN_DIM/IMAGE_MAX_DIM, aspect_ratios are width / height, rpn_pre_nms_top_n is PRE_NMS_LIMIT,
 * rpn_post_nms_top_n POST_NMS_ROIS_INFERENCE and box_* the DETECTION_*
 * values. */
typedef struct {
  MrcnnVariant variant;
  int min_size, max_size, size_divisible;
  float image_mean[3], image_std[3];
  float backbone_bn_eps; /* backbone and FPN batch norms */
  float head_bn_eps;     /* box and mask head batch norms (v2) */

  int n_anchor_sizes, n_aspect_ratios; /* same for every level */
  float anchor_sizes[MRCNN_FPN_LEVELS][MRCNN_MAX_ANCHOR_SHAPES];
  float aspect_ratios[MRCNN_MAX_ANCHOR_SHAPES]; /* height / width */

  int rpn_pre_nms_top_n, rpn_post_nms_top_n;
  float rpn_nms_thresh, rpn_score_thresh, rpn_min_size;

  float box_score_thresh, box_nms_thresh;
  int box_detections_per_img;
  float box_coder_weights[4]; /* wx, wy, ww, wh */
  float bbox_xform_clip;
  float box_min_size;

  int box_roi_size, mask_roi_size, sampling_ratio;
  float mask_threshold;

  /* matterport only */
  MrcnnResizeMode resize_mode;
  double min_scale;               /* IMAGE_MIN_SCALE, 0: none */
  double mean_pixel[3];           /* MEAN_PIXEL, float64 as NumPy uses it */
  float rpn_bbox_std[4], bbox_std[4]; /* dy, dx, dh, dw */
} MrcnnConfig;

struct _MrcnnModel {
  char *path;
  MrcnnConfig config;

  MrcnnConv stem;
  int n_blocks[4];
  MrcnnBottleneck *blocks[4];
  int stage_channels[4];

  int fpn_channels;
  MrcnnConv fpn_inner[4], fpn_layer[4];

  /* RPN head: 3x3 conv + ReLU layers (torchvision v2: 2, else 1), then
   * the objectness and box-delta convolutions */
  int num_anchors; /* per location */
  int n_rpn_convs;
  MrcnnConv rpn_convs[MRCNN_MAX_RPN_CONVS];
  MrcnnConv rpn_cls, rpn_bbox;

  /* Box head: 3x3 conv + ReLU layers on each pooled ROI (torchvision v2:
   * 4, else none), then fully connected layers + ReLU (v1 and matterport:
   * fc6, fc7; v2: one) over the flattened [C][P][P] features */
  int n_box_convs;
  MrcnnConv box_convs[MRCNN_MAX_BOX_CONVS];
  int n_box_fcs;
  MrcnnLinear box_fcs[MRCNN_MAX_BOX_FCS];
  MrcnnLinear cls_score, bbox_pred;
  int num_classes;

  int n_mask_layers;
  MrcnnConv mask_layers[MRCNN_MAX_MASK_LAYERS];
  MrcnnDeconv mask_deconv;
  MrcnnConv mask_logits;

  char **class_names; /* num_classes entries */
};

void mrcnn_config_init_torchvision (MrcnnConfig *config);

/* COCO's names where the model has COCO's class count for its variant,
 * else "class_<i>" (and the variant's background name). */
void mrcnn_model_default_class_names (MrcnnModel *model);

/* Sets an MRCNN_ERROR error "<path>: <message>" of the given code and
 * returns FALSE: how every reader of a file reports what is wrong with it. */
gboolean mrcnn_path_error (GError **error, int code, const char *path,
    const char *format, ...) G_GNUC_PRINTF (4, 5);
/* What the loaders report for missing, misshapen or inconsistent weights. */
#define mrcnn_model_error(error, path, ...) \
  mrcnn_path_error (error, MRCNN_ERROR_MODEL, path, __VA_ARGS__)
/* Calls func on every weight and bias array of the network, named by where
 * it sits ("backbone stage 2 block 1 conv2 weight"), in network order. */
typedef void (*MrcnnWeightsFunc) (const char *name, float *values, size_t n,
    gpointer user_data);
void mrcnn_model_foreach_weights (MrcnnModel *model, MrcnnWeightsFunc func,
    gpointer user_data);
/* matterport's Config with the COCO inference values (MODEL_SPEC A.1). */
void mrcnn_config_init_matterport (MrcnnConfig *config);
/* Sets the Config attributes a sidecar holds (key -> JsonNode); errors name
 * config_path and the key.  NUM_CLASSES and CLASS_NAMES are left to the
 * loader, which checks them against the weights. */
gboolean mrcnn_config_apply_matterport (MrcnnConfig *config,
    GHashTable *sidecar, const char *config_path, GError **error);

/* Larger tensor dimensions are refused: no layer of a real model comes
 * near, and every size then fits an int. */
#define MRCNN_MAX_DIM_SIZE (1 << 24)

/* A model's weights in float32 are refused beyond this many values
 * (1 GiB; matterport's COCO model has 64 M): a small hostile file (a
 * compressed HDF5 dataset) cannot make the loader exhaust memory. */
#define MRCNN_MAX_MODEL_WEIGHTS ((gint64) 1 << 28)

/* Where weights come from: the file at path, or (bytes set) that content
 * in memory, path then only naming it in errors. */
typedef struct {
  const char *path;
  GBytes *bytes;
} MrcnnSource;

/* Loader for torchvision state_dicts (torchvision_loader.c).  sidecar
 * (key -> JsonNode, may be NULL) overrides the file's __metadata__. */
MrcnnModel *mrcnn_model_load_torchvision (const MrcnnSource *source,
    GHashTable *sidecar, const char *config_path, GError **error);
/* Loader for matterport Keras HDF5 weights (matterport_loader.c); sidecar
 * holds matterport Config attributes. */
MrcnnModel *mrcnn_model_load_matterport (const MrcnnSource *source,
    GHashTable *sidecar, const char *config_path, GError **error);

/* mrcnn_model_load_with_config over content in memory: weights (a
 * .safetensors or HDF5 file's bytes, told apart by content) named `name`
 * in errors, and the text of a sidecar (NULL: none) named config_name. */
MrcnnModel *mrcnn_model_load_bytes (GBytes *weights, const char *name,
    const char *config_text, const char *config_name, GError **error);

G_END_DECLS

#endif
