/* CUDA backend: device selection, the engine's stream and library handles,
 * the stage table and inspection.  The stages themselves live one concern
 * per file: backbone.cu (preprocessing, ResNet-FPN), proposals.cu,
 * roi_heads.cu (ROIAlign, box head, detection), mask_head.cu (mask head,
 * paste, download). */
#include "cuda_backend.h"

#include <string.h>

gboolean
cuda_check (cudaError_t err, const char *what, GError **error)
{
  if (err == cudaSuccess)
    return TRUE;
  g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND, "%s: %s (%s)", what,
      cudaGetErrorString (err), cudaGetErrorName (err));
  return FALSE;
}

gboolean
cudnn_check (cudnnStatus_t status, const char *what, GError **error)
{
  if (status == CUDNN_STATUS_SUCCESS)
    return TRUE;
  g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND, "%s: cuDNN: %s", what,
      cudnnGetErrorString (status));
  return FALSE;
}

gboolean
cublas_check (cublasStatus_t status, const char *what, GError **error)
{
  if (status == CUBLAS_STATUS_SUCCESS)
    return TRUE;
  g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND, "%s: cuBLAS: %s",
      what, cublasGetStatusString (status));
  return FALSE;
}

gboolean
cuda_alloc (void **ptr, size_t bytes, const char *what, GError **error)
{
  *ptr = NULL;
  cudaError_t err = cudaMalloc (ptr, MAX (bytes, 1));
  if (err == cudaSuccess)
    return TRUE;
  *ptr = NULL;
  cudaGetLastError (); /* clear it: an allocation failure is not sticky */
  size_t free_bytes = 0, total = 0;
  cudaMemGetInfo (&free_bytes, &total);
  g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
      "out of GPU memory: %s needs %zu MiB, %zu of %zu MiB are free (%s); "
      "use a smaller model or input size, or free the GPU", what,
      bytes >> 20, free_bytes >> 20, total >> 20, cudaGetErrorString (err));
  return FALSE;
}

int
mrcnn_cuda_device_count (void)
{
  int n = 0;
  if (cudaGetDeviceCount (&n) != cudaSuccess) {
    cudaGetLastError ();
    return 0;
  }
  return n;
}

gboolean
mrcnn_cuda_device_usable (int device_id, GError **error)
{
  int n = 0;
  cudaError_t err = cudaGetDeviceCount (&n);
  if (err != cudaSuccess) {
    cudaGetLastError ();
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
        "no usable CUDA GPU (%s: is an NVIDIA GPU present and its driver "
        "installed?)", cudaGetErrorString (err));
    return FALSE;
  }
  if (device_id < 0 || device_id >= n) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
        "CUDA device %d does not exist (%d device%s found, numbered from 0)",
        device_id, n, n == 1 ? "" : "s");
    return FALSE;
  }
  /* the binary holds kernels for its gpu_architectures only (SASS for
   * each, PTX for the newest): none runs on an older GPU */
  struct cudaDeviceProp prop;
  err = cudaGetDeviceProperties (&prop, device_id);
  if (err != cudaSuccess) {
    cudaGetLastError ();
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
        "reading CUDA device %d's properties: %s", device_id,
        cudaGetErrorString (err));
    return FALSE;
  }
  int oldest = cuda_oldest_compute_capability ();
  if (prop.major * 10 + prop.minor < oldest) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
        "CUDA device %d (%s) has compute capability %d.%d; this build's "
        "CUDA kernels need %d.%d or newer", device_id, prop.name, prop.major,
        prop.minor, oldest / 10, oldest % 10);
    return FALSE;
  }
  return TRUE;
}

static void cuda_destroy (gpointer state);

/* The largest tensor inspect() hands out, in floats: the network input
 * (all its channels pass through the staging buffer), P2 (the largest
 * level, a quarter of the input on each side), anchors, proposals,
 * detections or masks. */
static size_t
inspect_size (const CudaState *s)
{
  const MrcnnModel *m = s->model;
  int P2 = 2 * m->config.mask_roi_size;
  size_t n = (size_t) s->input_channels * s->max_padded_area;
  for (int l = 0; l < MRCNN_FPN_LEVELS; l++)
    n = MAX (n, s->backbone.fpn_size[l]);
  n = MAX (n, (size_t) 4 * s->rpn.n_anchors);
  n = MAX (n, (size_t) 4 * s->max_proposals);
  n = MAX (n, (size_t) 6 * MRCNN_MAX_DETECTIONS);
  n = MAX (n, (size_t) MRCNN_MAX_DETECTIONS * P2 * P2);
  return n;
}

