/*
 * gx_pool.c — pooling and resampling of [B, C, H, W] tensors: adaptive
 * average pooling, bilinear resize (align_corners = false), nearest x2
 * upsampling and max pooling, each forward beside its backward.
 *
 * All three act on each of the B*C planes independently with the same
 * geometry, so the geometry (bin bounds, source indices and weights) is
 * computed once per call into small arena tables, and the planes are the
 * unit of parallel work. A plane's backward is done by one thread in a fixed
 * order, so the scatter-adds in backward never race and results do not
 * depend on the thread count.
 *
 * The index rules follow PyTorch exactly (the parity tests pin them):
 *   adaptive pool: bin i covers [floor(i*H/oh), ceil((i+1)*H/oh)); bins may
 *     overlap (7 -> 3) or repeat a row (5 -> 8, "upsampling");
 *   bilinear: src = (dst + 0.5) * in/out - 0.5, clamped below at 0;
 *     i0 = floor(src) (at most in-1), i1 = min(i0+1, in-1), weight of i1 is
 *     src - i0 (torch's area_pixel_compute_source_index with the size, not a
 *     scale factor, giving the ratio);
 *   nearest x2: out[y, x] = in[y/2, x/2];
 *   max pool: window i starts at i*s - p (padding is -inf); the first
 *     maximum in row-major order wins (strict >, NaN wins).
 * Weights are computed in double and each output is accumulated in double.
 */
#include "gx_impl.h"
#if GX_CUDA_ON
#include "cuda/gx_cuda_ops_shape.h"
#endif

#include <math.h>
#include <omp.h>

/* Plane-parallel loops get a team when the whole tensor is big enough. */
#define GX_POOL_PAR(n) ((n) > GX_PAR_THRESHOLD)

static void gx_pool_check4(const gx_tensor *x, const char *op, int64_t oh, int64_t ow) {
    char buf[96];
    GX_ASSERT_MSG(x->ndim == 4, "%s: x must be [B, C, H, W], got %s", op,
                  gx_tensor_shape_str(x, buf, sizeof buf));
    GX_ASSERT_MSG(oh > 0 && ow > 0 && x->shape[2] > 0 && x->shape[3] > 0,
                  "%s: bad sizes: x %s, output %lldx%lld", op,
                  gx_tensor_shape_str(x, buf, sizeof buf), (long long)oh, (long long)ow);
}

/* ====================================================== adaptive avg pool */

/* lo[i], hi[i]: the input range of output cell i along an axis of size n. */
static void gx_adaptive_bins(int64_t n, int64_t on, int64_t *lo, int64_t *hi) {
    for (int64_t i = 0; i < on; i++) {
        lo[i] = (i * n) / on;                       /* floor */
        hi[i] = ((i + 1) * n + on - 1) / on;        /* ceil */
    }
}

/* Tables for one call: [ylo | yhi | xlo | xhi], oh+oh+ow+ow entries. */
static int64_t *gx_adaptive_tables(gx_ctx *ctx, int64_t H, int64_t W, int64_t oh, int64_t ow) {
    int64_t *t = gx_ctx_alloc(ctx, (size_t)(2 * oh + 2 * ow) * sizeof(int64_t));
    gx_adaptive_bins(H, oh, t, t + oh);
    gx_adaptive_bins(W, ow, t + 2 * oh, t + 2 * oh + ow);
    return t;
}

/* One plane: out[i, j] = mean of in over the bin (i, j). */
static void gx_adaptive_plane_fwd(const gx_real *in, gx_real *out, int64_t W, int64_t oh,
                                  int64_t ow, const int64_t *t) {
    const int64_t *ylo = t, *yhi = t + oh, *xlo = t + 2 * oh, *xhi = t + 2 * oh + ow;
    for (int64_t i = 0; i < oh; i++)
        for (int64_t j = 0; j < ow; j++) {
            double s = 0;
            for (int64_t y = ylo[i]; y < yhi[i]; y++)
                for (int64_t x = xlo[j]; x < xhi[j]; x++) s += in[y * W + x];
            out[i * ow + j] = (gx_real)(s / (double)((yhi[i] - ylo[i]) * (xhi[j] - xlo[j])));
        }
}

