/*
 * gx_reduce.c — reductions over one dim, whole-tensor sums, the softmax
 * family, cross-entropy, gather / one-hot and L2 normalisation; each forward
 * beside its backward.
 *
 * Layout. A reduction over `dim` views x as [outer, n, inner] (gx_split_dims)
 * and produces one statistic per (outer, inner) pair, stored [outer, inner]
 * — which is also the memory layout of the output with or without keepdim.
 * Every kernel has two loop shapes:
 *   inner == 1  (reducing the last dim, the common case): one contiguous row
 *               per statistic, a unit-stride loop;
 *   inner  > 1  (a middle dim, e.g. channels of [B,C,H,W]): panels of up to
 *               GX_RD_COLS columns, each column accumulated in a stack array
 *               while walking the n rows, so loads stay unit-stride too.
 * Three statistic kernels (weighted sum, max/argmax, log-sum-exp) and one map
 * macro (GX_RD_MAP: y[o,j,i] = f(x[o,j,i], stat[o,i])) build every op.
 *
 * Numerics. Sums accumulate in double. Log-sum-exp subtracts the max first
 * (a column of all -inf gives -inf, not NaN); softmax comes from the same
 * pass (exp(x - max) / sum, one exp per element) and log-softmax is x - lse.
 * Cross-entropy is written as lse - (1-ls) x[t] - ls/K sum_k x[k], which
 * equals PyTorch's label-smoothed definition (1-ls) * nll + ls * mean_k(-log
 * p_k) without forming log p.
 *
 * Determinism. Every statistic is owned by one task and summed in an order
 * fixed at compile time; whole-tensor sums use fixed-size blocks whose
 * partials are added in block order. Results do not depend on the thread count or the batch.
 */
#include "gx_impl.h"
#if GX_CUDA_ON
#include "cuda/gx_cuda_ops_elem.h"
#endif

#include <math.h>

/* Force vectorisation of unit-stride loops (GCC -O2 leaves them scalar);
 * GX_SIMD_SUM is for a double accumulator named s. The summation order is
 * fixed at compile time, so results do not depend on the thread count. */
#define GX_SIMD _Pragma("omp simd")
#define GX_SIMD_SUM _Pragma("omp simd reduction(+:s)")

/* Columns per panel when the reduced dim is not innermost. */
#define GX_RD_COLS 256
/* Elements per partial sum in sum_all / mean_all. */
#define GX_RD_BLOCK 65536

/* ============================================================ helpers */

/* Output shape of a reduction of x over d: the dim is dropped, or kept as
 * size 1 with keepdim. Either way the data layout is [outer, inner], so
 * kernels never look at keepdim. Returns the output's ndim. */
static int gx_rd_out_shape(const gx_tensor *x, int d, int keepdim, int64_t *shape) {
    int m = 0;
    for (int k = 0; k < x->ndim; k++) {
        if (k != d) shape[m++] = x->shape[k];
        else if (keepdim) shape[m++] = 1;
    }
    return m;
}

/* Per-(outer, inner) double statistics live in the arena: no malloc in the
 * step loop, and freed with the activations at gx_ctx_reset. */
static double *gx_rd_stats(gx_ctx *ctx, int64_t n) {
    return gx_ctx_alloc(ctx, (size_t)n * sizeof(double));
}

/* The start of every backward of an op over one dim: the input seen as
 * [outer, n, inner] around the node's dim (nd->i[0]) and the input's
 * gradient buffer, NULL when it needs none (nothing to do). */
static gx_real *gx_rd_bw_begin(gx_ctx *ctx, gx_node *nd, int64_t *outer, int64_t *n, int64_t *inner) {
    gx_split_dims(nd->in[0], (int)nd->i[0], outer, n, inner);
    return gx_grad(ctx, nd->in[0]);
}

/* Records an op over dim d of x whose backward needs only d (nd->i[0]). */
static gx_tensor *gx_rd_record(gx_ctx *ctx, const char *op, gx_backward_fn bw, gx_tensor *out, gx_tensor *x,
                               int d) {
    gx_node *nd = gx_tape_record(ctx, op, bw, out, 1, &x);
    if (nd) nd->i[0] = d;
    return out;
}