static gpointer
cuda_create (const MrcnnModel *m, const MrcnnOptions *options,
    GError **error)
{
  if (!mrcnn_cuda_device_usable (options->device_id, error))
    return NULL;
  CudaState *s = g_new0 (CudaState, 1);
  s->model = m;
  s->device = options->device_id;
  s->half = options->precision == MRCNN_PRECISION_FP16;
  s->act_size = s->half ? 2 : 4;
  s->act_cudnn = s->half ? CUDNN_DATA_HALF : CUDNN_DATA_FLOAT;
  s->act_cuda = s->half ? CUDA_R_16F : CUDA_R_32F;
  s->max_batch = CLAMP (options->max_batch, 1, MRCNN_MAX_BATCH);
  s->max_padded_area = mrcnn_geometry_max_padded_area (&m->config,
      &s->max_padded_h, &s->max_padded_w);
  s->max_proposals = m->config.rpn_post_nms_top_n;

  struct cudaDeviceProp prop;
  if (!cuda_check (cudaSetDevice (s->device), "selecting the CUDA device",
          error)
      || !cuda_check (cudaGetDeviceProperties (&prop, s->device),
          "reading the CUDA device's properties", error))
    goto fail;
  s->sm_count = prop.multiProcessorCount;
  /* what the engine holds is what creating it took from the free memory
   * (buffers, cuDNN and cuBLAS handles), the context being made already */
  size_t free_before = 0, free_after = 0, total = 0;
  if (!cuda_check (cudaFree (NULL), "initialising the CUDA context", error)
      || !cuda_check (cudaMemGetInfo (&free_before, &total),
          "reading the GPU's free memory", error))
    goto fail;
  if (s->half && prop.major < 7) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_UNSUPPORTED,
        "fp16 needs a GPU of compute capability 7.0 or newer; %s is %d.%d: "
        "use precision fp32", prop.name, prop.major, prop.minor);
    goto fail;
  }

  if (options->cuda_stream)
    s->stream = (cudaStream_t) options->cuda_stream;
  else if (cuda_check (cudaStreamCreateWithFlags (&s->stream,
              cudaStreamNonBlocking), "creating a CUDA stream", error))
    s->own_stream = TRUE;
  else
    goto fail;
  if (!cudnn_check (cudnnCreate (&s->cudnn), "creating the cuDNN handle",
          error)
      || !cudnn_check (cudnnSetStream (s->cudnn, s->stream),
          "setting the cuDNN stream", error)
      || !cublas_check (cublasCreate (&s->cublas),
          "creating the cuBLAS handle", error)
      || !cublas_check (cublasSetStream (s->cublas, s->stream),
          "setting the cuBLAS stream", error)
      /* fp32 stays fp32: no TF32 behind the caller's back */
      || !cublas_check (cublasSetMathMode (s->cublas,
              s->half ? CUBLAS_DEFAULT_MATH : CUBLAS_PEDANTIC_MATH),
          "setting the cuBLAS math mode", error))
    goto fail;
  /* a workspace of cuBLAS's recommended size (32 MiB from Hopper on, 4 MiB
   * before), given after cublasSetStream, which resets it: otherwise cuBLAS
   * takes one from its pool at the first GEMM, inside a detection */
  size_t cublas_workspace_size = (size_t) (prop.major >= 9 ? 32 : 4) << 20;
  if (!cuda_alloc (&s->cublas_workspace, cublas_workspace_size,
          "the cuBLAS workspace", error)
      || !cublas_check (cublasSetWorkspace (s->cublas, s->cublas_workspace,
              cublas_workspace_size), "setting the cuBLAS workspace", error))
    goto fail;

  /* creating the convolutions grows s->conv_workspace to the most any
   * needs, and s->conv_trial, which goes once every layer is made */
  if (!cuda_backbone_create (s, error)
      || !cuda_proposals_create (s, error)
      || !cuda_roi_heads_create (s, error)
      || !cuda_mask_head_create (s, error))
    goto fail;
  cudaFree (s->conv_trial);
  s->conv_trial = NULL;
  s->conv_trial_size = 0;

  /* only dumps inspect (engine.c): without a dump directory the staging
   * buffers would hold tens of MiB of GPU memory for nothing */
  if (options->dump_dir) {
    s->inspect_capacity = inspect_size (s);
    if (!cuda_alloc ((void **) &s->inspect_device,
            s->inspect_capacity * sizeof (float), "the inspection buffer",
            error))
      goto fail;
    s->inspect_host = g_try_new (float, s->inspect_capacity);
    if (!s->inspect_host) {
      g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
          "out of memory: the inspection buffer needs %zu MiB",
          s->inspect_capacity * sizeof (float) >> 20);
      goto fail;
    }
  }
  if (!cuda_check (cudaMemGetInfo (&free_after, &total),
          "reading the GPU's free memory", error))
    goto fail;
  s->device_bytes = free_before > free_after ? free_before - free_after : 0;
  return s;

