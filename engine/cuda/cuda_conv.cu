/* Convolutions through cuDNN's legacy API: NHWC tensors and filters in the
 * activation type, fp32 on FMA kernels only (no TF32), fp16 on tensor cores
 * with fp32 accumulation (cuDNN's PSEUDO_HALF_CONFIG, whose bias is half
 * like the data).
 *
 * The algorithm comes from cuDNN's heuristics
 * (cudnnGetConvolutionForwardAlgorithm_v7) rather than from timing
 * (cudnnFindConvolutionForwardAlgorithmEx): the choice is the same on every
 * run of a given GPU and cuDNN, so results are reproducible from one engine
 * to the next, and creating an engine does not run hundreds of timed
 * convolutions.  The heuristics can offer algorithms that then refuse to
 * run, so each candidate is run once (untimed) on the layer's largest
 * input, for a batch of max_n frames and for one, before it is kept, and
 * so is the fused bias-activation call with the one kept: no frame meets
 * a refusal found at creation.  (Batches of sizes between 1 and max_n
 * have their workspace checked at creation, not a trial run.) */
#include "cuda_backend.h"
#include "cuda_act.cuh"

#include <limits.h>
#include <string.h>

/* The most workspace one convolution's algorithm may ask for: the
 * workspace is shared by every convolution, and a heuristic's first choice
 * (FFT, Winograd) can ask for gigabytes. */
#define CONV_MAX_WORKSPACE ((size_t) 256 << 20)

/* the alignment of each buffer in s->conv_trial: cudaMalloc's */
#define TRIAL_ALIGN ((size_t) 256)

#define THREADS 256

/* Here rather than in cuda_backend.c: nvcc lists its -gencode targets in
 * __CUDA_ARCH_LIST__ (ascending, e.g. 750,800,900), a C compiler has no
 * such list. */
int
cuda_oldest_compute_capability (void)
{
  static const int archs[] = { __CUDA_ARCH_LIST__ };
  return archs[0] / 10;
}

/* cuDNN 9 says why it does not support a call in sub-codes of the
 * category (CUDNN_STATUS_NOT_SUPPORTED_SHAPE, _LAYOUT, ...) */