/* out[o,i] = sum_j x[o,j,i] * (w ? w[o,j,i] : 1), in double. The weighted
 * form gives the dot products of the softmax and L2 backward passes and the
 * squared norm of L2 normalise; the plain form sum and mean. */
static void gx_rd_sum(const gx_real *x, const gx_real *w, int64_t outer, int64_t n,
                      int64_t inner, double *out) {
    const int par = outer * n * inner > GX_PAR_THRESHOLD;
    if (inner == 1) {
        #pragma omp parallel for if (par)
        for (int64_t o = 0; o < outer; o++) {
            const gx_real *xr = x + o * n, *wr = w ? w + o * n : NULL;
            double s = 0;
            if (wr) { GX_SIMD_SUM for (int64_t j = 0; j < n; j++) s += (double)xr[j] * wr[j]; }
            else    { GX_SIMD_SUM for (int64_t j = 0; j < n; j++) s += xr[j]; }
            out[o] = s;
        }
        return;
    }
    /* Panels: task t owns columns [c0, c0+nc) of outer slice o; walking j
     * reads nc consecutive values per row, which vectorises, where a
     * column-at-a-time loop would stride by `inner`. */
    const int64_t nblk = (inner + GX_RD_COLS - 1) / GX_RD_COLS;
    #pragma omp parallel for if (par)
    for (int64_t t = 0; t < outer * nblk; t++) {
        int64_t o = t / nblk, c0 = (t % nblk) * GX_RD_COLS;
        int64_t nc = inner - c0 < GX_RD_COLS ? inner - c0 : GX_RD_COLS;
        double s[GX_RD_COLS];
        for (int64_t i = 0; i < nc; i++) s[i] = 0;
        for (int64_t j = 0; j < n; j++) {
            int64_t base = (o * n + j) * inner + c0;
            const gx_real *xr = x + base;
            if (w) { const gx_real *wr = w + base; GX_SIMD for (int64_t i = 0; i < nc; i++) s[i] += (double)xr[i] * wr[i]; }
            else   { GX_SIMD for (int64_t i = 0; i < nc; i++) s[i] += xr[i]; }
        }
        for (int64_t i = 0; i < nc; i++) out[o * inner + c0 + i] = s[i];
    }
}

/* val[o,i] = max_j x[o,j,i]; arg (if non-NULL) = the first j reaching it.
 * One strided column per task: the branch is taken only when a new maximum
 * appears (rarely), so it predicts well; max is cheap next to the softmax. */
static void gx_rd_max(const gx_real *x, int64_t outer, int64_t n, int64_t inner,
                      gx_real *val, int64_t *arg) {
    const int par = outer * n * inner > GX_PAR_THRESHOLD;
    #pragma omp parallel for if (par)
    for (int64_t t = 0; t < outer * inner; t++) {
        int64_t o = t / inner, i = t % inner;
        const gx_real *xc = x + o * n * inner + i;
        gx_real m = xc[0];
        int64_t a = 0;
        /* Strict > keeps the first maximum (PyTorch's index for ties). */
        for (int64_t j = 1; j < n; j++)
            if (xc[j * inner] > m) { m = xc[j * inner]; a = j; }
        val[t] = m;
        if (arg) arg[t] = a;
    }
}

/* lse[o,i] = log sum_j exp(x[o,j,i]), stabilised by the column max. When
 * soft is non-NULL it also receives the softmax, from the same exp() values
 * (exp dominates the cost, so softmax pays for it once, not twice). */