fail:
  cuda_destroy (s);
  return NULL;
}

static void
cuda_destroy (gpointer state)
{
  CudaState *s = state;
  if (!s)
    return;
  cudaSetDevice (s->device);
  if (s->stream)
    cudaStreamSynchronize (s->stream);
  cuda_mask_head_destroy (s);
  cuda_roi_heads_destroy (s);
  cuda_proposals_destroy (s);
  cuda_backbone_destroy (s);
  cudaFree (s->conv_workspace);
  cudaFree (s->conv_trial);
  cudaFree (s->cublas_workspace);
  cudaFree (s->inspect_device);
  g_free (s->inspect_host);
  if (s->cublas)
    cublasDestroy (s->cublas);
  if (s->cudnn)
    cudnnDestroy (s->cudnn);
  if (s->own_stream)
    cudaStreamDestroy (s->stream);
  g_free (s);
}

static gboolean
stage_preprocess_slot (gpointer state, int slot, const MrcnnImage *image,
    const MrcnnGeometry *geometry, GError **error)
{
  CudaState *s = state;
  /* the current device is per host thread, and a pipeline's streaming
   * thread is not the one that created the engine */
  return cuda_check (cudaSetDevice (s->device), "selecting the CUDA device",
      error) && cuda_preprocess (s, slot, image, geometry, error);
}

static gboolean
stage_preprocess (gpointer state, const MrcnnImage *image,
    const MrcnnGeometry *geometry, GError **error)
{
  return stage_preprocess_slot (state, 0, image, geometry, error);
}

/* A batch's RPN head runs with its backbone, so that its convolutions too
 * take every frame in one launch. */
static gboolean
stage_backbone_batch (gpointer state, int n, GError **error)
{
  CudaState *s = state;
  s->rpn_head_frames = 0;
  return cuda_backbone_run (s, n, error) && cuda_rpn_head_run (s, n, error);
}

/* A lone frame's head runs in the proposals stage, as the stage times
 * (MrcnnOptions.time_stages) count it. */
static gboolean
stage_backbone (gpointer state, GError **error)
{
  CudaState *s = state;
  s->rpn_head_frames = 0;
  if (!cuda_backbone_run (s, 1, error))
    return FALSE;
  cuda_select_slot (s, 0);
  return TRUE;
}

static void
stage_select_slot (gpointer state, int slot)
{
  cuda_select_slot (state, slot);
}

static int
cuda_batch_slots (gpointer state)
{
  return ((CudaState *) state)->max_batch;
}

static gboolean
stage_proposals (gpointer state, GError **error)
{
  return cuda_proposals_run (state, error);
}

static gboolean
stage_detect (gpointer state, const MrcnnThresholds *t, GError **error)
{
  CudaState *s = state;
  s->thresholds = *t;
  return cuda_detect_run (s, error);
}

static gboolean
stage_masks (gpointer state, GError **error)
{
  return cuda_masks_run (state, error);
}

static gboolean
stage_paste (gpointer state, const MrcnnThresholds *t, MrcnnResult *result,
    GError **error)
{
  CudaState *s = state;
  s->thresholds = *t;
  return cuda_paste_run (s, result, error);
}

/* Copies count floats of device memory into the host staging buffer;
 * inspection runs after the frame, off the per-frame path, so it may wait. */
static gboolean
download (CudaState *s, const float *src, size_t count)
{
  if (count > s->inspect_capacity)
    return FALSE;
  return cudaMemcpyAsync (s->inspect_host, src, count * sizeof (float),
      cudaMemcpyDeviceToHost, s->stream) == cudaSuccess
      && cudaStreamSynchronize (s->stream) == cudaSuccess;
}

static gboolean
download_count (CudaState *s, const int *src, int *count)
{
  return cudaMemcpyAsync (count, src, sizeof (int), cudaMemcpyDeviceToHost,
      s->stream) == cudaSuccess
      && cudaStreamSynchronize (s->stream) == cudaSuccess;
}

/* An NHWC activation as the CPU backend's [C][H][W] float. */
static gboolean
inspect_activation (CudaState *s, const void *src, int h, int w, int c,
    int keep_c, MrcnnHostTensor *out)
{
  if ((size_t) h * w * c > s->inspect_capacity
      || !cuda_nhwc_to_nchw_float (s, src, h, w, c, s->inspect_device, NULL)
      || !download (s, s->inspect_device, (size_t) h * w * keep_c))
    return FALSE;
  *out = (MrcnnHostTensor) { s->inspect_host, 3, { keep_c, h, w } };
  return TRUE;
}

