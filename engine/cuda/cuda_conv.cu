/* Convolutions through cuDNN's legacy API: NHWC tensors and filters in the
 * activation type, fp32 on FMA kernels only (no TF32), fp16 on tensor cores
 * with fp32 accumulation (cuDNN's PSEUDO_HALF_CONFIG, whose bias is half
 * like the data).
 *
 * The algorithm comes from cuDNN's heuristics
 * (cudnnGetConvolutionForwardAlgorithm_v7) rather than from timing
 * (cudnnFindConvolutionForwardAlgorithmEx): the choice is the same on every
 * run of a given GPU and cuDNN, so results are reproducible from one engine
 * to the next, it needs no buffers of the largest shape at creation (the
 * shared workspace is allocated only once every layer has said what it
 * needs), and creating an engine does not run hundreds of timed
 * convolutions. */
#include "cuda_backend.h"

#include <string.h>

/* The most workspace one convolution's algorithm may ask for: the
 * workspace is shared by every convolution, and a heuristic's first choice
 * (FFT, Winograd) can ask for gigabytes. */
#define CONV_MAX_WORKSPACE ((size_t) 256 << 20)

#define THREADS 256

/* cuDNN's ReLU, a host-side description that is the same for every engine:
 * made once for the process (CudaConv has no member to hold one). */
static cudnnActivationDescriptor_t relu_desc;
static gsize relu_made;         /* cudnnStatus_t + 1 once attempted */

static gboolean
relu_init (GError **error)
{
  if (g_once_init_enter (&relu_made)) {
    cudnnActivationDescriptor_t desc = NULL;
    cudnnStatus_t status = cudnnCreateActivationDescriptor (&desc);
    if (status == CUDNN_STATUS_SUCCESS)
      status = cudnnSetActivationDescriptor (desc, CUDNN_ACTIVATION_RELU,
          CUDNN_NOT_PROPAGATE_NAN, 0.0);
    if (status == CUDNN_STATUS_SUCCESS)
      relu_desc = desc;
    else if (desc)
      cudnnDestroyActivationDescriptor (desc);
    g_once_init_leave (&relu_made, (gsize) status + 1);
  }
  return cudnn_check ((cudnnStatus_t) (relu_made - 1),
      "creating cuDNN's ReLU descriptor", error);
}

gboolean
cuda_upload_act (CudaState *s, void **dst, const float *src, size_t n,
    const char *what, GError **error)
{
  size_t bytes = n * s->act_size;
  if (!cuda_alloc (dst, bytes, what, error))
    return FALSE;
  const void *host = src;
  __half *converted = NULL;
  if (s->half) {
    converted = g_new (__half, MAX (n, 1));
    for (size_t i = 0; i < n; i++)
      converted[i] = __float2half_rn (src[i]);
    host = converted;
  }
  /* creation time: wait for the copy, so the host buffer can go */
  gboolean ok = cuda_check (cudaMemcpyAsync (*dst, host, bytes,
          cudaMemcpyHostToDevice, s->stream), "copying weights to the GPU",
      error)
      && cuda_check (cudaStreamSynchronize (s->stream),
      "copying weights to the GPU", error);
  g_free (converted);
  return ok;
}

/* x_desc and y_desc for n NHWC images of h x w. */
static gboolean
set_shape (CudaState *s, CudaConv *conv, int n, int h, int w, GError **error)
{
  return cudnn_check (cudnnSetTensor4dDescriptor (conv->x_desc,
          CUDNN_TENSOR_NHWC, s->act_cudnn, n, conv->in_channels, h, w),
      "describing a convolution's input", error)
      && cudnn_check (cudnnSetTensor4dDescriptor (conv->y_desc,
          CUDNN_TENSOR_NHWC, s->act_cudnn, n, conv->out_channels,
          cuda_conv_out_size (h, conv), cuda_conv_out_size (w, conv)),
      "describing a convolution's output", error);
}