static void gx_rd_lse(const gx_real *x, int64_t outer, int64_t n, int64_t inner, double *lse,
                      gx_real *soft) {
    const int par = outer * n * inner > GX_PAR_THRESHOLD / 8;   /* exp is costly */
    if (inner == 1) {
        #pragma omp parallel for if (par)
        for (int64_t o = 0; o < outer; o++) {
            const gx_real *xr = x + o * n;
            gx_real *yr = soft ? soft + o * n : NULL;
            double m = -INFINITY, s = 0;
            _Pragma("omp simd reduction(max:m)")
            for (int64_t j = 0; j < n; j++) m = xr[j] > m ? xr[j] : m;
            if (m == -INFINITY) m = 0;       /* all -inf: log(0) = -inf below */
            for (int64_t j = 0; j < n; j++) {
                double e = exp((double)xr[j] - m);
                s += e;
                if (yr) yr[j] = (gx_real)e;
            }
            lse[o] = m + log(s);
            if (yr) { const double r = 1.0 / s; GX_SIMD for (int64_t j = 0; j < n; j++) yr[j] = (gx_real)(yr[j] * r); }
        }
        return;
    }
    const int64_t nblk = (inner + GX_RD_COLS - 1) / GX_RD_COLS;
    #pragma omp parallel for if (par)
    for (int64_t t = 0; t < outer * nblk; t++) {
        int64_t o = t / nblk, c0 = (t % nblk) * GX_RD_COLS;
        int64_t nc = inner - c0 < GX_RD_COLS ? inner - c0 : GX_RD_COLS;
        double m[GX_RD_COLS], s[GX_RD_COLS];
        for (int64_t i = 0; i < nc; i++) { m[i] = -INFINITY; s[i] = 0; }
        for (int64_t j = 0; j < n; j++) {
            const gx_real *xr = x + (o * n + j) * inner + c0;
            GX_SIMD for (int64_t i = 0; i < nc; i++) m[i] = xr[i] > m[i] ? xr[i] : m[i];
        }
        for (int64_t i = 0; i < nc; i++) if (m[i] == -INFINITY) m[i] = 0;
        for (int64_t j = 0; j < n; j++) {
            const int64_t base = (o * n + j) * inner + c0;
            for (int64_t i = 0; i < nc; i++) {
                double e = exp((double)x[base + i] - m[i]);
                s[i] += e;
                if (soft) soft[base + i] = (gx_real)e;
            }
        }
        for (int64_t i = 0; i < nc; i++) lse[o * inner + c0 + i] = m[i] + log(s[i]);
        if (!soft) continue;
        for (int64_t i = 0; i < nc; i++) s[i] = 1.0 / s[i];
        for (int64_t j = 0; j < n; j++) {
            gx_real *yr = soft + (o * n + j) * inner + c0;
            GX_SIMD for (int64_t i = 0; i < nc; i++) yr[i] = (gx_real)(yr[i] * s[i]);
        }
    }
}

/* GX_RD_MAP: for every element k = (o, j, i) of an [outer, n, inner] view,
 * run BODY with s = ST[o*inner+i] and s2 = ST2[o*inner+i] (as doubles).
 * The two branches keep the innermost loop unit-stride in both layouts. */
#define GX_RD_MAP(OUTER, N, INNER, ST, ST2, BODY)                               \
    do {                                                                        \
        const int64_t o_ = (OUTER), n_ = (N), in_ = (INNER);                    \
        const int par_ = o_ * n_ * in_ > GX_PAR_THRESHOLD;                      \
        if (in_ == 1) {                                                         \
            _Pragma("omp parallel for if (par_)")                               \
            for (int64_t o = 0; o < o_; o++) {                                  \
                const double s = (double)(ST)[o], s2 = (double)(ST2)[o];        \
                (void)s; (void)s2;                                              \
                GX_SIMD for (int64_t k = o * n_; k < (o + 1) * n_; k++) { BODY; } \
            }                                                                   \
        } else {                                                                \
            _Pragma("omp parallel for collapse(2) if (par_)")                   \
            for (int64_t o = 0; o < o_; o++)                                    \
                for (int64_t j = 0; j < n_; j++)                                \
                    GX_SIMD for (int64_t i = 0; i < in_; i++) {                 \
                        const int64_t k = (o * n_ + j) * in_ + i;               \
                        const double s = (double)(ST)[o * in_ + i];             \
                        const double s2 = (double)(ST2)[o * in_ + i];           \
                        (void)s; (void)s2;                                      \
                        BODY;                                                   \
                    }                                                           \
        }                                                                       \
    } while (0)

/* ====================================================== sum, mean, max */

/* Shared by sum and mean: node->i[0] = dim, f[0] = scale (1 or 1/n).
 * The gradient of every input element in column (o, i) is g[o,i] * scale:
 * a broadcast of the output gradient back along the reduced dim. */