static gboolean
not_supported (cudnnStatus_t status)
{
  return CUDNN_STATUS_CATEGORY (status) == CUDNN_STATUS_NOT_SUPPORTED;
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

/* Grows a creation-time device buffer to at least bytes; what it held is
 * lost. */
static gboolean
grow (void **buffer, size_t *size, size_t bytes, const char *what,
    GError **error)
{
  if (bytes <= *size)
    return TRUE;
  cudaFree (*buffer);
  *size = 0;
  if (!cuda_alloc (buffer, bytes, what, error))
    return FALSE;
  *size = bytes;
  return TRUE;
}

/* shape's x_desc and y_desc for n NHWC images of h x w (its n, h, w
 * untouched: creation borrows shapes[0]'s descriptors and leaves the slot
 * free). */
static gboolean
describe (CudaState *s, CudaConv *conv, CudaConvShape *shape, int n, int h,
    int w, GError **error)
{
  return cudnn_check (cudnnSetTensor4dDescriptor (shape->x_desc,
          CUDNN_TENSOR_NHWC, s->act_cudnn, n, conv->in_channels, h, w),
      "describing a convolution's input", error)
      && cudnn_check (cudnnSetTensor4dDescriptor (shape->y_desc,
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
  CudaConvShape *shape = &conv->shapes[0];
  return describe (s, conv, shape, n, h, w, NULL)
      && cudnnGetConvolutionForwardWorkspaceSize (s->cudnn, shape->x_desc,
      conv->weight_desc, conv->desc, shape->y_desc, algo, bytes)
      == CUDNN_STATUS_SUCCESS;
}

static size_t
trial_aligned (size_t bytes)
{
  return (bytes + TRIAL_ALIGN - 1) / TRIAL_ALIGN * TRIAL_ALIGN;
}

/* Runs the layer once with conv->algo, fused or the convolution alone, on
 * n images of h x w and of w x h held in s->conv_trial (whatever values
 * they have).  *refusal is cuDNN's "not supported" status when it refuses
 * either, CUDNN_STATUS_SUCCESS when both run; any other failure is an
 * error naming the layer. */
static gboolean
try_run (CudaState *s, CudaConv *conv, const char *name, gboolean fused,
    int n, int h, int w, cudnnStatus_t *refusal, GError **error)
{
  CudaConvShape *shape = &conv->shapes[0];
  /* x, y and, as in the layer's own calls, a residual z apart from y or
   * none (alpha2 zero, z then y) */
  gboolean residual = conv->epilogue == CUDA_CONV_BIAS_ADD_RELU;
  size_t x_bytes = trial_aligned ((size_t) n * h * w * conv->in_channels
      * s->act_size);
  size_t y_bytes = trial_aligned ((size_t) n * cuda_conv_out_size (h, conv)
      * cuda_conv_out_size (w, conv) * conv->out_channels * s->act_size);
  if (!grow (&s->conv_trial, &s->conv_trial_size,
          x_bytes + (residual ? 2 : 1) * y_bytes,
          "the buffer convolutions are tried on", error))
    return FALSE;
  const void *x = s->conv_trial;
  void *y = (char *) s->conv_trial + x_bytes;
  const void *z = residual ? (char *) y + y_bytes : y;
  const float one = 1.0f, zero = 0.0f;
  const float *alpha2 = residual ? &one : &zero;
  char *what = g_strdup_printf ("%s: trying cuDNN's convolution algorithm "
      "%d%s", name, (int) conv->algo,
      fused ? " fused with the bias and activation" : "");
  gboolean ok = TRUE;
  *refusal = CUDNN_STATUS_SUCCESS;
  for (int turn = 0; ok && turn < (h == w ? 1 : 2); turn++) {
    int th = turn ? w : h, tw = turn ? h : w;
    if (!describe (s, conv, shape, n, th, tw, error)) {
      ok = FALSE;
      break;
    }
    cudnnStatus_t status = fused
        ? cudnnConvolutionBiasActivationForward (s->cudnn, &one,
        shape->x_desc, x, conv->weight_desc, conv->weight, conv->desc,
        conv->algo, s->conv_workspace, s->conv_workspace_size, alpha2,
        shape->y_desc, z, conv->bias_desc, conv->bias, conv->act_desc,
        shape->y_desc, y)
        : cudnnConvolutionForward (s->cudnn, &one, shape->x_desc, x,
        conv->weight_desc, conv->weight, conv->desc, conv->algo,
        s->conv_workspace, s->conv_workspace_size, &zero, shape->y_desc, y);
    if (not_supported (status)) {
      *refusal = status;
      break;
    }
    ok = cudnn_check (status, what, error);
  }
  /* creation time: wait, so that a kernel failing on the GPU is reported
   * with its layer */
  ok = ok && cuda_check (cudaStreamSynchronize (s->stream), what, error);
  g_free (what);
  return ok;
}

/* The most workspace algo needs for 1 to max_n images of max_h x max_w or
 * max_w x max_h; FALSE when it does not support one of them. */
static gboolean
workspace_for_batches (CudaState *s, CudaConv *conv,
    cudnnConvolutionFwdAlgo_t algo, int max_n, int max_h, int max_w,
    size_t *most)
{
  *most = 0;
  for (int n = 1; n <= max_n; n++)
    for (int turn = 0; turn < 2; turn++) {
      size_t bytes = 0;
      if (!workspace_for (s, conv, algo, n, turn ? max_w : max_h,
              turn ? max_h : max_w, &bytes))
        return FALSE;
      *most = MAX (*most, bytes);
    }
  return TRUE;
}

/* try_run on max_n images and, where max_n > 1, on one: a batch and a
 * lone frame (mrcnn_engine_detect) run the layer with the same algorithm
 * and epilogue. */
static gboolean
try_batch_and_one (CudaState *s, CudaConv *conv, const char *name,
    gboolean fused, int max_n, int h, int w, cudnnStatus_t *refusal,
    GError **error)
{
  return try_run (s, conv, name, fused, max_n, h, w, refusal, error)
      && (max_n == 1 || *refusal != CUDNN_STATUS_SUCCESS
      || try_run (s, conv, name, fused, 1, h, w, refusal, error));
}

/* The first of the heuristics' algorithms, best first, that supports batches
 * of 1 to max_n inputs of max_h x max_w and of max_w x max_h (either
 * orientation of an image) within CONV_MAX_WORKSPACE and runs on max_n and on
 * one; grows s->conv_workspace to the need of each one tried (one refused
 * leaves it so grown: rare, and within CONV_MAX_WORKSPACE). */
static gboolean
choose_algorithm (CudaState *s, CudaConv *conv, const char *name,
    int max_n, int max_h, int max_w, GError **error)
{
  int max_count = 0, returned = 0;
  if (!cudnn_check (cudnnGetConvolutionForwardAlgorithmMaxCount (s->cudnn,
              &max_count), "cudnnGetConvolutionForwardAlgorithmMaxCount",
          error)
      || !describe (s, conv, &conv->shapes[0], max_n, max_h, max_w, error))
    return FALSE;
  cudnnConvolutionFwdAlgoPerf_t *perf =
      g_new0 (cudnnConvolutionFwdAlgoPerf_t, MAX (max_count, 1));
  gboolean ok = cudnn_check (cudnnGetConvolutionForwardAlgorithm_v7 (s->cudnn,
          conv->shapes[0].x_desc, conv->weight_desc, conv->desc,
          conv->shapes[0].y_desc, max_count, &returned, perf),
      "cudnnGetConvolutionForwardAlgorithm_v7", error);
  gboolean found = FALSE;
  cudnnStatus_t refusal = CUDNN_STATUS_SUCCESS;
  for (int i = 0; ok && !found && i < returned; i++) {
    size_t need = 0;
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
    if (!workspace_for_batches (s, conv, perf[i].algo, max_n, max_h, max_w,
            &need) || need > CONV_MAX_WORKSPACE)
      continue;
    conv->algo = perf[i].algo;
    ok = grow (&s->conv_workspace, &s->conv_workspace_size, need,
        "the convolution workspace", error)
        && try_batch_and_one (s, conv, name, FALSE, max_n, max_h, max_w,
        &refusal, error);
    found = ok && refusal == CUDNN_STATUS_SUCCESS;
  }
  g_free (perf);
  if (ok && !found)
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
        "%s: cuDNN has no algorithm that runs a %dx%d convolution of %d to "
        "%d channels on %dx%d inputs, %d and 1 at a time, within %zu MiB of "
        "workspace%s%s", name, conv->kernel, conv->kernel, conv->in_channels,
        conv->out_channels, max_w, max_h, max_n, CONV_MAX_WORKSPACE >> 20,
        refusal == CUDNN_STATUS_SUCCESS ? "" : "; the last one tried: ",
        refusal == CUDNN_STATUS_SUCCESS ? "" : cudnnGetErrorString (refusal));
  return ok && found;
}

/* Whether cuDNN's fused call runs with the layer's algorithm and epilogue
 * (into conv->fused); cuDNN takes the identity activation only with
 * IMPLICIT_PRECOMP_GEMM. */
static gboolean
choose_fused (CudaState *s, CudaConv *conv, const char *name, int max_n,
    int max_h, int max_w, GError **error)
{
  cudnnStatus_t refusal = CUDNN_STATUS_NOT_SUPPORTED;
  if ((conv->epilogue != CUDA_CONV_BIAS
          || conv->algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM)
      && !try_batch_and_one (s, conv, name, TRUE, max_n, max_h, max_w,
          &refusal, error))
    return FALSE;
  conv->fused = refusal == CUDNN_STATUS_SUCCESS;
  return TRUE;
}

gboolean
cuda_conv_init (CudaState *s, CudaConv *conv, const MrcnnConv *src,
    const char *name, int in_channels, CudaConvEpilogue epilogue, int max_n,
    int max_h, int max_w, GError **error)
{
  memset (conv, 0, sizeof *conv);
  g_assert (in_channels >= src->in_channels);
  int O = src->out_channels, C = src->in_channels, k = src->kernel;
  conv->in_channels = in_channels;
  conv->out_channels = O;
  conv->kernel = k;
  conv->stride = src->stride;
  conv->pad = src->pad;
  conv->epilogue = epilogue;

  /* cuDNN's tensors index their values with 32-bit integers */
  size_t values = MAX ((size_t) max_n * max_h * max_w * in_channels,
      (size_t) max_n * cuda_conv_out_size (max_h, conv)
      * cuda_conv_out_size (max_w, conv) * O);
  if (values > INT_MAX) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_UNSUPPORTED,
        "%s: %d frames of up to %dx%d make a tensor of %zu values, more "
        "than cuDNN's limit of 2^31 - 1; lower the batch size or the model's "
        "input size", name, max_n, max_w, max_h, values);
    return FALSE;
  }

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
          "convolution biases", error))
    return FALSE;

  ok = cudnn_check (cudnnCreateFilterDescriptor (&conv->weight_desc),
      "cudnnCreateFilterDescriptor", error)
      && cudnn_check (cudnnSetFilter4dDescriptor (conv->weight_desc,
          s->act_cudnn, CUDNN_TENSOR_NHWC, O, in_channels, k, k),
      "describing convolution weights", error)
      && cudnn_check (cudnnCreateTensorDescriptor (&conv->bias_desc),
      "cudnnCreateTensorDescriptor", error)
      && cudnn_check (cudnnSetTensor4dDescriptor (conv->bias_desc,
          CUDNN_TENSOR_NHWC, s->act_cudnn, 1, O, 1, 1),
      "describing convolution biases", error)
      && cudnn_check (cudnnCreateActivationDescriptor (&conv->act_desc),
      "cudnnCreateActivationDescriptor", error)
      && cudnn_check (cudnnSetActivationDescriptor (conv->act_desc,
          epilogue == CUDA_CONV_BIAS ? CUDNN_ACTIVATION_IDENTITY
          : CUDNN_ACTIVATION_RELU, CUDNN_NOT_PROPAGATE_NAN, 0.0),
      "describing a convolution's activation", error)
      && cudnn_check (cudnnCreateConvolutionDescriptor (&conv->desc),
      "cudnnCreateConvolutionDescriptor", error)
      /* fp32 and fp16 both accumulate in fp32 */
      && cudnn_check (cudnnSetConvolution2dDescriptor (conv->desc, conv->pad,
          conv->pad, conv->stride, conv->stride, 1, 1,
          CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
      "describing a convolution", error)
      && cudnn_check (cudnnSetConvolutionMathType (conv->desc,
          s->half ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH),
      "cudnnSetConvolutionMathType", error);
  for (int i = 0; ok && i < CUDA_CONV_SHAPES; i++)
    ok = cudnn_check (cudnnCreateTensorDescriptor (&conv->shapes[i].x_desc),
        "cudnnCreateTensorDescriptor", error)
        && cudnn_check (cudnnCreateTensorDescriptor (&conv->shapes[i].y_desc),
        "cudnnCreateTensorDescriptor", error);
  return ok && choose_algorithm (s, conv, name, max_n, max_h, max_w, error)
      && choose_fused (s, conv, name, max_n, max_h, max_w, error);
}