/* The workspace algo needs for n images of h x w; FALSE when it does not
 * support that shape. */
static gboolean
workspace_for (CudaState *s, CudaConv *conv, cudnnConvolutionFwdAlgo_t algo,
    int n, int h, int w, size_t *bytes)
{
  return set_shape (s, conv, n, h, w, NULL)
      && cudnnGetConvolutionForwardWorkspaceSize (s->cudnn, conv->x_desc,
      conv->weight_desc, conv->desc, conv->y_desc, algo, bytes)
      == CUDNN_STATUS_SUCCESS;
}

/* The first of the heuristics' algorithms, best first, that supports inputs
 * of max_h x max_w and of max_w x max_h (either orientation of an image)
 * within CONV_MAX_WORKSPACE; raises s->conv_workspace_size to its need. */
static gboolean
choose_algorithm (CudaState *s, CudaConv *conv, int max_n, int max_h,
    int max_w, GError **error)
{
  int max_count = 0, returned = 0;
  if (!cudnn_check (cudnnGetConvolutionForwardAlgorithmMaxCount (s->cudnn,
              &max_count), "cudnnGetConvolutionForwardAlgorithmMaxCount",
          error)
      || !set_shape (s, conv, max_n, max_h, max_w, error))
    return FALSE;
  cudnnConvolutionFwdAlgoPerf_t *perf =
      g_new0 (cudnnConvolutionFwdAlgoPerf_t, MAX (max_count, 1));
  gboolean ok = cudnn_check (cudnnGetConvolutionForwardAlgorithm_v7 (s->cudnn,
          conv->x_desc, conv->weight_desc, conv->desc, conv->y_desc,
          max_count, &returned, perf),
      "cudnnGetConvolutionForwardAlgorithm_v7", error);
  gboolean found = FALSE;
  for (int i = 0; ok && !found && i < returned; i++) {
    size_t a = 0, b = 0;
    if (perf[i].status != CUDNN_STATUS_SUCCESS)
      continue;
    /* fp32 stays fp32: no tensor-core (TF32) kernel even if one is offered */
    if (!s->half && (perf[i].mathType == CUDNN_TENSOR_OP_MATH
            || perf[i].mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION))
      continue;
    /* cuDNN picks kernels (and sizes their workspace) by the algorithm and
     * the descriptor's math type together: fp16 takes the one the
     * heuristics paired with this algorithm, fp32 keeps FMA only */
    if (!cudnn_check (cudnnSetConvolutionMathType (conv->desc,
                s->half ? perf[i].mathType : CUDNN_FMA_MATH),
            "cudnnSetConvolutionMathType", error)) {
      ok = FALSE;
      break;
    }
    if (!workspace_for (s, conv, perf[i].algo, max_n, max_h, max_w, &a)
        || !workspace_for (s, conv, perf[i].algo, max_n, max_w, max_h, &b)
        || MAX (a, b) > CONV_MAX_WORKSPACE)
      continue;
    conv->algo = perf[i].algo;
    s->conv_workspace_size = MAX (s->conv_workspace_size, MAX (a, b));
    found = TRUE;
  }
  g_free (perf);
  if (ok && !found)
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
        "cuDNN has no algorithm for a %dx%d convolution of %d to %d "
        "channels on %dx%d inputs within %zu MiB of workspace",
        conv->kernel, conv->kernel, conv->in_channels, conv->out_channels,
        max_w, max_h, CONV_MAX_WORKSPACE >> 20);
  return ok && found;
}