static void gx_sum_bw(gx_ctx *ctx, gx_node *nd) {
    int64_t outer, n, inner;
    gx_real *gx = gx_rd_bw_begin(ctx, nd, &outer, &n, &inner);
    if (!gx) return;
    const gx_real *g = nd->out->grad;
    const double sc = nd->f[0];
    GX_RD_MAP(outer, n, inner, g, g, gx[k] += (gx_real)(s * sc));
}

static gx_tensor *gx_sum_scaled(gx_ctx *ctx, const char *op, gx_tensor *x, int dim,
                                int keepdim, int mean) {
    int d = gx_tensor_dim(x, dim);
    int64_t shape[GX_MAX_DIMS], outer, n, inner;
    gx_split_dims(x, d, &outer, &n, &inner);
    gx_tensor *out = gx_tensor_new(ctx, gx_rd_out_shape(x, d, keepdim, shape), shape);
    double *s = gx_rd_stats(ctx, outer * inner);
    gx_rd_sum(x->data, NULL, outer, n, inner, s);
    const double sc = mean ? 1.0 / (double)n : 1.0;
    for (int64_t t = 0; t < outer * inner; t++) out->data[t] = (gx_real)(s[t] * sc);
    gx_node *nd = gx_tape_record(ctx, op, gx_sum_bw, out, 1, &x);
    if (nd) { nd->i[0] = d; nd->f[0] = sc; }
    return out;
}

gx_tensor *gx_sum(gx_ctx *ctx, gx_tensor *x, int dim, int keepdim) {
    GX_CUDA_DISPATCH(gx_on_cuda(x), gx_cuda_reduce(ctx, "gx_sum", GX_CU_SUM, x, dim, keepdim));
    return gx_sum_scaled(ctx, "gx_sum", x, dim, keepdim, 0);
}

gx_tensor *gx_mean(gx_ctx *ctx, gx_tensor *x, int dim, int keepdim) {
    GX_CUDA_DISPATCH(gx_on_cuda(x), gx_cuda_reduce(ctx, "gx_mean", GX_CU_MEAN, x, dim, keepdim));
    return gx_sum_scaled(ctx, "gx_mean", x, dim, keepdim, 1);
}

/* max backward: the gradient of each output goes to its saved argmax. */
static void gx_max_bw(gx_ctx *ctx, gx_node *nd) {
    int64_t outer, n, inner;
    gx_real *gx = gx_rd_bw_begin(ctx, nd, &outer, &n, &inner);
    if (!gx) return;
    const int64_t *arg = nd->saved;
    const gx_real *g = nd->out->grad;
    for (int64_t t = 0; t < outer * inner; t++) {
        int64_t o = t / inner, i = t % inner;
        gx[(o * n + arg[t]) * inner + i] += g[t];
    }
}

gx_tensor *gx_max(gx_ctx *ctx, gx_tensor *x, int dim, int keepdim) {
    GX_CUDA_DISPATCH(gx_on_cuda(x), gx_cuda_reduce(ctx, "gx_max", GX_CU_MAXR, x, dim, keepdim));
    int d = gx_tensor_dim(x, dim);
    int64_t shape[GX_MAX_DIMS], outer, n, inner;
    gx_split_dims(x, d, &outer, &n, &inner);
    GX_ASSERT_MSG(n > 0, "gx_max: reducing an empty dim %d", d);
    gx_tensor *out = gx_tensor_new(ctx, gx_rd_out_shape(x, d, keepdim, shape), shape);
    /* Record first: the argmax is only kept when a backward will need it. */
    gx_node *nd = gx_tape_record(ctx, "gx_max", gx_max_bw, out, 1, &x);
    int64_t *arg = NULL;
    if (nd) {
        arg = gx_ctx_alloc(ctx, (size_t)(outer * inner) * sizeof(int64_t));
        nd->saved = arg;
        nd->i[0] = d;
    }
    gx_rd_max(x->data, outer, n, inner, out->data, arg);
    return out;
}

/* ========================================================== sum_all, mean_all */