void
cuda_conv_clear (CudaConv *conv)
{
  if (conv->weight_desc)
    cudnnDestroyFilterDescriptor (conv->weight_desc);
  if (conv->bias_desc)
    cudnnDestroyTensorDescriptor (conv->bias_desc);
  if (conv->act_desc)
    cudnnDestroyActivationDescriptor (conv->act_desc);
  if (conv->desc)
    cudnnDestroyConvolutionDescriptor (conv->desc);
  for (int i = 0; i < CUDA_CONV_SHAPES; i++) {
    if (conv->shapes[i].x_desc)
      cudnnDestroyTensorDescriptor (conv->shapes[i].x_desc);
    if (conv->shapes[i].y_desc)
      cudnnDestroyTensorDescriptor (conv->shapes[i].y_desc);
  }
  cudaFree (conv->weight);
  cudaFree (conv->bias);
  memset (conv, 0, sizeof *conv);
}

/* The slot describing n images of h x w: described, and the workspace it
 * needs checked, only when the layer meets a shape it does not hold. */
static CudaConvShape *
shape_for (CudaState *s, CudaConv *conv, int n, int h, int w, GError **error)
{
  for (int i = 0; i < CUDA_CONV_SHAPES; i++) {
    CudaConvShape *shape = &conv->shapes[i];
    if (shape->n == n && shape->h == h && shape->w == w)
      return shape;
  }
  CudaConvShape *shape = &conv->shapes[conv->next_shape];
  conv->next_shape = (conv->next_shape + 1) % CUDA_CONV_SHAPES;
  shape->n = 0;
  size_t need = 0;
  if (!describe (s, conv, shape, n, h, w, error)
      || !cudnn_check (cudnnGetConvolutionForwardWorkspaceSize (s->cudnn,
              shape->x_desc, conv->weight_desc, conv->desc, shape->y_desc,
              conv->algo, &need), "cudnnGetConvolutionForwardWorkspaceSize",
          error))
    return NULL;
  if (need > s->conv_workspace_size) {
    g_set_error (error, MRCNN_ERROR, MRCNN_ERROR_BACKEND,
        "a %dx%d convolution of %d to %d channels on %d input%s of %dx%d "
        "needs %zu bytes of cuDNN workspace, more than the %zu reserved "
        "for the largest input", conv->kernel, conv->kernel,
        conv->in_channels, conv->out_channels, n, n == 1 ? "" : "s", w, h,
        need, s->conv_workspace_size);
    return NULL;
  }
  shape->n = n;
  shape->h = h;
  shape->w = w;
  return shape;
}

