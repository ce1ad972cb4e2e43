/* Preprocessing (both variants) and the ResNet-FPN backbone on the device. */
#ifndef MRCNN_CUDA_BACKBONE_H
#define MRCNN_CUDA_BACKBONE_H

/* One ResNet bottleneck (downsample zeroed when the block has none). */
typedef struct {
  CudaConv conv1, conv2, conv3, downsample;
  gboolean has_downsample;
} CudaBottleneck;

typedef struct {
  CudaConv stem;
  int n_blocks[4];
  CudaBottleneck *blocks[4];
  CudaConv fpn_inner[4], fpn_layer[4];

  /* activations, act type: four buffers of the largest backbone/FPN
   * activation (as the CPU backend's scratch) and C2..C5 */
  void *scratch[4];
  void *stage_out[4];
  int stage_h[4], stage_w[4];
  size_t fpn_size[MRCNN_FPN_LEVELS]; /* values each s->fpn[l] holds */

  /* preprocessing */
  float *lut;               /* [3][256]: 8-bit value -> value, per channel */
  uint8_t *image_host;      /* pinned: the image's RGB rows, packed */
  uint8_t *image_device;
  size_t image_capacity;    /* bytes of each */
  int *tap_i0, *tap_i1;     /* resize taps, rows then columns */
  float *tap_lambda;        /* torchvision: weight of i1 */
  double *tap_w0, *tap_w1;  /* matterport: skimage weights of i0, i0 + 1 */
  unsigned int *range;      /* matterport: 255 - min and max of the bytes */
} CudaBackbone;

/* Uploads the backbone's and FPN's convolutions, allocates s->input,
 * s->fpn[] and the preprocessing buffers; sets s->input_channels. */
gboolean cuda_backbone_create (CudaState *s, GError **error);
void cuda_backbone_destroy (CudaState *s);

/* Uploads the 8-bit image through a pinned buffer and writes s->input for
 * s->geometry.  The image buffers grow only when an image larger than any
 * before arrives (a stream's frames share one size). */
gboolean cuda_preprocess (CudaState *s, const MrcnnImage *image,
    GError **error);
/* P2..P6 into s->fpn[], s->fpn_h[], s->fpn_w[]. */
gboolean cuda_backbone_run (CudaState *s, GError **error);

#endif