/* Whole-tensor sum in double: fixed blocks, partials added in block order,
 * so the value is the same for any thread count. */
static double gx_rd_sum_all(gx_ctx *ctx, const gx_real *x, int64_t N) {
    const int64_t nb = (N + GX_RD_BLOCK - 1) / GX_RD_BLOCK;
    if (nb <= 1) {
        double s = 0;
        GX_SIMD_SUM for (int64_t i = 0; i < N; i++) s += x[i];
        return s;
    }
    double *part = gx_rd_stats(ctx, nb);
    #pragma omp parallel for
    for (int64_t b = 0; b < nb; b++) {
        int64_t lo = b * GX_RD_BLOCK, hi = lo + GX_RD_BLOCK < N ? lo + GX_RD_BLOCK : N;
        double s = 0;
        GX_SIMD_SUM for (int64_t i = lo; i < hi; i++) s += x[i];
        part[b] = s;
    }
    double s = 0;
    for (int64_t b = 0; b < nb; b++) s += part[b];
    return s;
}

/* Shared backward: gx += g * scale everywhere (scale = 1 or 1/N). */
static void gx_sum_all_bw(gx_ctx *ctx, gx_node *nd) {
    gx_real *gx = gx_grad(ctx, nd->in[0]);
    if (!gx) return;
    const gx_real v = (gx_real)((double)nd->out->grad[0] * nd->f[0]);
    const int64_t N = nd->in[0]->numel;
    const int par = N > GX_PAR_THRESHOLD;
    #pragma omp parallel for simd if (parallel: par)
    for (int64_t i = 0; i < N; i++) gx[i] += v;
}

static gx_tensor *gx_sum_all_scaled(gx_ctx *ctx, const char *op, gx_tensor *x, int mean) {
    const double sc = mean ? 1.0 / (double)x->numel : 1.0;
    gx_tensor *out = gx_tensor_scalar(ctx, (gx_real)(gx_rd_sum_all(ctx, x->data, x->numel) * sc));
    gx_node *nd = gx_tape_record(ctx, op, gx_sum_all_bw, out, 1, &x);
    if (nd) nd->f[0] = sc;
    return out;
}

gx_tensor *gx_sum_all(gx_ctx *ctx, gx_tensor *x) {
    GX_CUDA_DISPATCH(gx_on_cuda(x), gx_cuda_sum_all(ctx, "gx_sum_all", 0, x));
    return gx_sum_all_scaled(ctx, "gx_sum_all", x, 0);
}
gx_tensor *gx_mean_all(gx_ctx *ctx, gx_tensor *x) {
    GX_CUDA_DISPATCH(gx_on_cuda(x), gx_cuda_sum_all(ctx, "gx_mean_all", 1, x));
    return gx_sum_all_scaled(ctx, "gx_mean_all", x, 1);
}

/* ====================================================== softmax family */

/* softmax backward: gx += y * (g - sum_j g y). */
static void gx_softmax_bw(gx_ctx *ctx, gx_node *nd) {
    int64_t outer, n, inner;
    gx_real *gx = gx_rd_bw_begin(ctx, nd, &outer, &n, &inner);
    if (!gx) return;
    const gx_real *y = nd->out->data, *g = nd->out->grad;
    double *dot = gx_rd_stats(ctx, outer * inner);
    gx_rd_sum(g, y, outer, n, inner, dot);
    GX_RD_MAP(outer, n, inner, dot, dot, gx[k] += (gx_real)((double)y[k] * ((double)g[k] - s)));
}

gx_tensor *gx_softmax(gx_ctx *ctx, gx_tensor *x, int dim) {
    GX_CUDA_DISPATCH(gx_on_cuda(x), gx_cuda_softmax(ctx, "gx_softmax", 0, x, dim));
    int d = gx_tensor_dim(x, dim);
    int64_t outer, n, inner;
    gx_split_dims(x, d, &outer, &n, &inner);
    gx_tensor *out = gx_tensor_like(ctx, x);
    double *lse = gx_rd_stats(ctx, outer * inner);
    gx_rd_lse(x->data, outer, n, inner, lse, out->data);
    return gx_rd_record(ctx, "gx_softmax", gx_softmax_bw, out, x, d);
}

