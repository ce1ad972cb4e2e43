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

  /* activations, act type, for max_batch frames: four buffers of the
   * largest backbone/FPN activation (as the CPU backend's scratch) and
   * C2..C5 */
  void *scratch[4];
  void *stage_out[4];
  int stage_h[4], stage_w[4];
  size_t fpn_size[MRCNN_FPN_LEVELS]; /* values each s->fpn[l] holds */

  /* preprocessing */
  float *lut;               /* [3][256]: 8-bit value -> value, per channel */
  /* per slot, so that a frame's upload is not overwritten by the next
   * frame's before the backbone ran: pinned, the image's RGB rows,
   * packed; its device copy; bytes of each */
  uint8_t *image_host[MRCNN_MAX_BATCH];
  uint8_t *image_device[MRCNN_MAX_BATCH];
  size_t image_capacity[MRCNN_MAX_BATCH];
  int *tap_i0, *tap_i1;     /* resize taps, rows then columns */
  float *tap_lambda;        /* torchvision: weight of i1 */
  double *tap_w0, *tap_w1;  /* matterport: skimage weights of i0, i0 + 1 */
  unsigned int *range;      /* matterport: 255 - min and max of the bytes */
} CudaBackbone;

/* Uploads the backbone's and FPN's convolutions, allocates s->inputs,
 * s->fpn_slots[] and the preprocessing buffers for s->max_batch frames;
 * sets s->input_channels. */
gboolean cuda_backbone_create (CudaState *s, GError **error);
void cuda_backbone_destroy (CudaState *s);

/* Uploads the 8-bit image through the slot's pinned buffer and writes the
 * slot's network input for geometry (kept in s->slot_geometry).  A slot's
 * image buffers grow only when an image larger than any before arrives (a
 * stream's frames share one size). */
gboolean cuda_preprocess (CudaState *s, int slot, const MrcnnImage *image,
    const MrcnnGeometry *geometry, GError **error);
/* P2..P6 of slots 0..n-1 (frames of one padded size) into s->fpn_slots[],
 * s->fpn_h[], s->fpn_w[]. */
gboolean cuda_backbone_run (CudaState *s, int n, GError **error);
/* Makes slot the frame the later stages run on: s->geometry, s->input and
 * s->fpn[] (after cuda_backbone_run). */
void cuda_select_slot (CudaState *s, int slot);

#endif