/* y = [relu](y + bias [+ residual]) over total NHWC values of c channels,
 * as the CPU backend adds them: the epilogue where cuDNN's fused call does
 * not run (one pass, where cudnnAddTensor is slow on NHWC). */
template <typename T>
static __global__ void
epilogue_kernel (T *y, const T *bias, const T *residual, size_t total,
    int c, bool relu)
{
  for (size_t i = (size_t) blockIdx.x * blockDim.x + threadIdx.x; i < total;
      i += (size_t) gridDim.x * blockDim.x) {
    float v = act_load (y, i) + act_load (bias, i % c);
    if (residual)
      v += act_load (residual, i);
    if (relu)
      v = fmaxf (v, 0.0f);
    act_store (y, i, v);
  }
}

static gboolean
run_epilogue (CudaState *s, CudaConv *conv, void *y, const void *residual,
    size_t total, GError **error)
{
  unsigned int blocks = (unsigned int) CLAMP ((total + THREADS - 1) / THREADS,
      1, (size_t) 1 << 20);
  bool relu = conv->epilogue != CUDA_CONV_BIAS;
  if (s->half)
    epilogue_kernel<<<blocks, THREADS, 0, s->stream>>> ((__half *) y,
        (const __half *) conv->bias, (const __half *) residual, total,
        conv->out_channels, relu);
  else
    epilogue_kernel<<<blocks, THREADS, 0, s->stream>>> ((float *) y,
        (const float *) conv->bias, (const float *) residual, total,
        conv->out_channels, relu);
  return CUDA_CHECK_LAUNCH ("a convolution's bias and activation", error);
}