/* log_softmax backward: gx += g - softmax * sum_j g, softmax = exp(y). */
static void gx_log_softmax_bw(gx_ctx *ctx, gx_node *nd) {
    int64_t outer, n, inner;
    gx_real *gx = gx_rd_bw_begin(ctx, nd, &outer, &n, &inner);
    if (!gx) return;
    const gx_real *y = nd->out->data, *g = nd->out->grad;
    double *gs = gx_rd_stats(ctx, outer * inner);
    gx_rd_sum(g, NULL, outer, n, inner, gs);
    GX_RD_MAP(outer, n, inner, gs, gs, gx[k] += (gx_real)((double)g[k] - exp((double)y[k]) * s));
}

gx_tensor *gx_log_softmax(gx_ctx *ctx, gx_tensor *x, int dim) {
    GX_CUDA_DISPATCH(gx_on_cuda(x), gx_cuda_softmax(ctx, "gx_log_softmax", 1, x, dim));
    int d = gx_tensor_dim(x, dim);
    int64_t outer, n, inner;
    gx_split_dims(x, d, &outer, &n, &inner);
    gx_tensor *out = gx_tensor_like(ctx, x);
    double *lse = gx_rd_stats(ctx, outer * inner);
    gx_rd_lse(x->data, outer, n, inner, lse, NULL);
    const gx_real *xd = x->data;
    gx_real *y = out->data;
    GX_RD_MAP(outer, n, inner, lse, lse, y[k] = (gx_real)((double)xd[k] - s));
    return gx_rd_record(ctx, "gx_log_softmax", gx_log_softmax_bw, out, x, d);
}

/* logsumexp backward: gx += g * exp(x - out) (the softmax). */
static void gx_logsumexp_bw(gx_ctx *ctx, gx_node *nd) {
    int64_t outer, n, inner;
    gx_real *gx = gx_rd_bw_begin(ctx, nd, &outer, &n, &inner);
    if (!gx) return;
    const gx_real *xd = nd->in[0]->data, *g = nd->out->grad, *lse = nd->out->data;
    GX_RD_MAP(outer, n, inner, g, lse, gx[k] += (gx_real)(s * exp((double)xd[k] - s2)));
}

gx_tensor *gx_logsumexp(gx_ctx *ctx, gx_tensor *x, int dim, int keepdim) {
    GX_CUDA_DISPATCH(gx_on_cuda(x), gx_cuda_logsumexp(ctx, x, dim, keepdim));
    int d = gx_tensor_dim(x, dim);
    int64_t shape[GX_MAX_DIMS], outer, n, inner;
    gx_split_dims(x, d, &outer, &n, &inner);
    gx_tensor *out = gx_tensor_new(ctx, gx_rd_out_shape(x, d, keepdim, shape), shape);
    double *lse = gx_rd_stats(ctx, outer * inner);
    gx_rd_lse(x->data, outer, n, inner, lse, NULL);
    for (int64_t t = 0; t < outer * inner; t++) out->data[t] = (gx_real)lse[t];
    return gx_rd_record(ctx, "gx_logsumexp", gx_logsumexp_bw, out, x, d);
}

/* ======================================================== cross-entropy */

/* Saved state of cross-entropy: per-sample lse and a copy of the targets
 * (the caller's array need not outlive the forward). */
typedef struct { double *lse; int32_t *target; } gx_ce_saved;

/* Targets must be valid class indices; checked once per call. */
static int32_t *gx_rd_copy_index(gx_ctx *ctx, const char *op, const int32_t *idx,
                                 int64_t B, int64_t K) {
    int32_t *c = gx_ctx_alloc(ctx, (size_t)B * sizeof(int32_t));
    for (int64_t b = 0; b < B; b++) {
        GX_ASSERT_MSG(idx[b] >= 0 && idx[b] < K, "%s: index[%lld] = %d outside [0, %lld)", op,
                      (long long)b, idx[b], (long long)K);
        c[b] = idx[b];
    }
    return c;
}

/* d loss_b / d x[b,k] = softmax_k - q_k with q = (1-ls) onehot(t) + ls/K:
 * the fused form, so no [B,K] log-probabilities are ever stored; the
 * softmax is recomputed from the saved per-row lse. */
