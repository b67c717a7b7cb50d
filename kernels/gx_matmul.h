/*
 * gx_matmul.h — matrix products (kernels/gx_matmul.c), all through BLAS GEMM.
 */
#ifndef GX_MATMUL_H
#define GX_MATMUL_H
#ifdef __cplusplus
extern "C" {
#endif

/* y = x w^T + b. x [..., in], w [out, in] (PyTorch layout), b [out] or NULL
 * -> y [..., out]. */
gx_tensor *gx_linear(gx_ctx *ctx, gx_tensor *x, gx_tensor *w, gx_tensor *b);
/* a [..., M, K] @ b [..., K, N] -> [..., M, N]. Batch dims must be equal, or
 * b may be 2-D [K, N] (shared by every batch). */
gx_tensor *gx_matmul(gx_ctx *ctx, gx_tensor *a, gx_tensor *b);
/* Gram / similarity matrix a b^T: a [N, D], b [M, D] -> [N, M]. a may be b. */
gx_tensor *gx_gram(gx_ctx *ctx, gx_tensor *a, gx_tensor *b);
/* Squared Euclidean distances ||a_i - b_j||^2: a [N, D], b [M, D] -> [N, M],
 * clamped at 0 (the expansion |a|^2 + |b|^2 - 2ab can round below zero).
 * Entries that come out <= 0 (clamped, or exactly 0) get zero gradient; for
 * a == b this includes the diagonal, where the true derivative is 0 too.
 * Note: for nearly equal rows the f32 result has an absolute error of about
 * eps * (|a|^2 + |b|^2), not relative to the (tiny) distance. */
gx_tensor *gx_pairwise_sqdist(gx_ctx *ctx, gx_tensor *a, gx_tensor *b);

#ifdef __cplusplus
}
#endif
#endif