gboolean
cuda_conv_init (CudaState *s, CudaConv *conv, const MrcnnConv *src,
    int in_channels, int max_n, int max_h, int max_w, GError **error)
{
  memset (conv, 0, sizeof *conv);
  g_assert (in_channels >= src->in_channels);
  int O = src->out_channels, C = src->in_channels, k = src->kernel;
  conv->in_channels = in_channels;
  conv->out_channels = O;
  conv->kernel = k;
  conv->stride = src->stride;
  conv->pad = src->pad;

  /* [out][in][k][k] float to [out][k][k][in_channels], the extra input
   * channels zero */
  size_t n = (size_t) O * k * k * in_channels;
  float *weight = g_new0 (float, MAX (n, 1));
  for (int o = 0; o < O; o++)
    for (int ci = 0; ci < C; ci++)
      for (int ky = 0; ky < k; ky++)
        for (int kx = 0; kx < k; kx++)
          weight[(((size_t) o * k + ky) * k + kx) * in_channels + ci] =
              src->weight[(((size_t) o * C + ci) * k + ky) * k + kx];
  gboolean ok = cuda_upload_act (s, &conv->weight, weight, n,
      "convolution weights", error);
  g_free (weight);
  if (!ok || !cuda_upload_act (s, &conv->bias, src->bias, O,
          "convolution biases", error) || !relu_init (error))
    return FALSE;

  return cudnn_check (cudnnCreateFilterDescriptor (&conv->weight_desc),
      "cudnnCreateFilterDescriptor", error)
      && cudnn_check (cudnnSetFilter4dDescriptor (conv->weight_desc,
          s->act_cudnn, CUDNN_TENSOR_NHWC, O, in_channels, k, k),
      "describing convolution weights", error)
      && cudnn_check (cudnnCreateTensorDescriptor (&conv->bias_desc),
      "cudnnCreateTensorDescriptor", error)
      && cudnn_check (cudnnSetTensor4dDescriptor (conv->bias_desc,
          CUDNN_TENSOR_NHWC, s->act_cudnn, 1, O, 1, 1),
      "describing convolution biases", error)
      && cudnn_check (cudnnCreateTensorDescriptor (&conv->x_desc),
      "cudnnCreateTensorDescriptor", error)
      && cudnn_check (cudnnCreateTensorDescriptor (&conv->y_desc),
      "cudnnCreateTensorDescriptor", error)
      && cudnn_check (cudnnCreateConvolutionDescriptor (&conv->desc),
      "cudnnCreateConvolutionDescriptor", error)
      /* fp32 and fp16 both accumulate in fp32 */
      && cudnn_check (cudnnSetConvolution2dDescriptor (conv->desc, conv->pad,
          conv->pad, conv->stride, conv->stride, 1, 1,
          CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
      "describing a convolution", error)
      && cudnn_check (cudnnSetConvolutionMathType (conv->desc,
          s->half ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH),
      "cudnnSetConvolutionMathType", error)
      && choose_algorithm (s, conv, max_n, max_h, max_w, error);
}

void
cuda_conv_clear (CudaConv *conv)
{
  if (conv->weight_desc)
    cudnnDestroyFilterDescriptor (conv->weight_desc);
  if (conv->bias_desc)
    cudnnDestroyTensorDescriptor (conv->bias_desc);
  if (conv->desc)
    cudnnDestroyConvolutionDescriptor (conv->desc);
  if (conv->x_desc)
    cudnnDestroyTensorDescriptor (conv->x_desc);
  if (conv->y_desc)
    cudnnDestroyTensorDescriptor (conv->y_desc);
  cudaFree (conv->weight);
  cudaFree (conv->bias);
  memset (conv, 0, sizeof *conv);
}

gboolean
cuda_conv_forward (CudaState *s, CudaConv *conv, const void *x, int n,
    int h, int w, void *y, const void *residual, gboolean relu,
    GError **error)
{
  size_t need = 0;
  if (!set_shape (s, conv, n, h, w, error)
      || !cudnn_check (cudnnGetConvolutionForwardWorkspaceSize (s->cudnn,
              conv->x_desc, conv->weight_desc, conv->desc, conv->y_desc,
              conv->algo, &need), "cudnnGetConvolutionForwardWorkspaceSize",
          error))
    return FALSE;
  if (need > s->conv_workspace_size) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
        "a %dx%d convolution of %d to %d channels on %d input%s of %dx%d "
        "needs %zu bytes of cuDNN workspace, more than the %zu reserved "
        "for the largest input", conv->kernel, conv->kernel,
        conv->in_channels, conv->out_channels, n, n == 1 ? "" : "s", w, h,
        need, s->conv_workspace_size);
    return FALSE;
  }
  /* scaling factors are float for half and float data alike */
  const float one = 1.0f, zero = 0.0f;
  if (relu && !conv->unfused_relu) {
    /* y = relu(conv(x) + residual + bias); without a residual alpha2 is
     * zero and z is y, only there to satisfy the API */
    cudnnStatus_t status = cudnnConvolutionBiasActivationForward (s->cudnn,
        &one, conv->x_desc, x, conv->weight_desc, conv->weight, conv->desc,
        conv->algo, s->conv_workspace, s->conv_workspace_size,
        residual ? &one : &zero, conv->y_desc, residual ? residual : y,
        conv->bias_desc, conv->bias, relu_desc, conv->y_desc, y);
    if (status != CUDNN_STATUS_NOT_SUPPORTED)
      return cudnn_check (status, "cudnnConvolutionBiasActivationForward",
          error);
    /* the heuristics chose the algorithm for the plain convolution, which
     * not every fused kernel covers: this layer runs unfused from now on */
    conv->unfused_relu = TRUE;
  }
  /* the fused call takes the identity activation only with
   * IMPLICIT_PRECOMP_GEMM: convolution, then bias (and residual, ReLU) */
  return cudnn_check (cudnnConvolutionForward (s->cudnn, &one, conv->x_desc,
          x, conv->weight_desc, conv->weight, conv->desc, conv->algo,
          s->conv_workspace, s->conv_workspace_size, &zero, conv->y_desc,
          y), "cudnnConvolutionForward", error)
      && cudnn_check (cudnnAddTensor (s->cudnn, &one, conv->bias_desc,
          conv->bias, &one, conv->y_desc, y), "adding a convolution's bias",
      error)
      && (!residual || cudnn_check (cudnnAddTensor (s->cudnn, &one,
              conv->y_desc, residual, &one, conv->y_desc, y),
          "adding a convolution's residual", error))
      /* in place, which cudnnActivationForward allows */
      && (!relu || cudnn_check (cudnnActivationForward (s->cudnn, relu_desc,
              &one, conv->y_desc, y, &zero, conv->y_desc, y),
          "a convolution's ReLU", error));
}