static void gx_cross_entropy_bw(gx_ctx *ctx, gx_node *nd) {
    gx_tensor *x = nd->in[0];
    gx_real *gx = gx_grad(ctx, x);
    if (!gx) return;
    const gx_ce_saved *sv = nd->saved;
    const int64_t B = x->shape[0], K = x->shape[1];
    const double ls = nd->f[0], u = ls / (double)K;
    const gx_real *g = nd->out->grad;
    const int par = B * K > GX_PAR_THRESHOLD / 8;
    #pragma omp parallel for if (par)
    for (int64_t b = 0; b < B; b++) {
        const gx_real *xr = x->data + b * K;
        gx_real *gr = gx + b * K;
        const double gb = g[b], l = sv->lse[b];
        for (int64_t k = 0; k < K; k++) gr[k] += (gx_real)(gb * (exp((double)xr[k] - l) - u));
        gr[sv->target[b]] -= (gx_real)(gb * (1.0 - ls));
    }
}

gx_tensor *gx_cross_entropy(gx_ctx *ctx, gx_tensor *logits, const int32_t *target,
                            double label_smoothing) {
    char sb[96];
    GX_ASSERT_MSG(logits->ndim == 2, "gx_cross_entropy: logits must be [B,K], got %s",
                  gx_tensor_shape_str(logits, sb, sizeof sb));
    GX_ASSERT_MSG(label_smoothing >= 0 && label_smoothing < 1,
                  "gx_cross_entropy: label_smoothing %g outside [0,1)", label_smoothing);
    GX_CUDA_DISPATCH(gx_on_cuda(logits), gx_cuda_cross_entropy(ctx, logits, target, label_smoothing));
    const int64_t B = logits->shape[0], K = logits->shape[1];
    gx_ce_saved *sv = gx_ctx_alloc(ctx, sizeof *sv);
    sv->target = gx_rd_copy_index(ctx, "gx_cross_entropy", target, B, K);
    sv->lse = gx_rd_stats(ctx, B);
    gx_rd_lse(logits->data, B, K, 1, sv->lse, NULL);
    double *rowsum = gx_rd_stats(ctx, B);
    gx_rd_sum(logits->data, NULL, B, K, 1, rowsum);
    gx_tensor *out = gx_tensor_new(ctx, 1, GX_SHAPE(B));
    const double ls = label_smoothing;
    for (int64_t b = 0; b < B; b++) {
        double xt = logits->data[b * K + sv->target[b]];
        out->data[b] = (gx_real)(sv->lse[b] - (1.0 - ls) * xt - ls / (double)K * rowsum[b]);
    }
    gx_node *nd = gx_tape_record(ctx, "gx_cross_entropy", gx_cross_entropy_bw, out, 1, &logits);
    if (nd) { nd->saved = sv; nd->f[0] = ls; }
    return out;
}

/* ========================================================= gather, one-hot */

static void gx_gather_bw(gx_ctx *ctx, gx_node *nd) {
    gx_tensor *x = nd->in[0];
    gx_real *gx = gx_grad(ctx, x);
    if (!gx) return;
    const int32_t *idx = nd->saved;
    const int64_t B = x->shape[0], K = x->shape[1];
    for (int64_t b = 0; b < B; b++) gx[b * K + idx[b]] += nd->out->grad[b];
}

gx_tensor *gx_gather(gx_ctx *ctx, gx_tensor *x, const int32_t *idx) {
    char sb[96];
    GX_ASSERT_MSG(x->ndim == 2, "gx_gather: x must be [B,K], got %s", gx_tensor_shape_str(x, sb, sizeof sb));
    GX_CUDA_DISPATCH(gx_on_cuda(x), gx_cuda_gather(ctx, x, idx));
    const int64_t B = x->shape[0], K = x->shape[1];
    int32_t *ic = gx_rd_copy_index(ctx, "gx_gather", idx, B, K);
    gx_tensor *out = gx_tensor_new(ctx, 1, GX_SHAPE(B));
    for (int64_t b = 0; b < B; b++) out->data[b] = x->data[b * K + ic[b]];
    gx_node *nd = gx_tape_record(ctx, "gx_gather", gx_gather_bw, out, 1, &x);
    if (nd) nd->saved = ic;
    return out;
}

