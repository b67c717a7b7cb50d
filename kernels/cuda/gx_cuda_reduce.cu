/*
 * gx_cuda_reduce.cu — reductions over one dim, the softmax family and
 * cross-entropy on the GPU, twin of kernels/gx_reduce.c.
 *
 * x is viewed as [outer, n, inner]; a "column" is one (o, i) pair, reduced
 * over j. One warp per column: lanes stride over j, partial sums in double
 * are combined by shuffles, so sums are as exact as the CPU's (double
 * accumulation; only the order of the double additions differs). Max keeps
 * the CPU's sequential scan (one thread per column) so ties and NaNs pick
 * the same index as the CPU.
 *
 * logsumexp and L2 normalise use the same warp per column, through the
 * per-lane partial bodies of gx_cuda_body.cuh (host-tested lane by lane).
 * Whole-tensor sums take fixed chunks of GX_CU_CHUNK elements, one block
 * each, and add the chunk sums in order: the same bits on every run.
 */
#include "gx_cuda_impl.cuh"
#include "gx_cuda_body.cuh"

#define GX_CU_WARPS 8                       /* columns per block */

__device__ __forceinline__ double gx_cu_warp_sum(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double gx_cu_warp_max(double v) {
    for (int o = 16; o > 0; o >>= 1) {
        double w = __shfl_xor_sync(0xffffffffu, v, o);
        v = w > v ? w : v;
    }
    return v;
}

/* Column loop: warp-wide, every lane sees the same c. */
#define GX_CU_COLS(c, ncol)                                                          \
    for (int64_t c = (int64_t)blockIdx.x * GX_CU_WARPS + (threadIdx.x >> 5); c < (ncol); \
         c += (int64_t)gridDim.x * GX_CU_WARPS)
#define GX_CU_LANE ((int)(threadIdx.x & 31))

static unsigned gx_cu_col_blocks(int64_t ncol) {
    int64_t b = (ncol + GX_CU_WARPS - 1) / GX_CU_WARPS;
    return (unsigned)(b < 1 ? 1 : (b > 65535 * 4 ? 65535 * 4 : b));
}

/* ---------------------------------------------------- sum, mean, max */

__global__ void gx_cu_sum_k(const float *x, float *y, int64_t ncol, int64_t n, int64_t inner, double sc) {
    GX_CU_COLS(c, ncol) {
        double s = 0;
        for (int64_t j = GX_CU_LANE; j < n; j += 32) s += x[gx_cu_at(c, j, n, inner)];
        s = gx_cu_warp_sum(s);
        if (GX_CU_LANE == 0) y[c] = (float)(s * sc);
    }
}

__global__ void gx_cu_max_k(const float *x, float *y, int64_t ncol, int64_t n, int64_t inner) {
    GX_CU_LOOP(c, ncol) y[c] = x[gx_cu_at(c, gx_cu_argmax(x, c, n, inner), n, inner)];
}

__global__ void gx_cu_sum_bw_k(const float *g, float *gx, int64_t total, int64_t n, int64_t inner, double sc) {
    GX_CU_LOOP(k, total) {
        int64_t c = (k / (n * inner)) * inner + k % inner;
        gx[k] += (float)((double)g[c] * sc);
    }
}

__global__ void gx_cu_max_bw_k(const float *x, const float *g, float *gx, int64_t ncol, int64_t n,
                               int64_t inner) {
    GX_CU_LOOP(c, ncol) gx[gx_cu_at(c, gx_cu_argmax(x, c, n, inner), n, inner)] += g[c];
}

extern "C" void gx_cu_reduce_fwd(gx_cuda_stream *s, gx_cu_reduce op, const float *x, float *y,
                                 int64_t outer, int64_t n, int64_t inner) {
    GX_CU_SKIP(s);
    int64_t ncol = outer * inner;
    if (ncol <= 0 || n <= 0) return;
    if (op == GX_CU_MAXR)
        gx_cu_max_k<<<gx_cu_blocks(ncol), GX_CU_THREADS, 0, s->st>>>(x, y, ncol, n, inner);
    else
        gx_cu_sum_k<<<gx_cu_col_blocks(ncol), 32 * GX_CU_WARPS, 0, s->st>>>(
            x, y, ncol, n, inner, op == GX_CU_MEAN ? 1.0 / (double)n : 1.0);
    GX_CU_CHECK(s);
}

extern "C" void gx_cu_reduce_bwd(gx_cuda_stream *s, gx_cu_reduce op, const float *x, const float *y,
                                 const float *g, float *gx, int64_t outer, int64_t n, int64_t inner) {
    GX_CU_SKIP(s);
    (void)y;          /* max recomputes its argmax from x (the CPU saves it) */
    int64_t ncol = outer * inner, total = ncol * n;
    if (total <= 0) return;
    if (op == GX_CU_MAXR)
        gx_cu_max_bw_k<<<gx_cu_blocks(ncol), GX_CU_THREADS, 0, s->st>>>(x, g, gx, ncol, n, inner);
    else
        gx_cu_sum_bw_k<<<gx_cu_blocks(total), GX_CU_THREADS, 0, s->st>>>(
            g, gx, total, n, inner, op == GX_CU_MEAN ? 1.0 / (double)n : 1.0);
    GX_CU_CHECK(s);
}

/* ------------------------------------------------------------ softmax */

/* log sum_j exp(x_j) of column c, stabilised by the column max (0 when the
 * column is all -inf, so the result is -inf as on the CPU). Warp-wide. */
__device__ __forceinline__ double gx_cu_col_lse(const float *x, int64_t c, int64_t n, int64_t inner,
                                                double *mout, double *sout) {
    double m = -INFINITY;
    for (int64_t j = GX_CU_LANE; j < n; j += 32) {
        double v = x[gx_cu_at(c, j, n, inner)];
        m = v > m ? v : m;
    }
    m = gx_cu_warp_max(m);
    if (m == -INFINITY) m = 0;
    double s = 0;
    for (int64_t j = GX_CU_LANE; j < n; j += 32) s += exp((double)x[gx_cu_at(c, j, n, inner)] - m);
    s = gx_cu_warp_sum(s);
    *mout = m;
    *sout = s;
    return m + log(s);
}

__global__ void gx_cu_softmax_k(int logm, const float *x, float *y, int64_t ncol, int64_t n,
                                int64_t inner) {
    GX_CU_COLS(c, ncol) {
        double m, sum, lse = gx_cu_col_lse(x, c, n, inner, &m, &sum);
        double r = 1.0 / sum;
        for (int64_t j = GX_CU_LANE; j < n; j += 32) {
            int64_t k = gx_cu_at(c, j, n, inner);
            if (logm) y[k] = (float)((double)x[k] - lse);
            else y[k] = (float)((double)(float)exp((double)x[k] - m) * r);
        }
    }
}

/* softmax: gx += y (g - sum g y); log-softmax: gx += g - exp(y) sum g. */
__global__ void gx_cu_softmax_bw_k(int logm, const float *y, const float *g, float *gx, int64_t ncol,
                                   int64_t n, int64_t inner) {
    GX_CU_COLS(c, ncol) {
        double d = 0;
        for (int64_t j = GX_CU_LANE; j < n; j += 32) {
            int64_t k = gx_cu_at(c, j, n, inner);
            d += logm ? (double)g[k] : (double)g[k] * y[k];
        }
        d = gx_cu_warp_sum(d);
        for (int64_t j = GX_CU_LANE; j < n; j += 32) {
            int64_t k = gx_cu_at(c, j, n, inner);
            if (logm) gx[k] += (float)((double)g[k] - exp((double)y[k]) * d);
            else gx[k] += (float)((double)y[k] * ((double)g[k] - d));
        }
    }
}

extern "C" void gx_cu_softmax_fwd(gx_cuda_stream *s, int log, const float *x, float *y,
                                  int64_t outer, int64_t n, int64_t inner) {
    GX_CU_SKIP(s);
    int64_t ncol = outer * inner;
    if (ncol <= 0 || n <= 0) return;
    gx_cu_softmax_k<<<gx_cu_col_blocks(ncol), 32 * GX_CU_WARPS, 0, s->st>>>(log, x, y, ncol, n, inner);
    GX_CU_CHECK(s);
}

extern "C" void gx_cu_softmax_bwd(gx_cuda_stream *s, int log, const float *y, const float *g, float *gx,
                                  int64_t outer, int64_t n, int64_t inner) {
    GX_CU_SKIP(s);
    int64_t ncol = outer * inner;
    if (ncol <= 0 || n <= 0) return;
    gx_cu_softmax_bw_k<<<gx_cu_col_blocks(ncol), 32 * GX_CU_WARPS, 0, s->st>>>(log, y, g, gx, ncol, n,
                                                                              inner);
    GX_CU_CHECK(s);
}

/* ------------------------------------------------------ cross-entropy */

/* loss_b = lse_b - (1-ls) x[b,t] - ls/K sum_k x[b,k] (gx_cross_entropy). */
__global__ void gx_cu_ce_k(const float *x, const int32_t *t, double ls, float *loss, double *lse,
                           int64_t B, int64_t K) {
    GX_CU_COLS(b, B) {
        double m, sum, l = gx_cu_col_lse(x + b * K, 0, K, 1, &m, &sum), rs = 0;
        for (int64_t k = GX_CU_LANE; k < K; k += 32) rs += x[b * K + k];
        rs = gx_cu_warp_sum(rs);
        if (GX_CU_LANE == 0) {
            lse[b] = l;
            loss[b] = (float)(l - (1.0 - ls) * (double)x[b * K + t[b]] - ls / (double)K * rs);
        }
    }
}

/* d loss_b / d x[b,k] = softmax_k - (1-ls) [k == t] - ls/K, times g[b]. */
__global__ void gx_cu_ce_bw_k(const float *x, const int32_t *t, double ls, const double *lse,
                              const float *g, float *gx, int64_t B, int64_t K) {
    GX_CU_COLS(b, B) {
        const double gb = g[b], l = lse[b], u = ls / (double)K;
        for (int64_t k = GX_CU_LANE; k < K; k += 32) {
            float v = gx[b * K + k] + (float)(gb * (exp((double)x[b * K + k] - l) - u));
            if (k == t[b]) v -= (float)(gb * (1.0 - ls));
            gx[b * K + k] = v;
        }
    }
}

extern "C" void gx_cu_cross_entropy_fwd(gx_cuda_stream *s, const float *logits, const int32_t *target,
                                        double ls, float *loss, double *lse, int64_t B, int64_t K) {
    GX_CU_SKIP(s);
    if (B <= 0) return;
    gx_cu_ce_k<<<gx_cu_col_blocks(B), 32 * GX_CU_WARPS, 0, s->st>>>(logits, target, ls, loss, lse, B, K);
    GX_CU_CHECK(s);
}

extern "C" void gx_cu_cross_entropy_bwd(gx_cuda_stream *s, const float *logits, const int32_t *target,
                                        double ls, const double *lse, const float *g, float *glogits,
                                        int64_t B, int64_t K) {
    GX_CU_SKIP(s);
    if (B <= 0) return;
    gx_cu_ce_bw_k<<<gx_cu_col_blocks(B), 32 * GX_CU_WARPS, 0, s->st>>>(logits, target, ls, lse, g,
                                                                       glogits, B, K);
    GX_CU_CHECK(s);
}

/* ---------------------------------------------------------- logsumexp */

/* The column's lse from the body's per-lane partials (warp-wide). */
__device__ __forceinline__ double gx_cu_col_lse2(const float *x, int64_t c, int64_t n, int64_t inner) {
    double m = gx_cu_warp_max(gx_cu_col_max_part(x, c, n, inner, GX_CU_LANE, 32));
    if (m == -INFINITY) m = 0;                 /* all -inf: log(0) = -inf below */
    return m + log(gx_cu_warp_sum(gx_cu_col_expsum_part(x, c, n, inner, m, GX_CU_LANE, 32)));
}

__global__ void gx_cu_lse_k(const float *x, float *y, int64_t ncol, int64_t n, int64_t inner) {
    GX_CU_COLS(c, ncol) {
        const double l = gx_cu_col_lse2(x, c, n, inner);
        if (GX_CU_LANE == 0) y[c] = (float)l;
    }
}

__global__ void gx_cu_lse_bw_k(const float *x, const float *y, const float *g, float *gx, int64_t total,
                               int64_t n, int64_t inner) {
    GX_CU_LOOP(k, total) gx[k] = gx_cu_lse_bw_at(x, y, g, gx[k], k, n, inner);
}

extern "C" void gx_cu_logsumexp_fwd(gx_cuda_stream *s, const float *x, float *y, int64_t outer, int64_t n,
                                    int64_t inner) {
    GX_CU_SKIP(s);
    const int64_t ncol = outer * inner;
    if (ncol <= 0 || n <= 0) return;
    gx_cu_lse_k<<<gx_cu_col_blocks(ncol), 32 * GX_CU_WARPS, 0, s->st>>>(x, y, ncol, n, inner);
    GX_CU_CHECK(s);
}

extern "C" void gx_cu_logsumexp_bwd(gx_cuda_stream *s, const float *x, const float *y, const float *g,
                                    float *gx, int64_t outer, int64_t n, int64_t inner) {
    GX_CU_SKIP(s);
    const int64_t total = outer * n * inner;
    if (total <= 0) return;
    gx_cu_lse_bw_k<<<gx_cu_blocks(total), GX_CU_THREADS, 0, s->st>>>(x, y, g, gx, total, n, inner);
    GX_CU_CHECK(s);
}

/* ------------------------------------------------------- L2 normalise */

__global__ void gx_cu_l2n_k(const float *x, float *y, double *norm, double eps, int64_t ncol, int64_t n,
                            int64_t inner) {
    GX_CU_COLS(c, ncol) {
        const double nr = sqrt(gx_cu_warp_sum(gx_cu_col_dot_part(x, x, c, n, inner, GX_CU_LANE, 32)));
        const double inv = gx_cu_l2n_inv(nr, eps);
        if (GX_CU_LANE == 0) norm[c] = nr;
        for (int64_t j = GX_CU_LANE; j < n; j += 32) {
            const int64_t k = gx_cu_at(c, j, n, inner);
            y[k] = (float)((double)x[k] * inv);
        }
    }
}

__global__ void gx_cu_l2n_bw_k(const float *y, const double *norm, const float *g, float *gx, double eps,
                               int64_t ncol, int64_t n, int64_t inner) {
    GX_CU_COLS(c, ncol) {
        double inv, d2;
        gx_cu_l2n_bw_coef(norm[c], eps, gx_cu_warp_sum(gx_cu_col_dot_part(g, y, c, n, inner, GX_CU_LANE, 32)),
                          &inv, &d2);
        for (int64_t j = GX_CU_LANE; j < n; j += 32) {
            const int64_t k = gx_cu_at(c, j, n, inner);
            gx[k] += (float)((double)g[k] * inv - (double)y[k] * d2);
        }
    }
}

extern "C" void gx_cu_l2_normalize_fwd(gx_cuda_stream *s, const float *x, float *y, double *norm, double eps,
                                       int64_t outer, int64_t n, int64_t inner) {
    GX_CU_SKIP(s);
    const int64_t ncol = outer * inner;
    if (ncol <= 0 || n <= 0) return;
    gx_cu_l2n_k<<<gx_cu_col_blocks(ncol), 32 * GX_CU_WARPS, 0, s->st>>>(x, y, norm, eps, ncol, n, inner);
    GX_CU_CHECK(s);
}

extern "C" void gx_cu_l2_normalize_bwd(gx_cuda_stream *s, const float *y, const double *norm, const float *g,
                                       float *gx, double eps, int64_t outer, int64_t n, int64_t inner) {
    GX_CU_SKIP(s);
    const int64_t ncol = outer * inner;
    if (ncol <= 0 || n <= 0) return;
    gx_cu_l2n_bw_k<<<gx_cu_col_blocks(ncol), 32 * GX_CU_WARPS, 0, s->st>>>(y, norm, g, gx, eps, ncol, n, inner);
    GX_CU_CHECK(s);
}

/* ------------------------------------------------- sum_all, mean_all */

extern "C" int64_t gx_cu_chunk_count(int64_t n) { return n > 0 ? (n + GX_CU_CHUNK - 1) / GX_CU_CHUNK : 0; }

/* One block per chunk: part[chunk] = its (squared) sum; the block's
 * threads take fixed strides and meet in gx_cu_block_sum, so every partial
 * is the same bits on every run. */
__global__ void gx_cu_chunk_k(const float *x, int64_t n, int square, double *part) {
    __shared__ double sh[32];
    const int64_t nch = (n + GX_CU_CHUNK - 1) / GX_CU_CHUNK;
    for (int64_t ch = blockIdx.x; ch < nch; ch += gridDim.x) {
        const double v = gx_cu_block_sum(gx_cu_chunk_part(x, n, ch, threadIdx.x, blockDim.x, square), sh);
        if (threadIdx.x == 0) part[ch] = v;
    }
}

/* y = (sum of the partials in chunk order) * sc: one thread. */
__global__ void gx_cu_sum_parts_k(const double *part, int64_t np, double sc, float *y) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double s = 0;
    for (int64_t i = 0; i < np; i++) s += part[i];
    y[0] = (float)(s * sc);
}