static gboolean
cuda_inspect (gpointer state, const char *name, MrcnnHostTensor *out)
{
  CudaState *s = state;
  const MrcnnModel *m = s->model;
  const MrcnnGeometry *g = &s->geometry;
  int P2 = 2 * m->config.mask_roi_size;
  static const char *const fpn_names[MRCNN_FPN_LEVELS] = { "fpn_0", "fpn_1",
    "fpn_2", "fpn_3", "fpn_pool" };
  memset (out, 0, sizeof *out);
  if (!s->inspect_host || cudaSetDevice (s->device) != cudaSuccess)
    return FALSE;

  if (strcmp (name, "input") == 0)
    return inspect_activation (s, s->input, g->padded_height,
        g->padded_width, s->input_channels, 3, out);
  for (int l = 0; l < MRCNN_FPN_LEVELS; l++)
    if (strcmp (name, fpn_names[l]) == 0)
      return inspect_activation (s, s->fpn[l], s->fpn_h[l], s->fpn_w[l],
          m->fpn_channels, m->fpn_channels, out);
  if (strcmp (name, "anchors") == 0) {
    if (!s->rpn.anchors || !download (s, s->rpn.anchors,
            (size_t) 4 * s->rpn.n_anchors))
      return FALSE;
    *out = (MrcnnHostTensor) { s->inspect_host, 2, { s->rpn.n_anchors, 4 } };
    return TRUE;
  }
  if (strcmp (name, "proposals") == 0) {
    int n;
    if (!download_count (s, s->n_proposals, &n)
        || !download (s, s->proposals, (size_t) 4 * n))
      return FALSE;
    *out = (MrcnnHostTensor) { s->inspect_host, 2, { n, 4 } };
    return TRUE;
  }
  if (strcmp (name, "detections") == 0) {
    int n;
    if (!download_count (s, s->n_detections, &n)
        || (size_t) 6 * n > s->inspect_capacity)
      return FALSE;
    /* boxes, scores and labels side by side, as the CPU backend's rows */
    float *boxes = g_new (float, 4 * (size_t) n + 1);
    float *scores = g_new (float, (size_t) n + 1);
    int *labels = g_new (int, (size_t) n + 1);
    gboolean ok = cudaMemcpyAsync (boxes, s->det_boxes, 4 * n * sizeof (float),
        cudaMemcpyDeviceToHost, s->stream) == cudaSuccess
        && cudaMemcpyAsync (scores, s->det_scores, n * sizeof (float),
        cudaMemcpyDeviceToHost, s->stream) == cudaSuccess
        && cudaMemcpyAsync (labels, s->det_labels, n * sizeof (int),
        cudaMemcpyDeviceToHost, s->stream) == cudaSuccess
        && cudaStreamSynchronize (s->stream) == cudaSuccess;
    for (int d = 0; ok && d < n; d++) {
      float *row = s->inspect_host + 6 * d;
      memcpy (row, boxes + 4 * d, 4 * sizeof (float));
      row[4] = scores[d];
      row[5] = (float) labels[d];
    }
    g_free (boxes);
    g_free (scores);
    g_free (labels);
    *out = (MrcnnHostTensor) { s->inspect_host, 2, { n, 6 } };
    return ok;
  }
  if (strcmp (name, "mask_probs") == 0) {
    int n;
    if (!download_count (s, s->n_detections, &n)
        || !download (s, s->mask_probs, (size_t) n * P2 * P2))
      return FALSE;
    *out = (MrcnnHostTensor) { s->inspect_host, 3, { n, P2, P2 } };
    return TRUE;
  }
  return FALSE;
}

static gboolean
cuda_synchronize (gpointer state, GError **error)
{
  CudaState *s = state;
  return cuda_check (cudaStreamSynchronize (s->stream),
      "waiting for the GPU", error);
}

static size_t
cuda_device_memory (gpointer state)
{
  return ((CudaState *) state)->device_bytes;
}

const MrcnnBackend mrcnn_backend_cuda = {
  .name = "cuda",
  .create = cuda_create,
  .destroy = cuda_destroy,
  .preprocess = stage_preprocess,
  .backbone = stage_backbone,
  .proposals = stage_proposals,
  .detect = stage_detect,
  .masks = stage_masks,
  .paste = stage_paste,
  .batch_slots = cuda_batch_slots,
  .preprocess_slot = stage_preprocess_slot,
  .backbone_batch = stage_backbone_batch,
  .select_slot = stage_select_slot,
  .inspect = cuda_inspect,
  .synchronize = cuda_synchronize,
  .device_memory = cuda_device_memory,
};
