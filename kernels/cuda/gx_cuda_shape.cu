/*
 * gx_cuda_shape.cu — shape and layout ops on the GPU, twin of
 * kernels/gx_shape.c (permute, concat, slice/split, flip) plus gather and
 * one-hot of kernels/gx_reduce.c.
 *
 * Every op is a bijection (or injection) between positions, so each
 * kernel runs one thread per destination element and reads through an
 * index map from gx_cuda_body.cuh: forward copies, backward adds with the
 * transposed map. No destination is written twice, so there are no atomics
 * and no order effects: the results are the CPU's bits.
 */
#include "gx_cuda_impl.cuh"
#include "gx_cuda_body.cuh"

#define GX_CU_LAUNCH1(kern, n, ...)                                                  \
    do {                                                                             \
        if ((n) <= 0) break;                                                         \
        kern<<<gx_cu_blocks(n), GX_CU_THREADS, 0, s->st>>>(__VA_ARGS__);             \
        GX_CU_CHECK(s);                                                              \
    } while (0)

__global__ void gx_cu_acc_k(float *dst, const float *src, int64_t n) {
    GX_CU_LOOP(i, n) dst[i] += src[i];
}

extern "C" void gx_cu_accumulate(gx_cuda_stream *s, float *dst, const float *src, int64_t n) {
    GX_CU_SKIP(s);
    GX_CU_LAUNCH1(gx_cu_acc_k, n, dst, src, n);
}

/* ------------------------------------------------------------- permute */

__global__ void gx_cu_perm_k(gx_cu_pm p, const float *src, float *dst, int64_t n, int accumulate) {
    GX_CU_LOOP(i, n) {
        const float v = src[gx_cu_pm_src(p, i)];
        if (accumulate) dst[i] += v; else dst[i] = v;
    }
}

extern "C" void gx_cu_permute_fwd(gx_cuda_stream *s, const float *x, int nd, const int64_t *xshape,
                                  const int *perm, float *y) {
    GX_CU_SKIP(s);
    const int64_t n = gx_shape_numel(nd, xshape);
    GX_CU_LAUNCH1(gx_cu_perm_k, n, gx_cu_pm_make(nd, xshape, perm), x, y, n, 0);
}

extern "C" void gx_cu_permute_bwd(gx_cuda_stream *s, const float *g, int nd, const int64_t *xshape,
                                  const int *perm, float *gx) {
    GX_CU_SKIP(s);
    int64_t yshape[GX_MAX_DIMS];
    int inv[GX_MAX_DIMS];
    for (int d = 0; d < nd; d++) { yshape[d] = xshape[perm[d]]; inv[perm[d]] = d; }
    const int64_t n = gx_shape_numel(nd, xshape);
    GX_CU_LAUNCH1(gx_cu_perm_k, n, gx_cu_pm_make(nd, yshape, inv), g, gx, n, 1);
}

/* ------------------------------------------------ concat, slice, flip */

/* dir 0: big[band] = small (concat forward) ; dir 1: small (+)= big[band]
 * (slice forward, concat backward); dir 2: big[band] += small (slice
 * backward). small is [outer, m, inner], big [outer, n, inner]. */
__global__ void gx_cu_band_k(int dir, float *big, float *small, const float *src, int64_t total, int64_t m,
                             int64_t inner, int64_t n, int64_t off, int accumulate) {
    GX_CU_LOOP(i, total) {
        const int64_t b = gx_cu_band_at(i, m, inner, n, off);
        if (dir == 0) big[b] = src[i];
        else if (dir == 1) small[i] = accumulate ? small[i] + src[b] : src[b];
        else big[b] += src[i];
    }
}

extern "C" void gx_cu_concat_fwd(gx_cuda_stream *s, int n, const float *const *xs, const int64_t *sizes,
                                 float *y, int64_t outer, int64_t inner) {
    GX_CU_SKIP(s);
    int64_t N = 0, off = 0;
    for (int k = 0; k < n; k++) N += sizes[k];
    for (int k = 0; k < n; k++) {
        const int64_t total = outer * sizes[k] * inner;
        GX_CU_LAUNCH1(gx_cu_band_k, total, 0, y, (float *)NULL, xs[k], total, sizes[k], inner, N, off, 0);
        off += sizes[k];
    }
}

