/*
 * gx_cuda_ops_dense.h — the dense ops (matrix products, convolutions,
 * norms) on device tensors (kernels/cuda/gx_cuda_ops_dense.c). Reached
 * through the public ops of gx_matmul.h, gx_conv.h and gx_norm.h, whose
 * entries dispatch here (GX_CUDA_DISPATCH) when an input lives on the
 * device; same arguments, shapes, options and tape names as those ops.
 * Only in f32 builds with CUDA (GX_CUDA_ON).
 */
#ifndef GX_CUDA_OPS_DENSE_H
#define GX_CUDA_OPS_DENSE_H

#include "gx.h"

#ifdef __cplusplus
extern "C" {
#endif

/* gx_matmul.h */
gx_tensor *gx_cuda_linear(gx_ctx *ctx, gx_tensor *x, gx_tensor *w, gx_tensor *b);
gx_tensor *gx_cuda_matmul(gx_ctx *ctx, gx_tensor *a, gx_tensor *b);
gx_tensor *gx_cuda_gram(gx_ctx *ctx, gx_tensor *a, gx_tensor *b);
gx_tensor *gx_cuda_pairwise_sqdist(gx_ctx *ctx, gx_tensor *a, gx_tensor *b);

/* gx_conv.h */
gx_tensor *gx_cuda_conv2d(gx_ctx *ctx, gx_tensor *x, gx_tensor *w, gx_tensor *b,
                          int stride, int padding, int groups);
gx_tensor *gx_cuda_upconv2x3(gx_ctx *ctx, gx_tensor *x, gx_tensor *w, gx_tensor *b);
gx_tensor *gx_cuda_upconv2x3_leaky(gx_ctx *ctx, gx_tensor *x, gx_tensor *w, gx_tensor *b, double slope);
gx_tensor *gx_cuda_conv1d_causal_dw(gx_ctx *ctx, gx_tensor *x, gx_tensor *w, gx_tensor *b);

/* gx_norm.h (the bn-layer helpers call gx_batchnorm, so they need no
 * device op of their own) */
gx_tensor *gx_cuda_batchnorm(gx_ctx *ctx, gx_tensor *x, gx_tensor *gamma, gx_tensor *beta,
                             gx_tensor *running_mean, gx_tensor *running_var,
                             int training, double momentum, double eps);
gx_tensor *gx_cuda_layernorm(gx_ctx *ctx, gx_tensor *x, gx_tensor *gamma, gx_tensor *beta, double eps);

#ifdef __cplusplus
}
#endif
#endif