/* One plane of the backward: each cell spreads g / count over its bin. */
static void gx_adaptive_plane_bwd(gx_real *gin, const gx_real *gout, int64_t W, int64_t oh,
                                  int64_t ow, const int64_t *t) {
    const int64_t *ylo = t, *yhi = t + oh, *xlo = t + 2 * oh, *xhi = t + 2 * oh + ow;
    for (int64_t i = 0; i < oh; i++)
        for (int64_t j = 0; j < ow; j++) {
            const gx_real g = (gx_real)(gout[i * ow + j] /
                                        (double)((yhi[i] - ylo[i]) * (xhi[j] - xlo[j])));
            for (int64_t y = ylo[i]; y < yhi[i]; y++)
                for (int64_t x = xlo[j]; x < xhi[j]; x++) gin[y * W + x] += g;
        }
}

/* node: saved = the bin tables. */
static void gx_adaptive_avg_pool2d_backward(gx_ctx *ctx, gx_node *n) {
    gx_tensor *x = n->in[0];
    gx_real *gx = gx_grad(ctx, x);
    if (!gx) return;
    const int64_t P = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t oh = n->out->shape[2], ow = n->out->shape[3];
    const int64_t *t = n->saved;
    #pragma omp parallel for if (GX_POOL_PAR(x->numel))
    for (int64_t p = 0; p < P; p++)
        gx_adaptive_plane_bwd(gx + p * H * W, n->out->grad + p * oh * ow, W, oh, ow, t);
}

gx_tensor *gx_adaptive_avg_pool2d(gx_ctx *ctx, gx_tensor *x, int64_t oh, int64_t ow) {
    gx_pool_check4(x, "gx_adaptive_avg_pool2d", oh, ow);
    GX_CUDA_DISPATCH(gx_on_cuda(x), gx_cuda_adaptive_avg_pool2d(ctx, x, oh, ow));
    const int64_t P = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t *t = gx_adaptive_tables(ctx, H, W, oh, ow);
    gx_tensor *out = gx_tensor_new(ctx, 4, GX_SHAPE(x->shape[0], x->shape[1], oh, ow));
    #pragma omp parallel for if (GX_POOL_PAR(x->numel))
    for (int64_t p = 0; p < P; p++)
        gx_adaptive_plane_fwd(x->data + p * H * W, out->data + p * oh * ow, W, oh, ow, t);
    gx_node *n = gx_tape_record(ctx, "adaptive_avg_pool2d", gx_adaptive_avg_pool2d_backward,
                                out, 1, &x);
    if (n) n->saved = t;
    return out;
}

/* ====================================================== bilinear resize */

/* Source taps of one output coordinate: value = w0 * in[i0] + w1 * in[i1]. */
typedef struct { int64_t i0, i1; double w0, w1; } gx_lerp_tap;

/* PyTorch's align_corners=false rule for an axis resized from n to on. */
static void gx_lerp_taps(int64_t n, int64_t on, gx_lerp_tap *tap) {
    const double scale = (double)n / (double)on;
    for (int64_t d = 0; d < on; d++) {
        double src = ((double)d + 0.5) * scale - 0.5;
        if (src < 0) src = 0;
        int64_t i0 = (int64_t)floor(src);
        if (i0 > n - 1) i0 = n - 1;
        double l1 = src - (double)i0;
        if (l1 > 1) l1 = 1;
        tap[d].i0 = i0;
        tap[d].i1 = i0 < n - 1 ? i0 + 1 : i0;
        tap[d].w1 = l1;
        tap[d].w0 = 1.0 - l1;
    }
}

/* The resize is separable, so each plane is done in two passes through a
 * double scratch of [H, ow]: horizontal taps on every input row (H*ow
 * gathers instead of 4*oh*ow), then a vertical blend of two scratch rows,
 * which is a contiguous loop the compiler vectorises. The scratch keeps
 * double precision, so the result equals the direct 4-tap formula. */