extern "C" void gx_cu_concat_bwd(gx_cuda_stream *s, int n, const float *g, const int64_t *sizes,
                                 float *const *gxs, int64_t outer, int64_t inner) {
    GX_CU_SKIP(s);
    int64_t N = 0, off = 0;
    for (int k = 0; k < n; k++) N += sizes[k];
    for (int k = 0; k < n; k++) {
        const int64_t total = outer * sizes[k] * inner;
        if (gxs[k]) GX_CU_LAUNCH1(gx_cu_band_k, total, 1, (float *)NULL, gxs[k], g, total, sizes[k], inner, N, off, 1);
        off += sizes[k];
    }
}

extern "C" void gx_cu_slice_fwd(gx_cuda_stream *s, const float *x, float *y, int64_t outer, int64_t n,
                                int64_t inner, int64_t start, int64_t end) {
    GX_CU_SKIP(s);
    const int64_t total = outer * (end - start) * inner;
    GX_CU_LAUNCH1(gx_cu_band_k, total, 1, (float *)NULL, y, x, total, end - start, inner, n, start, 0);
}

extern "C" void gx_cu_slice_bwd(gx_cuda_stream *s, const float *g, float *gx, int64_t outer, int64_t n,
                                int64_t inner, int64_t start, int64_t end) {
    GX_CU_SKIP(s);
    const int64_t total = outer * (end - start) * inner;
    GX_CU_LAUNCH1(gx_cu_band_k, total, 2, gx, (float *)NULL, g, total, end - start, inner, n, start, 1);
}

__global__ void gx_cu_flip_k(const float *src, float *dst, int64_t total, int64_t n, int64_t inner,
                             int accumulate) {
    GX_CU_LOOP(i, total) {
        const float v = src[gx_cu_flip_at(i, n, inner)];
        if (accumulate) dst[i] += v; else dst[i] = v;
    }
}

extern "C" void gx_cu_flip_fwd(gx_cuda_stream *s, const float *x, float *y, int64_t outer, int64_t n,
                               int64_t inner) {
    GX_CU_SKIP(s);
    GX_CU_LAUNCH1(gx_cu_flip_k, outer * n * inner, x, y, outer * n * inner, n, inner, 0);
}

extern "C" void gx_cu_flip_bwd(gx_cuda_stream *s, const float *g, float *gx, int64_t outer, int64_t n,
                               int64_t inner) {
    GX_CU_SKIP(s);
    GX_CU_LAUNCH1(gx_cu_flip_k, outer * n * inner, g, gx, outer * n * inner, n, inner, 1);
}

/* ---------------------------------------------------- gather, one-hot */

__global__ void gx_cu_gather_k(const float *x, const int32_t *idx, float *y, int64_t B, int64_t K) {
    GX_CU_LOOP(b, B) y[b] = x[b * K + idx[b]];
}
__global__ void gx_cu_gather_bw_k(const int32_t *idx, const float *g, float *gx, int64_t B, int64_t K) {
    GX_CU_LOOP(b, B) gx[b * K + idx[b]] += g[b];
}
__global__ void gx_cu_one_hot_k(const int32_t *idx, float *y, int64_t total, int64_t K) {
    GX_CU_LOOP(k, total) y[k] = gx_cu_one_hot_at(idx, k, K);
}

extern "C" void gx_cu_gather_fwd(gx_cuda_stream *s, const float *x, const int32_t *idx, float *y, int64_t B,
                                 int64_t K) {
    GX_CU_SKIP(s);
    GX_CU_LAUNCH1(gx_cu_gather_k, B, x, idx, y, B, K);
}
extern "C" void gx_cu_gather_bwd(gx_cuda_stream *s, const int32_t *idx, const float *g, float *gx, int64_t B,
                                 int64_t K) {
    GX_CU_SKIP(s);
    GX_CU_LAUNCH1(gx_cu_gather_bw_k, B, idx, g, gx, B, K);
}
extern "C" void gx_cu_one_hot(gx_cuda_stream *s, const int32_t *idx, float *y, int64_t B, int64_t K) {
    GX_CU_SKIP(s);
    GX_CU_LAUNCH1(gx_cu_one_hot_k, B * K, idx, y, B * K, K);
}