__global__ void gx_cu_fill_add_k(const float *g, double sc, float *gx, int64_t n) {
    const float v = (float)((double)g[0] * sc);
    GX_CU_LOOP(k, n) gx[k] += v;
}

static unsigned gx_cu_chunk_blocks(int64_t n) {
    const int64_t c = gx_cu_chunk_count(n);
    return (unsigned)(c < 1 ? 1 : (c > 65535 ? 65535 : c));
}

extern "C" void gx_cu_sum_all_fwd(gx_cuda_stream *s, int mean, const float *x, float *y, double *part,
                                  int64_t n) {
    GX_CU_SKIP(s);
    if (n <= 0) { gx_cu_note(s, __func__, cudaMemsetAsync(y, 0, sizeof(float), s->st)); return; }
    gx_cu_chunk_k<<<gx_cu_chunk_blocks(n), GX_CU_THREADS, 0, s->st>>>(x, n, 0, part);
    GX_CU_CHECK(s);
    gx_cu_sum_parts_k<<<1, 32, 0, s->st>>>(part, gx_cu_chunk_count(n), mean ? 1.0 / (double)n : 1.0, y);
    GX_CU_CHECK(s);
}

extern "C" void gx_cu_sum_all_bwd(gx_cuda_stream *s, int mean, const float *g, float *gx, int64_t n) {
    GX_CU_SKIP(s);
    if (n <= 0) return;
    gx_cu_fill_add_k<<<gx_cu_blocks(n), GX_CU_THREADS, 0, s->st>>>(g, mean ? 1.0 / (double)n : 1.0, gx, n);
    GX_CU_CHECK(s);
}