static void gx_bilinear_plane_fwd(const gx_real *in, gx_real *out, double *tmp, int64_t H,
                                  int64_t W, int64_t oh, int64_t ow, const gx_lerp_tap *ty,
                                  const gx_lerp_tap *tx) {
    for (int64_t y = 0; y < H; y++) {
        const gx_real *r = in + y * W;
        double *t = tmp + y * ow;
        for (int64_t j = 0; j < ow; j++) t[j] = tx[j].w0 * r[tx[j].i0] + tx[j].w1 * r[tx[j].i1];
    }
    for (int64_t i = 0; i < oh; i++) {
        const double *t0 = tmp + ty[i].i0 * ow, *t1 = tmp + ty[i].i1 * ow;
        const double a0 = ty[i].w0, a1 = ty[i].w1;
        gx_real *o = out + i * ow;
        for (int64_t j = 0; j < ow; j++) o[j] = (gx_real)(a0 * t0[j] + a1 * t1[j]);
    }
}

/* Transposed passes: vertical scatter of the output gradient into the
 * [H, ow] scratch (contiguous), then horizontal scatter into the input. */
static void gx_bilinear_plane_bwd(gx_real *gin, const gx_real *gout, double *tmp, int64_t H,
                                  int64_t W, int64_t oh, int64_t ow, const gx_lerp_tap *ty,
                                  const gx_lerp_tap *tx) {
    memset(tmp, 0, (size_t)(H * ow) * sizeof(double));
    for (int64_t i = 0; i < oh; i++) {
        double *t0 = tmp + ty[i].i0 * ow, *t1 = tmp + ty[i].i1 * ow;
        const double a0 = ty[i].w0, a1 = ty[i].w1;
        const gx_real *g = gout + i * ow;
        for (int64_t j = 0; j < ow; j++) { t0[j] += a0 * g[j]; t1[j] += a1 * g[j]; }
    }
    for (int64_t y = 0; y < H; y++) {
        const double *t = tmp + y * ow;
        gx_real *r = gin + y * W;
        for (int64_t j = 0; j < ow; j++) {
            r[tx[j].i0] += (gx_real)(tx[j].w0 * t[j]);
            r[tx[j].i1] += (gx_real)(tx[j].w1 * t[j]);
        }
    }
}

/* One [H, ow] double scratch per thread, from the arena (allocated before
 * the parallel region: the arena is not thread-safe). */
static double *gx_bilinear_scratch(gx_ctx *ctx, int64_t H, int64_t ow) {
    return gx_ctx_alloc(ctx, (size_t)omp_get_max_threads() * (size_t)(H * ow) * sizeof(double));
}

/* node: saved = oh row taps followed by ow column taps. */
static void gx_resize_bilinear_backward(gx_ctx *ctx, gx_node *n) {
    gx_tensor *x = n->in[0];
    gx_real *gx = gx_grad(ctx, x);
    if (!gx) return;
    const int64_t P = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t oh = n->out->shape[2], ow = n->out->shape[3];
    const gx_lerp_tap *ty = n->saved, *tx = ty + oh;
    double *tmp = gx_bilinear_scratch(ctx, H, ow);
    #pragma omp parallel for if (GX_POOL_PAR(n->out->numel))
    for (int64_t p = 0; p < P; p++)
        gx_bilinear_plane_bwd(gx + p * H * W, n->out->grad + p * oh * ow,
                              tmp + (int64_t)omp_get_thread_num() * H * ow, H, W, oh, ow, ty, tx);
}

