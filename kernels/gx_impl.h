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

/* Op dispatch to the device (kernels/gx_device.c, kernels/cuda/gx_cuda_ops_*.c).
 * GX_CUDA_ON is 1 in an f32 build with CUDA; the f64 library and CPU-only
 * builds compile every dispatch line away. An op entry starts with
 *   GX_CUDA_DISPATCH(gx_on_cuda(x), gx_cuda_relu(ctx, x));
 * i.e. "if x lives on the device, return the device op's result". */
#if defined(GX_HAVE_CUDA) && GX_HAVE_CUDA && !defined(GX_F64)
#define GX_CUDA_ON 1
#define GX_CUDA_DISPATCH(cond, expr) do { if (cond) return (expr); } while (0)
#else
#define GX_CUDA_ON 0
#define GX_CUDA_DISPATCH(cond, expr) do { } while (0)
#endif
static inline int gx_on_cuda(const gx_tensor *t) { return GX_CUDA_ON && t && t->device == GX_DEVICE_CUDA; }

/* Device hooks of gx_core.c (kernels/gx_device.c). */
struct gx_cuda_exec;
void gx_cuda_device_reset(struct gx_cuda_exec *e);
void gx_cuda_seed_grad(gx_ctx *ctx, gx_tensor *t, const gx_real *seed);
void gx_params_free_cuda(gx_params *p);

/* NumPy broadcast shape of a and b into out (returns its ndim); aborts
 * naming op and both shapes when they do not broadcast (gx_elem.c). */
int gx_bc_shape(const char *op, const gx_tensor *a, const gx_tensor *b, int64_t *out);

/* A header viewing x's data under another shape (numel must match): data
 * shared, its own gradient buffer from gx_grad on first use, on x's device;
 * records nothing (gx_shape.c; the reshape of both backends). */
gx_tensor *gx_view_header(gx_ctx *ctx, const gx_tensor *x, int ndim, const int64_t *shape);

/* Shared shape checks for op entry points. */
#define GX_CHECK_NDIM(t, n) GX_ASSERT_MSG((t)->ndim == (n), "%s: expected %d-D tensor, got %d-D", __func__, (n), (t)->ndim)

/* Element counts above which an elementwise loop is worth an OpenMP team. */
#define GX_PAR_THRESHOLD 32768

/* Elements x0 .. x0+span-1 of a row of W values (fill where outside
 * [0, W)) split into its s phases: ph[r*pl + u] = element x0 + u*s + r.
 * A strided window's tap dx over consecutive outputs is then the contiguous
 * run phase dx % s from dx / s (im2col and max-pool at stride > 1). */
static inline void gx_row_phases(const gx_real *row, int64_t W, int64_t x0, int64_t span, int64_t s, gx_real fill,
                                 gx_real *ph, int64_t pl) {
    for (int64_t r = 0; r < s; r++) {
        gx_real *d = ph + r * pl;
        for (int64_t t = r; t < span; t += s, d++) {
            const int64_t x = x0 + t;
            *d = x >= 0 && x < W ? row[x] : fill;
        }
    }
}

/* Collapse x's shape around dim into [outer, n, inner]. */
static inline void gx_split_dims(const gx_tensor *x, int dim, int64_t *outer, int64_t *n, int64_t *inner) {
    int64_t o = 1, i = 1;
    for (int d = 0; d < dim; d++) o *= x->shape[d];
    for (int d = dim + 1; d < x->ndim; d++) i *= x->shape[d];
    *outer = o; *n = x->shape[dim]; *inner = i;
}

#endif
