/* Mask ROIAlign and mask head on the detections, and the paste of each
 * mask at the original image's resolution, for both variants. */
#ifndef MRCNN_CUDA_MASK_HEAD_H
#define MRCNN_CUDA_MASK_HEAD_H

/* Defined in mask_head.cu: what the host reads back of a frame (count,
 * total mask pixels, each detection's box, score, label, mask rectangle
 * and offset in the packed masks), and where each mask lands (device
 * only). */
typedef struct _CudaPasteHeader CudaPasteHeader;
typedef struct _CudaPasteBox CudaPasteBox;

typedef struct {
  /* The head runs on chunks of at most `chunk` detections, as the CPU's
   * mask_chunk: every layer of a chunk is one launch, and the workspace
   * stays small whatever the max-detections threshold. */
  int chunk;
  int *chunk_counts;        /* [chunk index] valid rows of each chunk */
  int n_layers;
  CudaConv layers[MRCNN_MAX_MASK_LAYERS];
  int deconv_in, deconv_out;
  void *deconv_weight;      /* [out][2][2][in], activation type */
  float *deconv_bias;       /* [out] */
  float *logits_weight;     /* [class][deconv_out] */
  float *logits_bias;       /* [class] */
  void *features_a, *features_b; /* [chunk][P][P][C], activation type */
  float *deconv_gemm;       /* [chunk][P][P][out][2][2] */

  /* paste */
  CudaPasteBox *paste;      /* [MRCNN_MAX_DETECTIONS] */
  CudaPasteHeader *header;  /* device, and its pinned host copy */
  CudaPasteHeader *header_host;
  /* The frame's masks, packed in detection order: soft and binary, on the
   * device and pinned on the host.  Allocated in create for twice the
   * largest padded image's area, then grown (never shrunk) in
   * cuda_paste_run when a frame's masks need more: the total depends on
   * the detections (up to max-detections times the original image, which
   * has no bound), so only frames larger than any before allocate. */
  size_t mask_capacity;     /* pixels */
  float *masks;
  uint8_t *binary;
  float *masks_host;
  uint8_t *binary_host;
} CudaMaskHead;

/* Uploads the mask head, allocates its workspace, s->mask_probs and the
 * pinned download buffers. */
gboolean cuda_mask_head_create (CudaState *s, GError **error);
void cuda_mask_head_destroy (CudaState *s);
/* s->mask_probs from s->det_* and s->fpn[]. */
gboolean cuda_masks_run (CudaState *s, GError **error);
/* Boxes in original-image pixels and box-sized masks pasted on the device,
 * downloaded into result (the only host copy of the frame's results). */
gboolean cuda_paste_run (CudaState *s, MrcnnResult *result, GError **error);

#endif