gx_tensor *gx_resize_bilinear(gx_ctx *ctx, gx_tensor *x, int64_t oh, int64_t ow) {
    gx_pool_check4(x, "gx_resize_bilinear", oh, ow);
    GX_CUDA_DISPATCH(gx_on_cuda(x), gx_cuda_resize_bilinear(ctx, x, oh, ow));
    const int64_t P = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    gx_lerp_tap *ty = gx_ctx_alloc(ctx, (size_t)(oh + ow) * sizeof *ty), *tx = ty + oh;
    gx_lerp_taps(H, oh, ty);
    gx_lerp_taps(W, ow, tx);
    gx_tensor *out = gx_tensor_new(ctx, 4, GX_SHAPE(x->shape[0], x->shape[1], oh, ow));
    double *tmp = gx_bilinear_scratch(ctx, H, ow);
    #pragma omp parallel for if (GX_POOL_PAR(out->numel))
    for (int64_t p = 0; p < P; p++)
        gx_bilinear_plane_fwd(x->data + p * H * W, out->data + p * oh * ow,
                              tmp + (int64_t)omp_get_thread_num() * H * ow, H, W, oh, ow, ty, tx);
    gx_node *n = gx_tape_record(ctx, "resize_bilinear", gx_resize_bilinear_backward, out, 1, &x);
    if (n) n->saved = ty;
    return out;
}

/* ====================================================== nearest x2 */

/* Backward: each input pixel receives the sum of its 2x2 output block. */
static void gx_upsample_nearest2x_backward(gx_ctx *ctx, gx_node *n) {
    gx_tensor *x = n->in[0];
    gx_real *gx = gx_grad(ctx, x);
    if (!gx) return;
    const int64_t R = x->shape[0] * x->shape[1] * x->shape[2], W = x->shape[3];
    const gx_real *go = n->out->grad;
    /* Input row r (over all planes) maps to output rows 2r and 2r+1. */
    #pragma omp parallel for if (GX_POOL_PAR(n->out->numel))
    for (int64_t r = 0; r < R; r++) {
        const gx_real *g0 = go + (2 * r) * (2 * W), *g1 = g0 + 2 * W;
        gx_real *d = gx + r * W;
        for (int64_t j = 0; j < W; j++)
            d[j] += g0[2 * j] + g0[2 * j + 1] + g1[2 * j] + g1[2 * j + 1];
    }
}

gx_tensor *gx_upsample_nearest2x(gx_ctx *ctx, gx_tensor *x) {
    gx_pool_check4(x, "gx_upsample_nearest2x", 1, 1);
    GX_CUDA_DISPATCH(gx_on_cuda(x), gx_cuda_upsample_nearest2x(ctx, x));
    const int64_t R = x->shape[0] * x->shape[1] * x->shape[2], W = x->shape[3];
    gx_tensor *out = gx_tensor_new(ctx, 4, GX_SHAPE(x->shape[0], x->shape[1],
                                                    2 * x->shape[2], 2 * W));
    #pragma omp parallel for if (GX_POOL_PAR(out->numel))
    for (int64_t r = 0; r < R; r++) {
        const gx_real *s = x->data + r * W;
        gx_real *o0 = out->data + (2 * r) * (2 * W), *o1 = o0 + 2 * W;
        for (int64_t j = 0; j < W; j++) o0[2 * j] = o0[2 * j + 1] = s[j];
        memcpy(o1, o0, (size_t)(2 * W) * sizeof(gx_real));
    }
    gx_tape_record(ctx, "upsample_nearest2x", gx_upsample_nearest2x_backward, out, 1, &x);
    return out;
}

/* ====================================================== max pool */

/* One plane: out[i, j] = max of the window, idx[i, j] = its in-plane index.
 * The scan order and the comparison (v > best, or v is NaN) are PyTorch's
 * CPU kernel's, so ties go to the first index in row-major order and the
 * routing of the gradient matches autograd exactly. */
