/* Convolutions on the device: cuDNN, NHWC, weights in the activation type
 * with batch norm already folded in (by the loaders, in fp32), the
 * algorithm chosen once when the layer is uploaded. */
#ifndef MRCNN_CUDA_CONV_H
#define MRCNN_CUDA_CONV_H

typedef struct {
  int in_channels;  /* as stored on the device (zero-padded for the stem) */
  int out_channels, kernel, stride, pad;
  void *weight;     /* [out][kernel][kernel][in], activation type */
  void *bias;       /* [out], activation type */
  cudnnFilterDescriptor_t weight_desc;
  cudnnTensorDescriptor_t bias_desc;
  cudnnConvolutionDescriptor_t desc;
  cudnnConvolutionFwdAlgo_t algo;
  /* cuDNN has no fused bias-ReLU kernel for algo: ReLU as its own call */
  gboolean unfused_relu;
  /* set on each call from the input shape (no allocation) */
  cudnnTensorDescriptor_t x_desc, y_desc;
} CudaConv;

/* Uploads src (input channels zero-padded to in_channels >= src's),
 * creates its descriptors and picks its algorithm (cuDNN's heuristics, the
 * first that works within the workspace limit) for inputs of up to max_n
 * images of max_h x max_w or max_w x max_h; raises s->conv_workspace_size
 * to what the algorithm needs for either. */
gboolean cuda_conv_init (CudaState *s, CudaConv *conv, const MrcnnConv *src,
    int in_channels, int max_n, int max_h, int max_w, GError **error);
void cuda_conv_clear (CudaConv *conv);

/* y = [relu](conv(x) + bias [+ residual]) over n NHWC images of h x w;
 * residual has y's shape, or is NULL.  Queues on s->stream and allocates
 * nothing; fails with an error (never overruns) when this shape would need
 * more workspace than s->conv_workspace_size. */
gboolean cuda_conv_forward (CudaState *s, CudaConv *conv, const void *x,
    int n, int h, int w, void *y, const void *residual, gboolean relu,
    GError **error);

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