static __device__ __forceinline__ float
act_to_float (float v)
{
  return v;
}

static __device__ __forceinline__ float
act_to_float (__half v)
{
  return __half2float (v);
}

/* dst[c][y][x] = src[y][x][c]: one thread per output value (coalesced
 * writes; inspection only, off the per-frame path). */
template <typename T>
static __global__ void
nhwc_to_nchw_float_kernel (const T *src, size_t plane, int c, float *dst)
{
  size_t total = plane * c;
  for (size_t i = (size_t) blockIdx.x * blockDim.x + threadIdx.x; i < total;
      i += (size_t) gridDim.x * blockDim.x) {
    size_t ci = i / plane, p = i % plane;
    dst[i] = act_to_float (src[p * c + ci]);
  }
}

gboolean
cuda_nhwc_to_nchw_float (CudaState *s, const void *src, int h, int w, int c,
    float *dst, GError **error)
{
  size_t plane = (size_t) h * w, total = plane * c;
  unsigned int blocks = (unsigned int) CLAMP ((total + THREADS - 1) / THREADS,
      1, (size_t) 1 << 20);
  if (s->half)
    nhwc_to_nchw_float_kernel<<<blocks, THREADS, 0, s->stream>>> (
        (const __half *) src, plane, c, dst);
  else
    nhwc_to_nchw_float_kernel<<<blocks, THREADS, 0, s->stream>>> (
        (const float *) src, plane, c, dst);
  return CUDA_CHECK_LAUNCH ("converting an activation to NCHW", error);
}