static void gx_maxpool_plane_fwd(const gx_real *in, gx_real *out, int32_t *idx, int64_t H,
                                 int64_t W, int64_t oh, int64_t ow, int k, int s, int pad) {
    for (int64_t i = 0; i < oh; i++) {
        const int64_t y0 = i * s - pad, y1 = y0 + k < H ? y0 + k : H, ys = y0 > 0 ? y0 : 0;
        for (int64_t j = 0; j < ow; j++) {
            const int64_t x0 = j * s - pad, x1 = x0 + k < W ? x0 + k : W, xs = x0 > 0 ? x0 : 0;
            int64_t best_i = ys * W + xs;
            gx_real best = -INFINITY;
            for (int64_t y = ys; y < y1; y++)
                for (int64_t x = xs; x < x1; x++) {
                    const gx_real v = in[y * W + x];
                    if (v > best || isnan(v)) { best = v; best_i = y * W + x; }
                }
            out[i * ow + j] = best;
            idx[i * ow + j] = (int32_t)best_i;
        }
    }
}

/* The window maximum as the scan above takes it: b, then v replaces it when
 * greater or NaN. Over a split of the scan into an earlier part (b) and a
 * later part (v) the same rule combines the parts' results exactly as the
 * scan would (the first maximum, or the last NaN), which is what lets the
 * values-only path below fold rows first and columns second. */
static inline gx_real gx_maxpool_take(gx_real b, gx_real v) {
#ifdef GX_F64
    uint64_t ub, uv, m = 0;
#else
    uint32_t ub, uv, m = 0;
#endif
    /* A select on the bits: compilers turn the plain ?: into the very
     * branch this path exists to avoid. */
    memcpy(&ub, &b, sizeof b);
    memcpy(&uv, &v, sizeof v);
    m -= (unsigned)((v > b) | (v != v));
    ub = (uv & m) | (ub & ~m);
    memcpy(&b, &ub, sizeof b);
    return b;
}

/* One window row's maxima for output columns [j0, j0 + nj) of row y into
 * dst: the row's stretch, with -inf where the window hangs over the edge (a
 * -inf never replaces anything, so padding equals clipping), is split into
 * its s phases, so that tap dx of every window is the contiguous run
 * phase[dx % s][dx / s ..]; the taps fold in scan order, one vector loop
 * each. buf holds (nj - 1) * s + k + s values. */
static void gx_maxpool_row(const gx_real *in, int64_t W, int64_t j0, int64_t nj, int k, int s, int pad,
                           gx_real *buf, gx_real *dst) {
    const int64_t span = (nj - 1) * s + k, pl = span / s + 1;
    gx_row_phases(in, W, j0 * s - pad, span, s, -INFINITY, buf, pl);
    for (int64_t jj = 0; jj < nj; jj++) dst[jj] = -INFINITY;
    for (int dx = 0; dx < k; dx++) {
        const gx_real *ph = buf + (dx % s) * pl + dx / s;
        #pragma omp simd
        for (int64_t jj = 0; jj < nj; jj++) dst[jj] = gx_maxpool_take(dst[jj], ph[jj]);
    }
}

/* One plane's values without the argmax table, for forwards that record
 * nothing (inference): each window row's maximum (contiguous in the scan),
 * then those in row order, so every output is bit for bit the scan's
 * (signed zeros and NaNs included). Why: the scan's data-dependent branch
 * was 6% of a ResNet-18 predict at batch 32 (perf, 2026-11-25); here every
 * fold is a branch-free loop over output columns. Windows wider than the
 * buffers allow take the scan (no one pools that wide). */
#define GX_MAXPOOL_BUF 1024
static void gx_maxpool_plane_values(const gx_real *in, gx_real *out, int64_t H, int64_t W, int64_t oh,
                                    int64_t ow, int k, int s, int pad) {
    gx_real buf[GX_MAXPOOL_BUF], acc[GX_MAXPOOL_BUF / 2], row[GX_MAXPOOL_BUF / 2];
    const int64_t cols = (GX_MAXPOOL_BUF - k - s) / s + 1;
    const int64_t ch = cols < GX_MAXPOOL_BUF / 2 ? cols : GX_MAXPOOL_BUF / 2;
    for (int64_t i = 0; i < oh; i++) {
        const int64_t y0 = i * s - pad, y1 = y0 + k < H ? y0 + k : H, ys = y0 > 0 ? y0 : 0;
        for (int64_t j0 = 0; j0 < ow; j0 += ch) {
            const int64_t nj = ow - j0 < ch ? ow - j0 : ch;
            for (int64_t y = ys; y < y1; y++) {
                gx_maxpool_row(in + y * W, W, j0, nj, k, s, pad, buf, y == ys ? acc : row);
                if (y == ys) continue;
                #pragma omp simd
                for (int64_t jj = 0; jj < nj; jj++) acc[jj] = gx_maxpool_take(acc[jj], row[jj]);
            }
            memcpy(out + i * ow + j0, acc, (size_t)nj * sizeof(gx_real));
        }
    }
}

