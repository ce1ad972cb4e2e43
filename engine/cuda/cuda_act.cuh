/* Activations are float (fp32 engines) or __half (fp16): loads and stores
 * that read and write either as float, for kernels templated on the type. */
#ifndef MRCNN_CUDA_ACT_CUH
#define MRCNN_CUDA_ACT_CUH

#include <cuda_fp16.h>
#include <stddef.h>

static __device__ __forceinline__ float
act_load (const float *p, size_t i)
{
  return p[i];
}

static __device__ __forceinline__ float
act_load (const __half *p, size_t i)
{
  return __half2float (p[i]);
}

static __device__ __forceinline__ void
act_store (float *p, size_t i, float v)
{
  p[i] = v;
}

static __device__ __forceinline__ void
act_store (__half *p, size_t i, float v)
{
  p[i] = __float2half_rn (v);
}

#endif