/* A constant: never recorded, so never requires grad. Out-of-range indices
 * are programmer errors (labels are validated when a dataset is loaded). */
gx_tensor *gx_one_hot(gx_ctx *ctx, const int32_t *idx, int64_t B, int64_t K) {
    GX_ASSERT_MSG(B >= 0 && K > 0, "gx_one_hot: bad shape [%lld,%lld]", (long long)B, (long long)K);
    GX_CUDA_DISPATCH(ctx->cuda != NULL, gx_cuda_one_hot(ctx, idx, B, K));
    gx_tensor *out = gx_tensor_zeros(ctx, 2, GX_SHAPE(B, K));
    for (int64_t b = 0; b < B; b++) {
        GX_ASSERT_MSG(idx[b] >= 0 && idx[b] < K, "gx_one_hot: index[%lld] = %d outside [0, %lld)",
                      (long long)b, idx[b], (long long)K);
        out->data[b * K + idx[b]] = 1;
    }
    return out;
}

/* ======================================================== L2 normalise */

/* y = x / d with d = max(||x||, eps) per (outer, inner) column.
 * Where ||x|| >= eps: gx += (g - y (y.g)) / d (the norm's Jacobian);
 * where ||x|| <  eps: d is the constant eps and gx += g / eps. The boundary
 * ||x|| == eps takes the first branch, like PyTorch's clamp_min backward. */
static void gx_l2_normalize_bw(gx_ctx *ctx, gx_node *nd) {
    int64_t outer, n, inner;
    gx_real *gx = gx_rd_bw_begin(ctx, nd, &outer, &n, &inner);
    if (!gx) return;
    const gx_real *y = nd->out->data, *g = nd->out->grad;
    const double *norm = nd->saved, eps = nd->f[0];
    const int64_t m = outer * inner;
    double *inv = gx_rd_stats(ctx, m), *dot = gx_rd_stats(ctx, m);
    gx_rd_sum(g, y, outer, n, inner, dot);
    for (int64_t t = 0; t < m; t++) {
        int clamped = norm[t] < eps;
        inv[t] = 1.0 / (clamped ? eps : norm[t]);
        dot[t] = clamped ? 0.0 : dot[t] * inv[t];      /* (y.g)/d, or no norm path */
    }
    GX_RD_MAP(outer, n, inner, inv, dot, gx[k] += (gx_real)((double)g[k] * s - (double)y[k] * s2));
}

gx_tensor *gx_l2_normalize(gx_ctx *ctx, gx_tensor *x, int dim, double eps) {
    GX_ASSERT_MSG(eps > 0, "gx_l2_normalize: eps %g must be > 0", eps);
    GX_CUDA_DISPATCH(gx_on_cuda(x), gx_cuda_l2_normalize(ctx, x, dim, eps));
    int d = gx_tensor_dim(x, dim);
    int64_t outer, n, inner;
    gx_split_dims(x, d, &outer, &n, &inner);
    const int64_t m = outer * inner;
    /* norm is kept for the backward (it decides the clamped branch); inv is
     * the per-column multiplier, so the map does one multiply per element. */
    double *norm = gx_rd_stats(ctx, m), *inv = gx_rd_stats(ctx, m);
    gx_rd_sum(x->data, x->data, outer, n, inner, norm);
    for (int64_t t = 0; t < m; t++) {
        norm[t] = sqrt(norm[t]);
        inv[t] = 1.0 / (norm[t] > eps ? norm[t] : eps);
    }
    gx_tensor *out = gx_tensor_like(ctx, x);
    const gx_real *xd = x->data;
    gx_real *y = out->data;
    GX_RD_MAP(outer, n, inner, inv, inv, y[k] = (gx_real)((double)xd[k] * s));
    gx_node *nd = gx_tape_record(ctx, "gx_l2_normalize", gx_l2_normalize_bw, out, 1, &x);
    if (nd) { nd->saved = norm; nd->i[0] = d; nd->f[0] = eps; }
    return out;
}