/* node: saved = the int32 argmax table, one entry per output element. The
 * scatter of a plane stays in one thread (windows overlap when s < k). */
static void gx_max_pool2d_backward(gx_ctx *ctx, gx_node *n) {
    gx_tensor *x = n->in[0];
    gx_real *gx = gx_grad(ctx, x);
    if (!gx) return;
    const int64_t P = x->shape[0] * x->shape[1], HW = x->shape[2] * x->shape[3];
    const int64_t OHW = n->out->shape[2] * n->out->shape[3];
    const int32_t *idx = n->saved;
    const gx_real *go = n->out->grad;
    #pragma omp parallel for if (GX_POOL_PAR(x->numel))
    for (int64_t p = 0; p < P; p++) {
        gx_real *d = gx + p * HW;
        for (int64_t o = 0; o < OHW; o++) d[idx[p * OHW + o]] += go[p * OHW + o];
    }
}

gx_tensor *gx_max_pool2d(gx_ctx *ctx, gx_tensor *x, int kernel, int stride, int padding) {
    char buf[96];
    GX_ASSERT_MSG(x->ndim == 4, "gx_max_pool2d: x must be [B, C, H, W], got %s",
                  gx_tensor_shape_str(x, buf, sizeof buf));
    GX_ASSERT_MSG(kernel >= 1 && stride >= 1 && padding >= 0 && 2 * padding <= kernel,
                  "gx_max_pool2d: bad kernel %d, stride %d, padding %d (need padding <= k/2)",
                  kernel, stride, padding);
    const int64_t P = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    GX_ASSERT_MSG(H + 2 * padding >= kernel && W + 2 * padding >= kernel && H * W < INT32_MAX,
                  "gx_max_pool2d: input %s too small for kernel %d (padding %d)",
                  gx_tensor_shape_str(x, buf, sizeof buf), kernel, padding);
    GX_CUDA_DISPATCH(gx_on_cuda(x), gx_cuda_max_pool2d(ctx, x, kernel, stride, padding));
    const int64_t oh = (H + 2 * padding - kernel) / stride + 1;
    const int64_t ow = (W + 2 * padding - kernel) / stride + 1;
    gx_tensor *out = gx_tensor_new(ctx, 4, GX_SHAPE(x->shape[0], x->shape[1], oh, ow));
    if ((!ctx->grad_enabled || !x->requires_grad) && kernel + 2 * stride <= GX_MAXPOOL_BUF / 2) {
        #pragma omp parallel for if (GX_POOL_PAR(x->numel))
        for (int64_t p = 0; p < P; p++)
            gx_maxpool_plane_values(x->data + p * H * W, out->data + p * oh * ow, H, W, oh, ow, kernel, stride,
                                    padding);
        return out;
    }
    int32_t *idx = gx_ctx_alloc(ctx, (size_t)out->numel * sizeof(int32_t));
    #pragma omp parallel for if (GX_POOL_PAR(x->numel))
    for (int64_t p = 0; p < P; p++)
        gx_maxpool_plane_fwd(x->data + p * H * W, out->data + p * oh * ow, idx + p * oh * ow,
                             H, W, oh, ow, kernel, stride, padding);
    gx_node *n = gx_tape_record(ctx, "max_pool2d", gx_max_pool2d_backward, out, 1, &x);
    if (n) n->saved = idx;
    return out;
}
