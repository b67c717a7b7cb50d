/*
 * gx_cuda_ops_elem.h — the device ops of kernels/gx_elem.c and
 * kernels/gx_reduce.c (kernels/cuda/gx_cuda_ops_elem.c): the same signatures
 * and tape names as the CPU ops, reached through GX_CUDA_DISPATCH when an
 * input lives on the device. Included by those two files only in an f32
 * CUDA build (GX_CUDA_ON).
 */
#ifndef GX_CUDA_OPS_ELEM_H
#define GX_CUDA_OPS_ELEM_H

#include "gx_cuda.h"

/* The gx_cu_unary value of each GX_UNARY_OP name of gx_elem.c, so the one
 * dispatch line of the macro's forward reads GX_CU_OP_##NAME (a name with no
 * entry here is a compile error, not a wrong kernel). */
#define GX_CU_OP_relu       GX_CU_RELU
#define GX_CU_OP_leaky_relu GX_CU_LEAKY_RELU
#define GX_CU_OP_gelu       GX_CU_GELU
#define GX_CU_OP_silu       GX_CU_SILU
#define GX_CU_OP_sigmoid    GX_CU_SIGMOID
#define GX_CU_OP_softplus   GX_CU_SOFTPLUS
#define GX_CU_OP_tanh       GX_CU_TANH
#define GX_CU_OP_exp        GX_CU_EXP
#define GX_CU_OP_log        GX_CU_LOG
#define GX_CU_OP_atan       GX_CU_ATAN
#define GX_CU_OP_sin        GX_CU_SIN
#define GX_CU_OP_cos        GX_CU_COS
#define GX_CU_OP_sqrt       GX_CU_SQRT
#define GX_CU_OP_square     GX_CU_SQUARE
#define GX_CU_OP_abs        GX_CU_ABS
#define GX_CU_OP_neg        GX_CU_NEG
#define GX_CU_OP_affine     GX_CU_AFFINE
#define GX_CU_OP_pow_scalar GX_CU_POW
#define GX_CU_OP_clamp      GX_CU_CLAMP
#define GX_CU_OP_step       GX_CU_STEP

/* ---------------------------------------------------- elementwise (gx_elem.c) */

/* y = F(x; p0, p1) for every unary op (p0/p1 as the CPU op's nd->f); name is
 * the CPU op's tape name. */
gx_tensor *gx_cuda_unary(gx_ctx *ctx, const char *name, gx_cu_unary op, gx_tensor *x, double p0, double p1);
/* Broadcasting binary ops (gx_add ... gx_maximum); both inputs on the device. */
gx_tensor *gx_cuda_binary(gx_ctx *ctx, const char *name, gx_cu_binary op, gx_tensor *a, gx_tensor *b);

/* ------------------------------------------------------- reductions (gx_reduce.c) */

/* gx_sum / gx_mean / gx_max over dim (op GX_CU_SUM, GX_CU_MEAN, GX_CU_MAXR). */
gx_tensor *gx_cuda_reduce(gx_ctx *ctx, const char *name, gx_cu_reduce op, gx_tensor *x, int dim, int keepdim);
/* gx_sum_all (mean 0) / gx_mean_all (mean 1): a 0-D device tensor. */
gx_tensor *gx_cuda_sum_all(gx_ctx *ctx, const char *name, int mean, gx_tensor *x);
/* gx_softmax (log 0) / gx_log_softmax (log 1). */
gx_tensor *gx_cuda_softmax(gx_ctx *ctx, const char *name, int log, gx_tensor *x, int dim);
gx_tensor *gx_cuda_logsumexp(gx_ctx *ctx, gx_tensor *x, int dim, int keepdim);
/* target / idx are host arrays (checked and copied to the device, as the
 * CPU ops copy them). */
gx_tensor *gx_cuda_cross_entropy(gx_ctx *ctx, gx_tensor *logits, const int32_t *target, double label_smoothing);
gx_tensor *gx_cuda_gather(gx_ctx *ctx, gx_tensor *x, const int32_t *idx);
/* Made on ctx's device (no tensor input: the ctx decides, as for gx_tensor_zeros). */
gx_tensor *gx_cuda_one_hot(gx_ctx *ctx, const int32_t *idx, int64_t B, int64_t K);
gx_tensor *gx_cuda_l2_normalize(gx_ctx *ctx, gx_tensor *x, int dim, double eps);

#endif
