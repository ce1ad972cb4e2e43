/* Convolutions on the device: cuDNN, NHWC, weights in the activation type
 * with batch norm already folded in (by the loaders, in fp32), the
 * algorithm chosen (and tried) once when the layer is uploaded. */
#ifndef MRCNN_CUDA_CONV_H
#define MRCNN_CUDA_CONV_H

/* What follows the convolution, fixed per layer (cuDNN's fused call is
 * tried at creation for this very epilogue). */
typedef enum {
  CUDA_CONV_BIAS,           /* conv(x) + bias */
  CUDA_CONV_BIAS_RELU,      /* relu(conv(x) + bias) */
  CUDA_CONV_BIAS_ADD_RELU,  /* relu(conv(x) + bias + residual) */
} CudaConvEpilogue;

/* The input shapes a layer keeps described: a stream's frames share one
 * size, but the RPN head runs on every FPN level of a frame, and a batch
 * and a lone frame (or a smaller last group) alternate. */
#define CUDA_CONV_SHAPES (2 * MRCNN_FPN_LEVELS)

/* One input shape, its descriptors set (and its workspace checked) the
 * first time the layer runs on it. */
typedef struct {
  int n, h, w;              /* n 0: not described yet */
  cudnnTensorDescriptor_t x_desc, y_desc;
} CudaConvShape;

typedef struct {
  int in_channels;  /* as stored on the device (zero-padded for the stem) */
  int out_channels, kernel, stride, pad;
  CudaConvEpilogue epilogue;
  void *weight;     /* [out][kernel][kernel][in], activation type */
  void *bias;       /* [out], activation type */
  cudnnFilterDescriptor_t weight_desc;
  cudnnTensorDescriptor_t bias_desc;
  cudnnConvolutionDescriptor_t desc;
  cudnnActivationDescriptor_t act_desc; /* ReLU, or identity for BIAS */
  cudnnConvolutionFwdAlgo_t algo;
  /* cudnnConvolutionBiasActivationForward runs for algo and the epilogue;
   * otherwise the convolution, then our own epilogue kernel */
  gboolean fused;
  CudaConvShape shapes[CUDA_CONV_SHAPES];
  int next_shape;   /* the slot a new shape takes once all are in use */
} CudaConv;

/* Uploads src (input channels zero-padded to in_channels >= src's), creates
 * its descriptors and picks its algorithm for inputs of 1 to max_n images of
 * max_h x max_w or max_w x max_h: the first of cuDNN's heuristics' choices
 * whose workspace for each fits the limit and that runs on max_n and on one
 * (each is tried on s->conv_trial), then whether the fused call runs with it
 * on both.  Refuses a layer whose tensors would pass cuDNN's 2^31
 * values.  Grows s->conv_workspace to what the tried algorithms need.  name
 * names the layer in errors. */
gboolean cuda_conv_init (CudaState *s, CudaConv *conv, const MrcnnConv *src,
    const char *name, int in_channels, CudaConvEpilogue epilogue, int max_n,
    int max_h, int max_w, GError **error);
void cuda_conv_clear (CudaConv *conv);

/* y = the layer's epilogue of conv(x) over n NHWC images of h x w;
 * residual has y's shape, given exactly for CUDA_CONV_BIAS_ADD_RELU.
 * Queues on s->stream and allocates nothing; fails with an error (never
 * overruns) when this shape would need more workspace than
 * s->conv_workspace_size. */
gboolean cuda_conv_forward (CudaState *s, CudaConv *conv, const void *x,
    int n, int h, int w, void *y, const void *residual, GError **error);

static inline int
cuda_conv_out_size (int in, const CudaConv *conv)
{
  return (in + 2 * conv->pad - conv->kernel) / conv->stride + 1;
}

/* Copies n floats of host memory to a new device buffer in the activation
 * type (rounded to nearest for fp16); waits for the copy, so for creation
 * time only. */
gboolean cuda_upload_act (CudaState *s, void **dst, const float *src,
    size_t n, const char *what, GError **error);

/* Device NHWC activations (h x w x c, activation type) to device NCHW
 * float, for inspection: the first k planes of dst are channels 0..k-1
 * (s->input's 3 colour channels come first). */
gboolean cuda_nhwc_to_nchw_float (CudaState *s, const void *src, int h,
    int w, int c, float *dst, GError **error);

#endif