gboolean
cuda_conv_forward (CudaState *s, CudaConv *conv, const void *x, int n,
    int h, int w, void *y, const void *residual, GError **error)
{
  g_assert ((residual != NULL)
      == (conv->epilogue == CUDA_CONV_BIAS_ADD_RELU));
  CudaConvShape *shape = shape_for (s, conv, n, h, w, error);
  if (!shape)
    return FALSE;
  /* scaling factors are float for half and float data alike */
  const float one = 1.0f, zero = 0.0f;
  if (conv->fused) {
    /* y = act(conv(x) + residual + bias); without a residual alpha2 is
     * zero and z is y, only there to satisfy the API */
    cudnnStatus_t status = cudnnConvolutionBiasActivationForward (s->cudnn,
        &one, shape->x_desc, x, conv->weight_desc, conv->weight, conv->desc,
        conv->algo, s->conv_workspace, s->conv_workspace_size,
        residual ? &one : &zero, shape->y_desc, residual ? residual : y,
        conv->bias_desc, conv->bias, conv->act_desc, shape->y_desc, y);
    if (!not_supported (status))
      return cudnn_check (status, "cudnnConvolutionBiasActivationForward",
          error);
    /* tried at creation on the largest input only: a fused kernel that
     * does not cover this shape leaves the layer unfused from now on */
    conv->fused = FALSE;
  }
  size_t total = (size_t) n * cuda_conv_out_size (h, conv)
      * cuda_conv_out_size (w, conv) * conv->out_channels;
  return cudnn_check (cudnnConvolutionForward (s->cudnn, &one, shape->x_desc,
          x, conv->weight_desc, conv->weight, conv->desc, conv->algo,
          s->conv_workspace, s->conv_workspace_size, &zero, shape->y_desc,
          y), "cudnnConvolutionForward", error)
      && run_epilogue (s, conv, y, residual, total, error);
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
    dst[i] = act_load (src, p * c + ci);
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
