/*
 * gx_impl.h — private helpers shared by the engine's op files. Not part of
 * the public API (models and tests include gx.h only).
 */
#ifndef GX_IMPL_H
#define GX_IMPL_H

#include "gx.h"
#include "gx_math.h"
#include <string.h>

/* C = alpha * op(A) op(B) + beta * C, row-major, through cblas_sgemm or
 * cblas_dgemm depending on the precision of the build. */
void gx_gemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, double alpha,
             const gx_real *A, int64_t lda, const gx_real *B, int64_t ldb,
             double beta, gx_real *C, int64_t ldc);

/* gx_gemm with op(A) = A, run as one GEMM per panel of `panel` rows of A
 * and C (the last panel may be shorter only when M is not a multiple).
 * BLAS picks kernels, tails and thread splits from the whole call's shape,
 * so a row's bits depend on M and on where the row sits; with a panel per
 * sample every sample's rows see the same call whatever the batch. */
static inline void gx_gemm_panels(int trans_b, int64_t M, int64_t panel, int64_t N, int64_t K,
                                  double alpha, const gx_real *A, int64_t lda, const gx_real *B,
                                  int64_t ldb, double beta, gx_real *C, int64_t ldc) {
    if (panel <= 0 || panel >= M) panel = M;
    for (int64_t r = 0; r < M; r += panel) {
        int64_t m = M - r < panel ? M - r : panel;
        gx_gemm(0, trans_b, m, N, K, alpha, A + r * lda, lda, B, ldb, beta, C + r * ldc, ldc);
    }
}

/* Shared shape checks for op entry points. */
#define GX_CHECK_NDIM(t, n) GX_ASSERT_MSG((t)->ndim == (n), "%s: expected %d-D tensor, got %d-D", __func__, (n), (t)->ndim)

/* Element counts above which an elementwise loop is worth an OpenMP team. */
#define GX_PAR_THRESHOLD 32768

/* Collapse x's shape around dim into [outer, n, inner]. */
static inline void gx_split_dims(const gx_tensor *x, int dim, int64_t *outer, int64_t *n, int64_t *inner) {
    int64_t o = 1, i = 1;
    for (int d = 0; d < dim; d++) o *= x->shape[d];
    for (int d = dim + 1; d < x->ndim; d++) i *= x->shape[d];
    *outer = o; *n = x->shape[dim]; *inner = i;
}

#endif
