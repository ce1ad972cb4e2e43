/* Models of a standard shape with random weights, for benchmarks: the
 * arithmetic cost of a network does not depend on its weights. */
#include "model.h"

#include <math.h>
#include <string.h>

typedef struct {
  GRand *rand;
} Filler;

/* He-style uniform weights keep activations finite through 100 layers. */
static float *
random_weights (Filler *f, size_t n, int fan_in)
{
  float *w = g_new (float, n);
  double bound = sqrt (6.0 / MAX (fan_in, 1)) * 0.5;
  for (size_t i = 0; i < n; i++)
    w[i] = (float) g_rand_double_range (f->rand, -bound, bound);
  return w;
}

static float *
random_bias (Filler *f, int n)
{
  float *b = g_new (float, n);
  for (int i = 0; i < n; i++)
    b[i] = (float) g_rand_double_range (f->rand, -0.05, 0.05);
  return b;
}

static void
make_conv (Filler *f, MrcnnConv *c, int in, int out, int kernel, int stride,
    int pad)
{
  int fan_in = in * kernel * kernel;
  *c = (MrcnnConv) { in, out, kernel, stride, pad,
    random_weights (f, (size_t) out * fan_in, fan_in), random_bias (f, out) };
}

static void
make_linear (Filler *f, MrcnnLinear *fc, int in, int out)
{
  *fc = (MrcnnLinear) { in, out, random_weights (f, (size_t) out * in, in),
    random_bias (f, out) };
}

MrcnnModel *
mrcnn_model_new_random (const char *shape, guint32 seed, GError **error)
{
  gboolean matterport, v2 = FALSE;
  int depth_layer3;
  if (g_strcmp0 (shape, "torchvision-r50") == 0
      || g_strcmp0 (shape, "torchvision-r50-v2") == 0) {
    matterport = FALSE;
    v2 = g_strcmp0 (shape, "torchvision-r50-v2") == 0;
    depth_layer3 = 6;
  } else if (g_strcmp0 (shape, "matterport-r101") == 0) {
    matterport = TRUE;
    depth_layer3 = 23;
  } else {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_INVALID_ARGUMENT,
        "unknown model shape \"%s\": use torchvision-r50 (maskrcnn_resnet50_fpn, "
        "91 classes), torchvision-r50-v2 (maskrcnn_resnet50_fpn_v2) or "
        "matterport-r101 (mask_rcnn_coco.h5, 81 classes)",
        shape ? shape : "");
    return NULL;
  }

  Filler f = { g_rand_new_with_seed (seed) };
  MrcnnModel *m = g_new0 (MrcnnModel, 1);
  m->path = g_strdup_printf ("random %s (seed %u)", shape, seed);
  if (matterport)
    mrcnn_config_init_matterport (&m->config);
  else
    mrcnn_config_init_torchvision (&m->config);

  make_conv (&f, &m->stem, 3, 64, 7, 2, 3);
  const int depth[4] = { 3, 4, depth_layer3, 3 };
  int in = 64;
  for (int L = 0; L < 4; L++) {
    int width = 64 << L, out = 4 * width, stride = L > 0 ? 2 : 1;
    m->n_blocks[L] = depth[L];
    m->blocks[L] = g_new0 (MrcnnBottleneck, depth[L]);
    for (int i = 0; i < depth[L]; i++) {
      MrcnnBottleneck *b = &m->blocks[L][i];
      int s = i == 0 ? stride : 1;
      /* the stride sits in the 3x3 in torchvision, in the first 1x1 in
       * matterport's Keras ResNet */
      make_conv (&f, &b->conv1, in, width, 1, matterport ? s : 1, 0);
      make_conv (&f, &b->conv2, width, width, 3, matterport ? 1 : s, 1);
      make_conv (&f, &b->conv3, width, out, 1, 1, 0);
      if (i == 0) {
        b->has_downsample = TRUE;
        make_conv (&f, &b->downsample, in, out, 1, s, 0);
      }
      in = out;
    }
    m->stage_channels[L] = out;
  }

  m->fpn_channels = 256;
  for (int L = 0; L < 4; L++) {
    make_conv (&f, &m->fpn_inner[L], m->stage_channels[L], 256, 1, 1, 0);
    make_conv (&f, &m->fpn_layer[L], 256, 256, 3, 1, 1);
  }
  int A = m->config.n_anchor_sizes * m->config.n_aspect_ratios;
  m->num_anchors = A;
  int rpn_channels = matterport ? 512 : 256;
  m->n_rpn_convs = v2 ? 2 : 1;
  for (int j = 0; j < m->n_rpn_convs; j++)
    make_conv (&f, &m->rpn_convs[j], 256, rpn_channels, 3, 1, 1);
  make_conv (&f, &m->rpn_cls, rpn_channels, matterport ? 2 * A : A, 1, 1, 0);
  make_conv (&f, &m->rpn_bbox, rpn_channels, 4 * A, 1, 1, 0);

  int K = matterport ? 81 : 91, P = m->config.box_roi_size;
  int hidden = 1024;
  m->num_classes = K;
  /* v2: FastRCNNConvFCHead, four 3x3 convs and one fully connected layer;
   * else TwoMLPHead */
  m->n_box_convs = v2 ? 4 : 0;
  for (int j = 0; j < m->n_box_convs; j++)
    make_conv (&f, &m->box_convs[j], 256, 256, 3, 1, 1);
  m->n_box_fcs = v2 ? 1 : 2;
  for (int j = 0; j < m->n_box_fcs; j++)
    make_linear (&f, &m->box_fcs[j], j ? hidden : 256 * P * P, hidden);
  make_linear (&f, &m->cls_score, hidden, K);
  make_linear (&f, &m->bbox_pred, hidden, 4 * K);

  m->n_mask_layers = 4;
  for (int j = 0; j < 4; j++)
    make_conv (&f, &m->mask_layers[j], 256, 256, 3, 1, 1);
  m->mask_deconv = (MrcnnDeconv) { 256, 256,
    random_weights (&f, (size_t) 256 * 4 * 256, 256), random_bias (&f, 256) };
  make_conv (&f, &m->mask_logits, 256, K, 1, 1, 0);

  mrcnn_model_default_class_names (m);
  g_rand_free (f.rand);
  return m;
}
