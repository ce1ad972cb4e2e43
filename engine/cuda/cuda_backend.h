/* CUDA backend: activations NHWC in fp16 or fp32 (the engine's precision),
 * convolutions through cuDNN, fully connected layers through cuBLAS, our
 * own kernels for everything else.  Everything on one stream, from the
 * upload of the 8-bit image to the download of the results.  The backbone,
 * FPN and RPN head take up to max_batch frames of one input size at once
 * (NHWC with N frames: one launch per layer), each preprocessed into its
 * slot; the stages after them run one frame at a time, on the slot
 * selected.  Counts that vary per image (proposals, detections) stay on
 * the device: the stages after them run on a fixed number of rows and
 * read the count, so no stage waits for the host.
 *
 * The stages share the buffers below (the "interface" of each stage, in the
 * same units and conventions as the CPU backend's, see cpu_backend.h);
 * each concern owns the rest of its workspace in its own struct.  Every
 * buffer is allocated in create(), none per frame.
 *
 * Included from C and from CUDA C++: entry points have C linkage. */
#ifndef MRCNN_CUDA_BACKEND_H
#define MRCNN_CUDA_BACKEND_H

#include "../backend.h"

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _CudaState CudaState;

#include "cuda_conv.h"
#include "backbone.h"
#include "proposals.h"
#include "roi_heads.h"
#include "mask_head.h"

struct _CudaState {
  const MrcnnModel *model;
  MrcnnGeometry geometry;   /* of the current image (the slot selected) */
  /* frames the backbone takes at once (MrcnnOptions.max_batch, at least
   * 1), each slot's geometry, and the slot selected */
  int max_batch;
  MrcnnGeometry slot_geometry[MRCNN_MAX_BATCH];
  int slot;
  /* frames whose RPN head outputs are current: the last batch's (its
   * backbone runs their heads too), 0 after a lone frame's backbone */
  int rpn_head_frames;
  MrcnnThresholds thresholds; /* of the current image */
  int device;
  int sm_count;
  size_t device_bytes;          /* device memory creating the engine took */

  /* fp16: activations, weights and GEMM inputs in half, accumulation and
   * everything after the heads (boxes, scores, masks) in float */
  gboolean half;
  size_t act_size;              /* bytes per activation value: 2 or 4 */
  cudnnDataType_t act_cudnn;    /* CUDNN_DATA_HALF or CUDNN_DATA_FLOAT */
  cudaDataType_t act_cuda;      /* CUDA_R_16F or CUDA_R_32F */

  cudaStream_t stream;
  gboolean own_stream;          /* FALSE: the caller's (MrcnnOptions) */
  cudnnHandle_t cudnn;
  cublasHandle_t cublas;
  /* shared by every convolution, grown at creation to the most demanding
   * algorithm tried */
  void *conv_workspace;
  size_t conv_workspace_size;
  /* creation only: the input and output each layer's algorithms are tried
   * on (cuda_conv_init), grown to the largest layer, freed once every
   * layer is made */
  void *conv_trial;
  size_t conv_trial_size;
  void *cublas_workspace; /* cuBLAS's own, so that no GEMM allocates */

  /* the largest padded input any image gives: each side at most
   * max_padded_h / max_padded_w, the area at most max_padded_area (either
   * orientation; mrcnn_geometry_max_padded_area) */
  int max_padded_h, max_padded_w;
  size_t max_padded_area;
  /* rows the heads run on: rpn_post_nms_top_n proposals, and at most
   * MRCNN_MAX_DETECTIONS detections (thresholds.max_detections used) */
  int max_proposals;

  /* ---- interface buffers (device unless named _host) ---- */
  /* preprocess -> backbone: [slot][padded_h][padded_w][input_channels],
   * act type, slots as one NHWC tensor of the frames' common size;
   * channels beyond 3 are zero (tensor-core friendly stem).  input: the
   * slot selected. */
  void *inputs;
  void *input;
  int input_channels;
  /* backbone -> proposals, heads: P2..P5 and the pooled P6,
   * [slot][h][w][fpn_channels], act type; fpn[]: the slot selected */
  void *fpn_slots[MRCNN_FPN_LEVELS];
  void *fpn[MRCNN_FPN_LEVELS];
  int fpn_h[MRCNN_FPN_LEVELS], fpn_w[MRCNN_FPN_LEVELS];
  /* proposals -> heads: [max_proposals][4] float, torchvision (x1, y1, x2,
   * y2) in resized-image pixels, matterport normalised (y1, x1, y2, x2),
   * rows past the count zero; the count is device memory */
  float *proposals;
  int *n_proposals;
  /* heads -> masks, paste: [MRCNN_MAX_DETECTIONS] rows sorted by score,
   * boxes as the CPU backend's det_boxes (torchvision: resized pixels,
   * matterport: normalised y1, x1, y2, x2); count in device memory */
  float *det_boxes;
  float *det_scores;
  int *det_labels;
  int *n_detections;
  /* masks -> paste: [MRCNN_MAX_DETECTIONS][2P][2P] float probabilities of
   * each detection's own class (P = mask_roi_size) */
  float *mask_probs;

  /* staging for inspect(): the largest tensor it returns, as float on the
   * device (layout conversion) and on the host */
  float *inspect_device;
  float *inspect_host;
  size_t inspect_capacity;

  CudaBackbone backbone;
  CudaProposals rpn;
  CudaRoiHeads heads;
  CudaMaskHead masks;
};

/* Sets a MRCNN_ERROR_BACKEND error naming the failed call and CUDA's reason;
 * returns FALSE when err is not cudaSuccess. */
gboolean cuda_check (cudaError_t err, const char *what, GError **error);
gboolean cudnn_check (cudnnStatus_t status, const char *what, GError **error);
gboolean cublas_check (cublasStatus_t status, const char *what,
    GError **error);
/* cudaMalloc with the error the user sees when the GPU is out of memory:
 * names the buffer and its size. */
gboolean cuda_alloc (void **ptr, size_t bytes, const char *what,
    GError **error);

/* The oldest compute capability this build has device code for, as
 * major * 10 + minor: the oldest of meson's gpu_architectures. */
int cuda_oldest_compute_capability (void);

/* Reports a launch error of the kernels just queued (cudaGetLastError). */
#define CUDA_CHECK_LAUNCH(what, error) \
  cuda_check (cudaGetLastError (), what, error)

#ifdef __cplusplus
}
#endif

#endif
