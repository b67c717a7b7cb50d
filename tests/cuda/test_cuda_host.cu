/*
 * test_cuda_host.cu — the CUDA kernels' per-element bodies
 * (kernels/cuda/gx_cuda_body.cuh, __host__ __device__) run on the CPU, over
 * every index, against the engine's CPU ops: the index logic of the kernels
 * (broadcast strides, the reduction split, argmax, bins, taps and their
 * inverse windows, im2col/col2im, the scan's lane map and per-step math,
 * Sinkhorn's rows) is
 * checked on machines without a GPU. Part of make test-cuda; needs nvcc to
 * build, no GPU to run.
 *
 * Each kernel is emulated the way it is launched: a loop over the grid-stride
 * index calling the same body; GEMMs (cuBLAS on the GPU) are naive loops
 * here, and warp/block sums are plain sums. What this cannot check is listed
 * in kernels/cuda/README.md.
 */
#include "cuda_test_util.h"
#include "../../kernels/cuda/gx_cuda_body.cuh"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

typedef struct {
    gx_ctx ctx;
    gx_rng rng;
    const char *group;
    int checks, fails;
} hh;

static gx_tensor *leaf(hh *h, int nd, const int64_t *shape, double lo, double hi) {
    return ctu_leaf(&h->ctx, &h->rng, nd, shape, lo, hi);
}
static float *rnd(hh *h, int64_t n) { return ctu_rnd(&h->ctx, &h->rng, n); }
static float *zeros(hh *h, int64_t n) {
    float *z = (float *)gx_ctx_alloc(&h->ctx, (size_t)(n > 0 ? n : 1) * sizeof(float));
    memset(z, 0, (size_t)n * sizeof(float));
    return z;
}

static void cmp(hh *h, const char *what, const float *got, const float *want, int64_t n, double atol,
                double rtol) {
    h->checks++;
    int64_t worst, bad = ctu_count_bad(got, want, n, atol, rtol, 0, &worst);
    if (bad) {
        printf("FAIL %s %s: %lld of %lld differ; worst [%lld] body %.9g cpu %.9g\n", h->group, what,
               (long long)bad, (long long)n, (long long)worst, got[worst], want[worst]);
        h->fails++;
    }
}

#define TOL 1e-6

/* ---------------------------------------------------------------- elem */

static void t_unary(hh *h) {
    const ctu_unary_case *U = ctu_unary;
    const int64_t shape[2] = { 17, 23 };
    for (int k = 0; k < CTU_NUNARY; k++) {
        gx_tensor *x = leaf(h, 2, shape, U[k].lo, U[k].hi);
        gx_tensor *y = U[k].f(&h->ctx, x);
        float *g = rnd(h, y->numel);
        gx_backward(&h->ctx, y, g);
        float *yb = zeros(h, y->numel), *gb = zeros(h, y->numel);
        for (int64_t i = 0; i < x->numel; i++) yb[i] = (float)gx_cu_uf(U[k].op, x->data[i], U[k].p0, U[k].p1);
        for (int64_t i = 0; i < x->numel; i++)
            gb[i] += (float)((double)g[i] * gx_cu_ud(U[k].op, x->data[i], yb[i], U[k].p0, U[k].p1));
        char what[48];
        snprintf(what, sizeof what, "unary %d forward", U[k].op);
        /* Same code; TOL only for FMA contraction in a -march=native CPU build. */
        cmp(h, what, yb, y->data, y->numel, TOL, TOL);
        snprintf(what, sizeof what, "unary %d backward", U[k].op);
        cmp(h, what, gb, x->grad, x->numel, TOL, TOL);
        gx_ctx_reset(&h->ctx);
    }
}

/* gx_cu_reduce_broadcast_add's two kernels: one thread per target, or one
 * block (T threads) per target with partial sums at stride T. */
static void emu_rb(float *acc, int nt, const int64_t *to, const float *g, int nf, const int64_t *from,
                   int block_variant) {
    gx_cu_rb r;
    if (!gx_cu_rb_make(&r, nt, to, nf, from)) return;
    for (int64_t e = 0; e < r.n_kept; e++) {
        if (!block_variant) { acc[e] += (float)gx_cu_rb_sum(r, g, e, 0, 1); continue; }
        double s = 0;
        for (int t = 0; t < 64; t++) s += gx_cu_rb_sum(r, g, e, t, 64);
        acc[e] += (float)s;
    }
}

static void t_binary(hh *h) {
    const ctu_binary_case *Bn = ctu_binary;
    static const struct { int na, nb; int64_t a[4], b[4]; } S[] = {
        { 3, 3, { 2, 3, 4 }, { 2, 3, 4 } }, { 3, 1, { 5, 3, 70 }, { 70 } }, { 4, 3, { 2, 3, 5, 5 }, { 3, 1, 1 } },
        { 1, 3, { 1 }, { 2, 3, 4 } }, { 3, 3, { 2, 1, 4 }, { 1, 3, 1 } }, { 2, 2, { 3000, 3 }, { 1, 3 } },
        { 4, 2, { 2, 3, 4, 5 }, { 4, 1 } },
    };
    char what[64];
    for (int k = 0; k < CTU_NBINARY; k++)
        for (size_t c = 0; c < sizeof S / sizeof *S; c++)
            for (int bv = 0; bv < 2; bv++) {
                gx_tensor *a = leaf(h, S[c].na, S[c].a, -2, 2), *b = leaf(h, S[c].nb, S[c].b, 0.5, 2);
                if (Bn[k].op == GX_CU_MAX) ctu_quantise_for_max(a, b);
                gx_tensor *y = Bn[k].f(&h->ctx, a, b);
                float *g = rnd(h, y->numel);
                gx_backward(&h->ctx, y, g);
                gx_cu_bc bc = gx_cu_bc_make(a->ndim, a->shape, b->ndim, b->shape, y->ndim, y->shape);
                float *yb = zeros(h, y->numel), *t = zeros(h, y->numel);
                float *ga = zeros(h, a->numel), *gb = zeros(h, b->numel);
                for (int64_t i = 0; i < y->numel; i++) yb[i] = gx_cu_binary_at(Bn[k].op, bc, a->data, b->data, i);
                for (int w = 0; w < 2; w++) {
                    for (int64_t i = 0; i < y->numel; i++)
                        t[i] = gx_cu_binary_term_at(Bn[k].op, w, bc, a->data, b->data, yb, g, i);
                    if (w) emu_rb(gb, b->ndim, b->shape, t, y->ndim, y->shape, bv);
                    else emu_rb(ga, a->ndim, a->shape, t, y->ndim, y->shape, bv);
                }
                snprintf(what, sizeof what, "binary %d case %zu forward", Bn[k].op, c);
                cmp(h, what, yb, y->data, y->numel, 0, 0);
                snprintf(what, sizeof what, "binary %d case %zu%s grad a", Bn[k].op, c, bv ? " (block)" : "");
                cmp(h, what, ga, a->grad, a->numel, 1e-5, 1e-5);
                snprintf(what, sizeof what, "binary %d case %zu%s grad b", Bn[k].op, c, bv ? " (block)" : "");
                cmp(h, what, gb, b->grad, b->numel, 1e-5, 1e-5);
                gx_ctx_reset(&h->ctx);
            }
}

/* ------------------------------------------------------ reduce and norm */

static void t_reduce(hh *h) {
    const int64_t shape[3] = { 3, 50, 7 };
    char what[48];
    for (int d = 0; d < 3; d++) {
        int64_t outer, n = shape[d], inner;
        ctu_split(shape, 3, d, &outer, &inner);
        gx_tensor *x = leaf(h, 3, shape, -2, 2);
        for (int64_t i = 0; i < x->numel; i += 5) x->data[i] = 1.75f;   /* ties for max */
        gx_tensor *ys = gx_sum(&h->ctx, x, d, 0), *ym = gx_max(&h->ctx, x, d, 0);
        float *g = rnd(h, ym->numel);
        gx_backward(&h->ctx, ym, g);
        const int64_t ncol = outer * inner;
        float *sb = zeros(h, ncol), *mb = zeros(h, ncol), *gb = zeros(h, x->numel);
        for (int64_t c = 0; c < ncol; c++) {
            double s = 0;
            for (int64_t j = 0; j < n; j++) s += x->data[gx_cu_at(c, j, n, inner)];
            sb[c] = (float)s;
            int64_t am = gx_cu_argmax(x->data, c, n, inner);
            mb[c] = x->data[gx_cu_at(c, am, n, inner)];
            gb[gx_cu_at(c, am, n, inner)] += g[c];
        }
        snprintf(what, sizeof what, "sum dim %d", d);
        cmp(h, what, sb, ys->data, ncol, 1e-6, 1e-6);
        snprintf(what, sizeof what, "max dim %d forward", d);
        cmp(h, what, mb, ym->data, ncol, 0, 0);
        snprintf(what, sizeof what, "max dim %d backward", d);
        cmp(h, what, gb, x->grad, x->numel, 0, 0);
        gx_ctx_reset(&h->ctx);
    }
    /* Batch norm's apply body, from statistics computed the CPU's way. */
    const int64_t B = 4, C = 5, S = 9, sh[4] = { 4, 5, 3, 3 }, cs[1] = { 5 };
    gx_tensor *x = leaf(h, 4, sh, -2, 3), *gm = leaf(h, 1, cs, 0.5, 1.5), *bt = leaf(h, 1, cs, -1, 1);
    gx_tensor *y = gx_batchnorm(&h->ctx, x, gm, bt, NULL, NULL, 1, 0.1, 1e-5);
    double mean[5], rstd[5];
    for (int64_t c = 0; c < C; c++) {
        double s = 0, q = 0;
        for (int64_t b = 0; b < B; b++) for (int64_t k = 0; k < S; k++) s += x->data[(b * C + c) * S + k];
        mean[c] = s / (double)(B * S);
        for (int64_t b = 0; b < B; b++)
            for (int64_t k = 0; k < S; k++) { double d = x->data[(b * C + c) * S + k] - mean[c]; q += d * d; }
        rstd[c] = 1.0 / sqrt(q / (double)(B * S) + 1e-5);
    }
    float *yb = zeros(h, y->numel);
    for (int64_t k = 0; k < y->numel; k++) yb[k] = gx_cu_bn_apply_at(x->data, gm->data, bt->data, mean, rstd, k, C, S);
    cmp(h, "batchnorm apply", yb, y->data, y->numel, 1e-6, 1e-6);
    gx_ctx_reset(&h->ctx);
}

/* ---------------------------------------------------------------- pool */

static void t_pool(hh *h) {
    static const int64_t R[][4] = { { 7, 5, 3, 3 }, { 5, 6, 8, 9 }, { 8, 8, 1, 1 }, { 6, 7, 6, 7 },
                                    { 64, 64, 7, 7 }, { 3, 4, 32, 29 }, { 1, 1, 4, 4 } };
    char what[64];
    for (int kind = 0; kind < 2; kind++)
        for (size_t k = 0; k < sizeof R / sizeof *R; k++) {
            const int64_t H = R[k][0], W = R[k][1], oh = R[k][2], ow = R[k][3], P = 2 * 3;
            const int64_t sh[4] = { 2, 3, H, W };
            gx_tensor *x = leaf(h, 4, sh, -1, 1);
            gx_tensor *y = kind ? gx_resize_bilinear(&h->ctx, x, oh, ow) : gx_adaptive_avg_pool2d(&h->ctx, x, oh, ow);
            float *g = rnd(h, y->numel);
            gx_backward(&h->ctx, y, g);
            float *yb = zeros(h, y->numel), *gb = zeros(h, x->numel);
            for (int64_t i = 0; i < P * oh * ow; i++)
                yb[i] = kind ? gx_cu_bilin_at(x->data, i, H, W, oh, ow) : gx_cu_adapt_at(x->data, i, H, W, oh, ow);
            for (int64_t i = 0; i < P * H * W; i++)
                gb[i] = kind ? gx_cu_bilin_bw_at(g, gb[i], i, H, W, oh, ow) : gx_cu_adapt_bw_at(g, gb[i], i, H, W, oh, ow);
            snprintf(what, sizeof what, "%s %lldx%lld->%lldx%lld forward", kind ? "bilinear" : "adaptive",
                     (long long)H, (long long)W, (long long)oh, (long long)ow);
            cmp(h, what, yb, y->data, y->numel, TOL, TOL);
            snprintf(what, sizeof what, "%s %lldx%lld->%lldx%lld backward", kind ? "bilinear" : "adaptive",
                     (long long)H, (long long)W, (long long)oh, (long long)ow);
            cmp(h, what, gb, x->grad, x->numel, TOL, TOL);
            gx_ctx_reset(&h->ctx);
        }
    const int64_t sh[4] = { 2, 3, 5, 4 };
    gx_tensor *x = leaf(h, 4, sh, -1, 1);
    gx_tensor *y = gx_upsample_nearest2x(&h->ctx, x);
    float *g = rnd(h, y->numel);
    gx_backward(&h->ctx, y, g);
    float *yb = zeros(h, y->numel), *gb = zeros(h, x->numel);
    for (int64_t i = 0; i < y->numel; i++) yb[i] = gx_cu_near_at(x->data, i, 4);
    for (int64_t i = 0; i < x->numel; i++) gb[i] = gx_cu_near_bw_at(g, gb[i], i, 4);
    cmp(h, "nearest2x forward", yb, y->data, y->numel, 0, 0);
    cmp(h, "nearest2x backward", gb, x->grad, x->numel, TOL, TOL);
    gx_ctx_reset(&h->ctx);
}

/* ---------------------------------------------------------------- conv */

/* Row-major C (+)= op(A) op(B) for one group: cuBLAS's job on the GPU. */
static void naive_gemm(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                       const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++)
                s += (double)(ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]);
            C[i * ldc + j] = (float)(s + (double)beta * C[i * ldc + j]);
        }
}

/* gx_cu_conv2d_fwd / _bwd step by step, with the kernels' bodies. */
static void t_conv(hh *h) {
    static const gx_cu_conv_shape Cs[] = {
        { 2, 4, 9, 9, 6, 3, 3, 1, 1, 1 }, { 2, 4, 10, 9, 6, 3, 3, 2, 1, 2 }, { 2, 4, 8, 8, 4, 3, 3, 1, 1, 4 },
        { 3, 5, 6, 7, 8, 1, 1, 1, 0, 1 }, { 1, 3, 11, 11, 4, 5, 5, 2, 2, 1 }, { 1, 2, 7, 6, 2, 3, 3, 3, 0, 1 },
    };
    char what[48];
    for (size_t k = 0; k < sizeof Cs / sizeof *Cs; k++) {
        const gx_cu_conv_shape *c = &Cs[k];
        gx_cu_cv v = gx_cu_cv_make(c);
        const int64_t G = c->groups, cig = c->Cin / G, cog = c->Cout / G, P = v.Ho * v.Wo, CK = cig * v.kh * v.kw;
        const int64_t xs[4] = { c->B, c->Cin, c->H, c->W }, ws[4] = { c->Cout, cig, c->kh, c->kw }, bs[1] = { c->Cout };
        gx_tensor *x = leaf(h, 4, xs, -1, 1), *w = leaf(h, 4, ws, -0.5, 0.5), *b = leaf(h, 1, bs, -0.5, 0.5);
        gx_tensor *y = gx_conv2d(&h->ctx, x, w, b, c->stride, c->pad, c->groups);
        float *g = rnd(h, y->numel);
        gx_backward(&h->ctx, y, g);
        const int64_t ncol = gx_cu_conv_col_floats(c), nx = c->Cin * v.H * v.W;
        std::vector<float> col((size_t)ncol), yb((size_t)y->numel), gx((size_t)x->numel), gw((size_t)w->numel),
            gb((size_t)c->Cout);
        for (int64_t s = 0; s < c->B; s++) {
            const float *xsmp = x->data + s * nx, *gs = g + s * c->Cout * P;
            for (int64_t i = 0; i < ncol; i++) col[(size_t)i] = gx_cu_im2col_at(v, xsmp, i);
            for (int64_t q = 0; q < G; q++) {
                naive_gemm(0, 0, cog, P, CK, w->data + q * cog * CK, CK, &col[(size_t)(q * CK * P)], P, 0.0f,
                           &yb[(size_t)(s * c->Cout * P + q * cog * P)], P);
                naive_gemm(0, 1, cog, CK, P, gs + q * cog * P, P, &col[(size_t)(q * CK * P)], P, 1.0f,
                           &gw[(size_t)(q * cog * CK)], CK);
            }
            for (int64_t q = 0; q < G; q++)
                naive_gemm(1, 0, CK, P, cog, w->data + q * cog * CK, CK, gs + q * cog * P, P, 0.0f,
                           &col[(size_t)(q * CK * P)], P);
            for (int64_t i = 0; i < nx; i++) gx[(size_t)(s * nx + i)] += (float)gx_cu_col2im_at(v, col.data(), i);
        }
        for (int64_t i = 0; i < y->numel; i++) yb[(size_t)i] += b->data[(i / P) % c->Cout];
        const int64_t from[3] = { c->B, c->Cout, P }, to[2] = { c->Cout, 1 };
        emu_rb(gb.data(), 2, to, g, 3, from, 0);
        snprintf(what, sizeof what, "conv case %zu forward", k);
        cmp(h, what, yb.data(), y->data, y->numel, 1e-5, 1e-5);
        snprintf(what, sizeof what, "conv case %zu grad x", k);
        cmp(h, what, gx.data(), x->grad, x->numel, 1e-5, 1e-5);
        snprintf(what, sizeof what, "conv case %zu grad w", k);
        cmp(h, what, gw.data(), w->grad, w->numel, 1e-5, 1e-5);
        snprintf(what, sizeof what, "conv case %zu grad b", k);
        cmp(h, what, gb.data(), b->grad, c->Cout, 1e-5, 1e-5);
        gx_ctx_reset(&h->ctx);
    }
}

/* Max pool: forward through the argmax body, backward through the gather. */
static void t_maxpool(hh *h) {
    static const int P_[][5] = { { 9, 8, 3, 2, 1 }, { 8, 8, 2, 2, 0 }, { 7, 6, 3, 1, 1 }, { 5, 5, 5, 1, 2 } };
    char what[48];
    for (size_t k = 0; k < sizeof P_ / sizeof *P_; k++) {
        const int64_t H = P_[k][0], W = P_[k][1], sh[4] = { 2, 3, H, W };
        const int ks = P_[k][2], st = P_[k][3], pad = P_[k][4];
        gx_tensor *x = leaf(h, 4, sh, -1, 1);
        for (int64_t i = 0; i < x->numel; i += 3) x->data[i] = roundf(x->data[i] * 2) / 2;   /* ties */
        gx_tensor *y = gx_max_pool2d(&h->ctx, x, ks, st, pad);
        float *g = rnd(h, y->numel);
        gx_backward(&h->ctx, y, g);
        const int64_t oh = y->shape[2], ow = y->shape[3];
        float *yb = zeros(h, y->numel), *gb = zeros(h, x->numel);
        for (int64_t i = 0; i < y->numel; i++)
            yb[i] = x->data[(i / (oh * ow)) * H * W + gx_cu_maxpool_arg(x->data, i, H, W, oh, ow, ks, st, pad)];
        for (int64_t i = 0; i < x->numel; i++)
            gb[i] = gx_cu_maxpool_bw_at(x->data, g, gb[i], i, H, W, oh, ow, ks, st, pad);
        snprintf(what, sizeof what, "max_pool case %zu forward", k);
        cmp(h, what, yb, y->data, y->numel, 0, 0);
        snprintf(what, sizeof what, "max_pool case %zu backward", k);
        cmp(h, what, gb, x->grad, x->numel, 0, 0);
        gx_ctx_reset(&h->ctx);
    }
}

/* Causal depthwise conv1d, forward and every gradient. */
static void t_conv1d(hh *h) {
    static const int64_t Cs[][4] = { { 2, 9, 5, 4 }, { 3, 3, 7, 5 }, { 1, 6, 4, 1 } };
    char what[48];
    for (size_t k = 0; k < sizeof Cs / sizeof *Cs; k++)
        for (int hb = 0; hb < 2; hb++) {
            const int64_t B = Cs[k][0], L = Cs[k][1], E = Cs[k][2], K = Cs[k][3];
            const int64_t sx[3] = { B, L, E }, sw[3] = { E, 1, K }, sb[1] = { E };
            gx_tensor *x = leaf(h, 3, sx, -1, 1), *w = leaf(h, 3, sw, -1, 1), *b = hb ? leaf(h, 1, sb, -1, 1) : NULL;
            gx_tensor *y = gx_conv1d_causal_dw(&h->ctx, x, w, b);
            float *g = rnd(h, y->numel);
            gx_backward(&h->ctx, y, g);
            float *yb = zeros(h, y->numel), *gx = zeros(h, x->numel), *gw = zeros(h, w->numel), *gb = zeros(h, E);
            for (int64_t i = 0; i < y->numel; i++) yb[i] = gx_cu_c1_at(x->data, w->data, b ? b->data : NULL, i, L, E, K);
            for (int64_t i = 0; i < x->numel; i++) gx[i] += (float)gx_cu_c1_dx_at(w->data, g, i, L, E, K);
            for (int64_t i = 0; i < E * K; i++) gw[i] += (float)gx_cu_c1_dw_at(x->data, g, i / K, i % K, B, L, E, K);
            for (int64_t e = 0; e < E; e++) gb[e] += (float)gx_cu_c1_dw_at(x->data, g, e, -1, B, L, E, K);
            snprintf(what, sizeof what, "conv1d case %zu%s forward", k, hb ? " bias" : "");
            cmp(h, what, yb, y->data, y->numel, 1e-6, 1e-6);
            snprintf(what, sizeof what, "conv1d case %zu%s grad x", k, hb ? " bias" : "");
            cmp(h, what, gx, x->grad, x->numel, 1e-6, 1e-6);
            snprintf(what, sizeof what, "conv1d case %zu%s grad w", k, hb ? " bias" : "");
            cmp(h, what, gw, w->grad, w->numel, 1e-6, 1e-6);
            if (b) {
                snprintf(what, sizeof what, "conv1d case %zu grad b", k);
                cmp(h, what, gb, b->grad, E, 1e-6, 1e-6);
            }
            gx_ctx_reset(&h->ctx);
        }
}

/* ---------------------------------------------------------------- scan */

/* gx_cu_ssm_scan_fwd/_bwd emulated block by block, lane by lane: the
 * segment sums of a warp are sums over the lanes of one channel. */
static void t_scan(hh *h) {
    static const int64_t Cs[][5] = { { 2, 9, 5, 16, 1 }, { 2, 9, 5, 16, 0 }, { 3, 17, 37, 5, 1 }, { 1, 4, 3, 32, 1 },
                                     { 2, 6, 9, 1, 0 } };
    char what[48];
    for (size_t k = 0; k < sizeof Cs / sizeof *Cs; k++) {
        const int64_t B = Cs[k][0], L = Cs[k][1], E = Cs[k][2], N = Cs[k][3], Ld = Cs[k][4] ? L : 1;
        const int64_t s3[3] = { B, L, E }, sd[3] = { B, Ld, E }, sp[2] = { E, N };
        gx_tensor *xs = leaf(h, 3, s3, -1, 1), *dl = leaf(h, 3, sd, 0.01, 1), *A = leaf(h, 2, sp, -3, -0.05);
        gx_tensor *Bm = leaf(h, 2, sp, -1, 1), *Cm = leaf(h, 2, sp, -1, 1);
        dl->data[0] = 1e-7f;                       /* the |delta A| < 1e-6 branch */
        gx_tensor *y = gx_ssm_scan(&h->ctx, xs, dl, A, Bm, Cm);
        float *g = rnd(h, y->numel);
        gx_backward(&h->ctx, y, g);
        int64_t nb;
        gx_cu_sd d = gx_cu_scan_dims(B, L, Ld, E, N, &nb);
        std::vector<int> seen((size_t)(E * N), 0);
        std::vector<double> H((size_t)(B * L * E * N), 0.0);
        float *yb = zeros(h, y->numel), *gxs = zeros(h, xs->numel), *gdl = zeros(h, dl->numel);
        float *gA = zeros(h, A->numel), *gB = zeros(h, A->numel), *gC = zeros(h, A->numel);
        for (int64_t b = 0; b < B; b++)
            for (int64_t blk = 0; blk < nb; blk++)
                for (int tid = 0; tid < 32 * GX_CU_SCAN_WARPS; tid++) {
                    int64_t e; int n;
                    if (!gx_cu_scan_lane(d, blk, tid, &e, &n)) continue;
                    if (b == 0) seen[(size_t)(e * N + n)]++;
                    /* Forward of this lane; y gets its share (the segment sum). */
                    const double An = A->data[e * N + n], Bn = Bm->data[e * N + n], Cn = Cm->data[e * N + n];
                    double hs = 0, a = 0, f = 0;
                    for (int64_t t = 0; t < L; t++) {
                        if (t == 0 || Ld > 1) gx_cu_scan_coef(dl->data[(b * Ld + (Ld > 1 ? t : 0)) * E + e], An, &a, &f);
                        hs = a * hs + f * Bn * xs->data[(b * L + t) * E + e];
                        H[(size_t)(((b * L + t) * E + e) * N + n)] = hs;
                    }
                }
        int64_t unseen = 0;                        /* the lane map covers each (e, n) once */
        for (int64_t i = 0; i < E * N; i++) unseen += seen[(size_t)i] != 1;
        h->checks++;
        if (unseen) { printf("FAIL scan case %zu: %lld (e, n) not mapped exactly once\n", k, (long long)unseen); h->fails++; }
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < L; t++)
                for (int64_t e = 0; e < E; e++) {
                    double acc = 0;
                    for (int64_t n = 0; n < N; n++) acc += H[(size_t)(((b * L + t) * E + e) * N + n)] * Cm->data[e * N + n];
                    yb[(b * L + t) * E + e] = (float)acc;
                }
        for (int64_t b = 0; b < B; b++)
            for (int64_t e = 0; e < E; e++) {
                std::vector<double> gh((size_t)N, 0.0), pA((size_t)N, 0.0), pB((size_t)N, 0.0), pC((size_t)N, 0.0);
                double gdm = 0;
                for (int64_t t = L - 1; t >= 0; t--) {
                    const int64_t it = (b * L + t) * E + e;
                    const double dt = dl->data[(b * Ld + (Ld > 1 ? t : 0)) * E + e];
                    double ssd = 0, ssx = 0;
                    for (int64_t n = 0; n < N; n++) {
                        double sdl, sxl;
                        gx_cu_scan_bstep(dt, A->data[e * N + n], Bm->data[e * N + n], Cm->data[e * N + n], xs->data[it],
                                         g[it], H[(size_t)(it * N + n)], t > 0 ? H[(size_t)((it - E) * N + n)] : 0.0,
                                         &gh[(size_t)n], &pA[(size_t)n], &pB[(size_t)n], &pC[(size_t)n], &sdl, &sxl);
                        ssd += sdl;
                        ssx += sxl;
                    }
                    gxs[it] += (float)ssx;
                    if (Ld > 1) gdl[it] += (float)ssd; else gdm += ssd;
                }
                if (Ld == 1) gdl[b * E + e] += (float)gdm;
                for (int64_t n = 0; n < N; n++) {
                    gA[e * N + n] += (float)pA[(size_t)n];
                    gB[e * N + n] += (float)pB[(size_t)n];
                    gC[e * N + n] += (float)pC[(size_t)n];
                }
            }
        const struct { const char *n; float *got; const float *want; int64_t cnt; } out[] = {
            { "y", yb, y->data, y->numel }, { "grad xs", gxs, xs->grad, xs->numel }, { "grad delta", gdl, dl->grad, dl->numel },
            { "grad A", gA, A->grad, A->numel }, { "grad Bm", gB, Bm->grad, A->numel }, { "grad Cm", gC, Cm->grad, A->numel },
        };
        for (int i = 0; i < 6; i++) {
            snprintf(what, sizeof what, "scan case %zu %s", k, out[i].n);
            cmp(h, what, out[i].got, out[i].want, out[i].cnt, 1e-5, 1e-5);
        }
        gx_ctx_reset(&h->ctx);
    }
}

/* ------------------------------------------------------------ sinkhorn */

static gx_tensor *sk_inputs(hh *h, int64_t B, int64_t n, gx_tensor **a, gx_tensor **b) {
    const int64_t sab[2] = { B, n }, sc[2] = { n, n };
    *a = leaf(h, 2, sab, 0.01, 1);
    *b = leaf(h, 2, sab, 0.01, 1);
    (*a)->data[1] = 0.0f;                          /* an empty bin */
    gx_tensor *C = gx_tensor_new(&h->ctx, 2, sc);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) C->data[i * n + j] = (float)((i - j) * (i - j)) / (float)(n * n);
    return C;
}

static void t_sinkhorn(hh *h) {
    static const struct { int64_t B, n; int iters; double lambda; } Cs[] = { { 3, 12, 30, 0.1 }, { 2, 7, 1, 0.5 } };
    char what[48];
    for (size_t k = 0; k < sizeof Cs / sizeof *Cs; k++) {
        const int64_t B = Cs[k].B, n = Cs[k].n;
        const int T = Cs[k].iters;
        gx_tensor *a, *b, *C = sk_inputs(h, B, n, &a, &b);
        gx_tensor *y = gx_sinkhorn_hk(&h->ctx, a, b, C, Cs[k].lambda, T, 1e-4);
        float *g = rnd(h, B);
        gx_backward(&h->ctx, y, g);
        std::vector<double> mats((size_t)(4 * n * n)), pq((size_t)(B * T * 2 * n + B)), work((size_t)(7 * n));
        for (int64_t i = 0; i < n * n; i++) gx_cu_sk_build_at(C->data, Cs[k].lambda, n, i, mats.data());
        float *yb = zeros(h, B), *ga = zeros(h, a->numel), *gb = zeros(h, b->numel);
        for (int64_t r = 0; r < B; r++) {      /* the forward kernel's row loop */
            double S = gx_cu_sk_row_fwd(mats.data(), a->data + r * n, b->data + r * n, n, T, 1e-4, work.data(),
                                        &pq[(size_t)(r * T * 2 * n)]);
            pq[(size_t)(B * T * 2 * n + r)] = S;
            yb[r] = (float)sqrt((S > 0 ? S : 0.0) + 1e-8);
        }
        for (int64_t r = 0; r < B; r++)        /* the backward kernel's */
            gx_cu_sk_row_bwd(mats.data(), a->data + r * n, b->data + r * n, &pq[(size_t)(r * T * 2 * n)], n, T,
                             gx_cu_sk_gS(pq[(size_t)(B * T * 2 * n + r)], g[r]), ga + r * n, gb + r * n, work.data());
        snprintf(what, sizeof what, "sinkhorn case %zu forward", k);
        cmp(h, what, yb, y->data, B, TOL, TOL);
        snprintf(what, sizeof what, "sinkhorn case %zu grad a", k);
        cmp(h, what, ga, a->grad, a->numel, TOL, TOL);
        snprintf(what, sizeof what, "sinkhorn case %zu grad b", k);
        cmp(h, what, gb, b->grad, b->numel, TOL, TOL);
        gx_ctx_reset(&h->ctx);
    }
}

/* --------------------------------------------------------------- optim */

/* Four optimiser configurations, three steps each, on two tensors (one with
 * weight decay): gx_optim_step against the update bodies on copies. */
static void t_optim(hh *h) {
    gx_optim_cfg cfgs[4] = { gx_optim_defaults(GX_OPT_ADAMW), gx_optim_defaults(GX_OPT_ADAM),
                             gx_optim_defaults(GX_OPT_SGD), gx_optim_defaults(GX_OPT_SGD) };
    cfgs[1].weight_decay = 0.05;
    cfgs[2].momentum = 0.9; cfgs[2].nesterov = 1; cfgs[2].weight_decay = 0.01;
    char what[48];
    for (int c = 0; c < 4; c++) {
        gx_params P;
        gx_params_init(&P);
        const int64_t s0[2] = { 7, 9 }, s1[1] = { 13 };
        gx_tensor *t[2] = { gx_params_add(&P, "w", 2, s0, GX_PARAM_DECAY), gx_params_add(&P, "b", 1, s1, 0) };
        std::vector<float> x[2], st[2];
        for (int i = 0; i < 2; i++) {
            gx_rng_fill_uniform(&h->rng, t[i]->data, t[i]->numel, -1, 1);
            x[i].assign(t[i]->data, t[i]->data + t[i]->numel);
            st[i].assign((size_t)(2 * t[i]->numel), 0.0f);
        }
        gx_optim o;
        gx_err err;
        if (gx_optim_init(&o, &P, &cfgs[c], &err) != GX_OK) { printf("FAIL optim init: %s\n", err.msg); h->fails++; }
        const double lr[1] = { 0.01 };
        for (int64_t step = 1; step <= 3; step++) {
            for (int i = 0; i < 2; i++) gx_rng_fill_uniform(&h->rng, t[i]->grad, t[i]->numel, -1, 1);
            gx_optim_step(&o, &P, lr);
            for (int i = 0; i < 2; i++) {               /* gx_cu_optim_update, per tensor */
                const int64_t n = t[i]->numel;
                const double wd = i == 0 ? cfgs[c].weight_decay : 0.0;
                if (cfgs[c].kind == GX_OPT_SGD) {
                    for (int64_t k = 0; k < n; k++)
                        gx_cu_sgd_at(x[i].data(), t[i]->grad, cfgs[c].momentum != 0 ? st[i].data() : NULL, k,
                                     cfgs[c].momentum, cfgs[c].nesterov, step == 1, lr[0], wd);
                } else {
                    gx_cu_adam_sc sc = gx_cu_adam_scalars(&cfgs[c], step, lr[0], wd);
                    for (int64_t k = 0; k < n; k++)
                        gx_cu_adam_at(x[i].data(), t[i]->grad, st[i].data(), st[i].data() + n, k, cfgs[c].beta1,
                                      cfgs[c].beta2, cfgs[c].eps, sc.step_size, sc.bc2_sqrt, sc.shrink, sc.l2);
                }
            }
        }
        for (int i = 0; i < 2; i++) {
            snprintf(what, sizeof what, "optim config %d tensor %d", c, i);
            cmp(h, what, x[i].data(), t[i]->data, t[i]->numel, TOL, TOL);
        }
        gx_optim_free(&o);
        gx_params_free(&P);
    }
}

/* --------------------------------------------------------------- shape */

/* Permute, concat, slice, flip, gather and one-hot through the index maps,
 * forward and backward, against gx_shape.c / gx_reduce.c: exact (copies). */
static void t_shape(hh *h) {
    char what[64];
    static const struct { int nd; int64_t s[4]; int perm[4]; } Pm[] = {
        { 3, { 4, 5, 6 }, { 2, 0, 1 } }, { 4, { 2, 3, 4, 5 }, { 0, 2, 3, 1 } }, { 2, { 7, 9 }, { 1, 0 } },
        { 4, { 2, 3, 4, 5 }, { 3, 2, 1, 0 } },
    };
    for (size_t k = 0; k < sizeof Pm / sizeof *Pm; k++) {
        gx_tensor *x = leaf(h, Pm[k].nd, Pm[k].s, -1, 1);
        gx_tensor *y = gx_permute(&h->ctx, x, Pm[k].perm);
        float *g = rnd(h, y->numel);
        gx_backward(&h->ctx, y, g);
        int64_t yshape[GX_MAX_DIMS];
        int inv[GX_MAX_DIMS];
        for (int d = 0; d < Pm[k].nd; d++) { yshape[d] = Pm[k].s[Pm[k].perm[d]]; inv[Pm[k].perm[d]] = d; }
        gx_cu_pm pf = gx_cu_pm_make(Pm[k].nd, Pm[k].s, Pm[k].perm), pb = gx_cu_pm_make(Pm[k].nd, yshape, inv);
        float *yb = zeros(h, y->numel), *gb = zeros(h, x->numel);
        for (int64_t i = 0; i < y->numel; i++) yb[i] = x->data[gx_cu_pm_src(pf, i)];
        for (int64_t i = 0; i < x->numel; i++) gb[i] += g[gx_cu_pm_src(pb, i)];
        snprintf(what, sizeof what, "permute case %zu forward", k);
        cmp(h, what, yb, y->data, y->numel, 0, 0);
        snprintf(what, sizeof what, "permute case %zu backward", k);
        cmp(h, what, gb, x->grad, x->numel, 0, 0);
        gx_ctx_reset(&h->ctx);
    }
    /* concat of three parts along each dim of [3, n_k, 5]-like shapes. */
    for (int dim = 0; dim < 3; dim++) {
        const int64_t sz[3] = { 2, 5, 3 };
        gx_tensor *xs[3];
        for (int k = 0; k < 3; k++) {
            int64_t sh[3] = { 3, 4, 5 };
            sh[dim] = sz[k];
            xs[k] = leaf(h, 3, sh, -1, 1);
        }
        gx_tensor *y = gx_concat(&h->ctx, 3, xs, dim);
        float *g = rnd(h, y->numel);
        gx_backward(&h->ctx, y, g);
        int64_t outer, inner, N = y->shape[dim], off = 0;
        ctu_split(y->shape, 3, dim, &outer, &inner);
        float *yb = zeros(h, y->numel);
        for (int k = 0; k < 3; k++) {
            float *gk = zeros(h, xs[k]->numel);
            for (int64_t i = 0; i < xs[k]->numel; i++) {
                yb[gx_cu_band_at(i, sz[k], inner, N, off)] = xs[k]->data[i];
                gk[i] += g[gx_cu_band_at(i, sz[k], inner, N, off)];
            }
            off += sz[k];
            snprintf(what, sizeof what, "concat dim %d grad %d", dim, k);
            cmp(h, what, gk, xs[k]->grad, xs[k]->numel, 0, 0);
        }
        snprintf(what, sizeof what, "concat dim %d forward", dim);
        cmp(h, what, yb, y->data, y->numel, 0, 0);
        /* slice [1, 4) of the concat's result and flip along the same dim */
        gx_ctx_reset(&h->ctx);
        int64_t sh[3] = { 3, 4, 5 };
        sh[dim] = 6;
        gx_tensor *x = leaf(h, 3, sh, -1, 1);
        gx_tensor *ys = gx_slice(&h->ctx, x, dim, 1, 4), *yf = gx_flip(&h->ctx, x, dim);
        const int64_t ns[1] = { ys->numel }, nf[1] = { yf->numel };
        gx_tensor *both[2] = { gx_reshape(&h->ctx, ys, 1, ns), gx_reshape(&h->ctx, yf, 1, nf) };
        gx_tensor *cat = gx_concat(&h->ctx, 2, both, 0);
        float *gc = rnd(h, cat->numel);
        gx_backward(&h->ctx, cat, gc);
        ctu_split(sh, 3, dim, &outer, &inner);
        float *sb = zeros(h, ys->numel), *fb = zeros(h, x->numel), *gxb = zeros(h, x->numel);
        for (int64_t i = 0; i < ys->numel; i++) {
            sb[i] = x->data[gx_cu_band_at(i, 3, inner, 6, 1)];
            gxb[gx_cu_band_at(i, 3, inner, 6, 1)] += gc[i];
        }
        for (int64_t i = 0; i < x->numel; i++) {
            fb[i] = x->data[gx_cu_flip_at(i, 6, inner)];
            gxb[i] += gc[ys->numel + gx_cu_flip_at(i, 6, inner)];
        }
        snprintf(what, sizeof what, "slice dim %d forward", dim);
        cmp(h, what, sb, ys->data, ys->numel, 0, 0);
        snprintf(what, sizeof what, "flip dim %d forward", dim);
        cmp(h, what, fb, yf->data, yf->numel, 0, 0);
        snprintf(what, sizeof what, "slice+flip dim %d backward", dim);
        cmp(h, what, gxb, x->grad, x->numel, 0, 0);
        gx_ctx_reset(&h->ctx);
    }
    const int64_t B = 7, K = 5, sx[2] = { 7, 5 };
    int32_t idx[7];
    for (int64_t b = 0; b < B; b++) idx[b] = (int32_t)((b * 3 + 1) % K);
    gx_tensor *x = leaf(h, 2, sx, -1, 1);
    gx_tensor *y = gx_gather(&h->ctx, x, idx), *oh = gx_one_hot(&h->ctx, idx, B, K);
    float *g = rnd(h, B);
    gx_backward(&h->ctx, y, g);
    float *yb = zeros(h, B), *gb = zeros(h, x->numel), *ob = zeros(h, B * K);
    for (int64_t b = 0; b < B; b++) { yb[b] = x->data[b * K + idx[b]]; gb[b * K + idx[b]] += g[b]; }
    for (int64_t k = 0; k < B * K; k++) ob[k] = gx_cu_one_hot_at(idx, k, K);
    cmp(h, "gather forward", yb, y->data, B, 0, 0);
    cmp(h, "gather backward", gb, x->grad, x->numel, 0, 0);
    cmp(h, "one_hot", ob, oh->data, B * K, 0, 0);
    gx_ctx_reset(&h->ctx);
}

/* ------------------------------------------------- more reductions */

/* A warp's 32 lanes over one column: max, then the exp sums, combined in
 * lane order (the GPU's shuffle tree adds in another order: same terms). */
static double emu_lse(const float *x, int64_t c, int64_t n, int64_t inner) {
    double m = -INFINITY, s = 0;
    for (int l = 0; l < 32; l++) { double v = gx_cu_col_max_part(x, c, n, inner, l, 32); m = v > m ? v : m; }
    if (m == -INFINITY) m = 0;
    for (int l = 0; l < 32; l++) s += gx_cu_col_expsum_part(x, c, n, inner, m, l, 32);
    return m + log(s);
}
static double emu_dot(const float *x, const float *w, int64_t c, int64_t n, int64_t inner) {
    double s = 0;
    for (int l = 0; l < 32; l++) s += gx_cu_col_dot_part(x, w, c, n, inner, l, 32);
    return s;
}
/* Chunked (squared) sum as gx_cu_chunk_k + the in-order finish. */
static double emu_chunks(const float *x, int64_t n, int square) {
    double total = 0;
    for (int64_t ch = 0; ch * GX_CU_CHUNK < n; ch++) {
        double part = 0;
        for (int t = 0; t < 256; t++) part += gx_cu_chunk_part(x, n, ch, t, 256, square);
        total += part;
    }
    return total;
}

static void t_reduce2(hh *h) {
    const int64_t shape[3] = { 3, 50, 7 };
    char what[64];
    for (int d = 0; d < 3; d++) {
        int64_t outer, n = shape[d], inner;
        ctu_split(shape, 3, d, &outer, &inner);
        const int64_t ncol = outer * inner;
        /* logsumexp */
        gx_tensor *x = leaf(h, 3, shape, -4, 4);
        gx_tensor *y = gx_logsumexp(&h->ctx, x, d, 0);
        float *g = rnd(h, ncol);
        gx_backward(&h->ctx, y, g);
        float *yb = zeros(h, ncol), *gb = zeros(h, x->numel);
        for (int64_t c = 0; c < ncol; c++) yb[c] = (float)emu_lse(x->data, c, n, inner);
        for (int64_t k = 0; k < x->numel; k++) gb[k] = gx_cu_lse_bw_at(x->data, yb, g, gb[k], k, n, inner);
        snprintf(what, sizeof what, "logsumexp dim %d forward", d);
        cmp(h, what, yb, y->data, ncol, TOL, TOL);
        snprintf(what, sizeof what, "logsumexp dim %d backward", d);
        cmp(h, what, gb, x->grad, x->numel, TOL, TOL);
        gx_ctx_reset(&h->ctx);
        /* L2 normalise; column 1 is scaled below eps (the clamped branch) */
        const double eps = 1e-3;
        x = leaf(h, 3, shape, -1, 1);
        for (int64_t j = 0; j < n; j++) x->data[gx_cu_at(1, j, n, inner)] *= 1e-6f;
        y = gx_l2_normalize(&h->ctx, x, d, eps);
        g = rnd(h, x->numel);
        gx_backward(&h->ctx, y, g);
        float *lb = zeros(h, x->numel), *lg = zeros(h, x->numel);
        std::vector<double> norm((size_t)ncol);
        for (int64_t c = 0; c < ncol; c++) {
            norm[(size_t)c] = sqrt(emu_dot(x->data, x->data, c, n, inner));
            const double inv = gx_cu_l2n_inv(norm[(size_t)c], eps);
            for (int64_t j = 0; j < n; j++) {
                const int64_t k = gx_cu_at(c, j, n, inner);
                lb[k] = (float)((double)x->data[k] * inv);
            }
        }
        for (int64_t c = 0; c < ncol; c++) {
            double inv, d2;
            gx_cu_l2n_bw_coef(norm[(size_t)c], eps, emu_dot(g, lb, c, n, inner), &inv, &d2);
            for (int64_t j = 0; j < n; j++) {
                const int64_t k = gx_cu_at(c, j, n, inner);
                lg[k] += (float)((double)g[k] * inv - (double)lb[k] * d2);
            }
        }
        snprintf(what, sizeof what, "l2_normalize dim %d forward", d);
        cmp(h, what, lb, y->data, x->numel, TOL, TOL);
        snprintf(what, sizeof what, "l2_normalize dim %d backward", d);
        cmp(h, what, lg, x->grad, x->numel, 1e-5, 1e-5);
        gx_ctx_reset(&h->ctx);
    }
    /* an all -inf column: -inf, as PyTorch */
    const int64_t si[2] = { 2, 40 };
    gx_tensor *xi = leaf(h, 2, si, -1, 1);
    for (int64_t j = 0; j < 40; j++) xi->data[40 + j] = -INFINITY;
    gx_tensor *yi = gx_logsumexp(&h->ctx, xi, 1, 0);
    float li[2] = { (float)emu_lse(xi->data, 0, 40, 1), (float)emu_lse(xi->data, 1, 40, 1) };
    h->checks++;
    if (!(li[1] == -INFINITY && yi->data[1] == -INFINITY && fabsf(li[0] - yi->data[0]) <= 1e-6f)) {
        printf("FAIL %s logsumexp -inf column: body %g %g cpu %g %g\n", h->group, li[0], li[1], yi->data[0], yi->data[1]);
        h->fails++;
    }
    gx_ctx_reset(&h->ctx);
    /* sum_all / mean_all over 3 chunks and a tail */
    for (int mean = 0; mean < 2; mean++) {
        const int64_t n = 3 * GX_CU_CHUNK + 123;
        const int64_t sn[1] = { n };
        gx_tensor *x = leaf(h, 1, sn, -1, 1);
        gx_tensor *y = mean ? gx_mean_all(&h->ctx, x) : gx_sum_all(&h->ctx, x);
        float g = 0.75f;
        gx_backward(&h->ctx, y, &g);
        const double sc = mean ? 1.0 / (double)n : 1.0;
        float yb = (float)(emu_chunks(x->data, n, 0) * sc), *gb = zeros(h, n);
        const float v = (float)((double)g * sc);
        for (int64_t k = 0; k < n; k++) gb[k] += v;
        snprintf(what, sizeof what, "%s forward", mean ? "mean_all" : "sum_all");
        cmp(h, what, &yb, y->data, 1, 1e-6, 1e-6);
        snprintf(what, sizeof what, "%s backward", mean ? "mean_all" : "sum_all");
        cmp(h, what, gb, x->grad, n, 0, 0);
        gx_ctx_reset(&h->ctx);
    }
}

/* gx_clip_grad_norm against the chunked sum of squares and the scaling
 * body, once clipping (max 0.5) and once not (max 1e6). */
static void t_clip(hh *h) {
    char what[64];
    for (int clip = 1; clip >= 0; clip--) {
        gx_params P;
        gx_params_init(&P);
        const int64_t s0[2] = { 97, 181 }, s1[1] = { 13 }, s2[2] = { 3, 5 };
        gx_tensor *t[3] = { gx_params_add(&P, "w", 2, s0, GX_PARAM_DECAY), gx_params_add(&P, "b", 1, s1, 0),
                            gx_params_add(&P, "c", 2, s2, 0) };
        std::vector<float> g[3];
        for (int i = 0; i < 3; i++) {
            gx_rng_fill_uniform(&h->rng, t[i]->grad, t[i]->numel, -1, 1);
            g[i].assign(t[i]->grad, t[i]->grad + t[i]->numel);
        }
        const double max_norm = clip ? 0.5 : 1e6;
        const double norm = gx_clip_grad_norm(&P, max_norm);
        double ss = 0;
        for (int i = 0; i < 3; i++) ss += emu_chunks(g[i].data(), t[i]->numel, 1);
        const double nb = sqrt(ss), c = gx_cu_clip_coef(nb, max_norm);
        h->checks++;
        if (fabs(nb - norm) > 1e-9 * norm || (clip != (c < 1.0))) {
            printf("FAIL %s clip %d: norm body %.17g cpu %.17g coef %g\n", h->group, clip, nb, norm, c);
            h->fails++;
        }
        for (int i = 0; i < 3; i++) {
            if (c != 1.0)
                for (size_t k = 0; k < g[i].size(); k++) g[i][k] = (float)((double)g[i][k] * c);
            snprintf(what, sizeof what, "clip %d tensor %d", clip, i);
            cmp(h, what, g[i].data(), t[i]->grad, t[i]->numel, TOL, TOL);
        }
        gx_params_free(&P);
    }
}

/* ------------------------------------------------------------ pairwise */

static void t_pairwise(hh *h) {
    char what[64];
    for (int same = 0; same < 2; same++) {
        const int64_t N = 9, M = same ? 9 : 6, D = 11;
        const int64_t sa[2] = { N, D }, sb[2] = { M, D };
        gx_tensor *a = leaf(h, 2, sa, -1, 1), *b = same ? a : leaf(h, 2, sb, -1, 1);
        gx_tensor *y = gx_pairwise_sqdist(&h->ctx, a, b);
        float *g = rnd(h, y->numel);
        gx_backward(&h->ctx, y, g);
        std::vector<double> sq((size_t)(N + M)), sums((size_t)(N + M));
        float *d = zeros(h, N * M), *gm = zeros(h, N * M), *ga = zeros(h, N * D), *gb = same ? ga : zeros(h, M * D);
        for (int64_t i = 0; i < N + M; i++)
            sq[(size_t)i] = i < N ? gx_cu_row_sqnorm(a->data, i, D) : gx_cu_row_sqnorm(b->data, i - N, D);
        naive_gemm(0, 1, N, M, D, a->data, D, b->data, D, 0.0f, d, M);
        for (int64_t k = 0; k < N * M; k++) d[k] *= -2.0f;           /* alpha -2: exact in float */
        for (int64_t k = 0; k < N * M; k++) d[k] = gx_cu_sqd_at(d, sq.data(), k, N, M);
        for (int64_t k = 0; k < N * M; k++) gm[k] = d[k] > 0 ? g[k] : 0.0f;
        for (int64_t i = 0; i < N + M; i++)
            sums[(size_t)i] = i < N ? gx_cu_mat_sum(gm, i, N, M, 0) : gx_cu_mat_sum(gm, i - N, N, M, 1);
        std::vector<float> t1((size_t)(N * D)), t2((size_t)(M * D));
        for (int64_t k = 0; k < N * D; k++) ga[k] += (float)(2.0 * sums[(size_t)(k / D)] * a->data[k]);
        naive_gemm(0, 0, N, D, M, gm, M, b->data, D, 0.0f, t1.data(), D);
        for (int64_t k = 0; k < N * D; k++) ga[k] += -2.0f * t1[(size_t)k];
        for (int64_t k = 0; k < M * D; k++) gb[k] += (float)(2.0 * sums[(size_t)(N + k / D)] * b->data[k]);
        naive_gemm(1, 0, M, D, N, gm, M, a->data, D, 0.0f, t2.data(), D);
        for (int64_t k = 0; k < M * D; k++) gb[k] += -2.0f * t2[(size_t)k];
        snprintf(what, sizeof what, "pairwise_sqdist%s forward", same ? " (a == b)" : "");
        cmp(h, what, d, y->data, y->numel, 1e-5, 1e-5);
        snprintf(what, sizeof what, "pairwise_sqdist%s grad a", same ? " (a == b)" : "");
        cmp(h, what, ga, a->grad, a->numel, 1e-5, 1e-5);
        if (!same) cmp(h, "pairwise_sqdist grad b", gb, b->grad, b->numel, 1e-5, 1e-5);
        gx_ctx_reset(&h->ctx);
    }
}

/* ------------------------------------------------------------- upconv */

/* gx_cu_upconv2x3_fwd/_bwd step by step (naive GEMMs for cuBLAS) against
 * gx_upconv2x3, and the LeakyReLU epilogue against gx_upconv2x3_leaky's
 * untaped path. */
static void t_upconv(hh *h) {
    static const int64_t Cs[][5] = { { 2, 3, 4, 5, 4 }, { 1, 5, 3, 3, 2 }, { 3, 2, 1, 6, 3 }, { 2, 4, 6, 4, 1 } };
    char what[64];
    for (size_t k = 0; k < sizeof Cs / sizeof *Cs; k++) {
        const int64_t B = Cs[k][0], Cin = Cs[k][1], H = Cs[k][2], W = Cs[k][3], Cout = Cs[k][4], HW = H * W;
        const int64_t sx[4] = { B, Cin, H, W }, sw[4] = { Cout, Cin, 3, 3 }, sb[1] = { Cout };
        gx_tensor *x = leaf(h, 4, sx, -1, 1), *w = leaf(h, 4, sw, -0.5, 0.5), *b = leaf(h, 1, sb, -0.5, 0.5);
        gx_tensor *y = gx_upconv2x3(&h->ctx, x, w, b);
        float *g = rnd(h, y->numel);
        gx_backward(&h->ctx, y, g);
        h->ctx.grad_enabled = 0;
        gx_tensor *yl = gx_upconv2x3_leaky(&h->ctx, x, w, b, 0.2);
        h->ctx.grad_enabled = 1;
        const int64_t K4 = 4 * Cin;
        std::vector<float> wp((size_t)(16 * Cout * Cin)), col((size_t)(16 * Cin * HW)), yp((size_t)(4 * Cout * HW)),
            dwp((size_t)(16 * Cout * Cin), 0.0f);
        float *yb = zeros(h, y->numel), *ylb = zeros(h, y->numel), *gx = zeros(h, x->numel), *gw = zeros(h, w->numel);
        float *gb = zeros(h, Cout);
        for (int64_t i = 0; i < 16 * Cout * Cin; i++) wp[(size_t)i] = gx_cu_up_fold_at(w->data, i, Cout, Cin);
        for (int64_t s = 0; s < B; s++) {
            for (int64_t i = 0; i < 16 * Cin * HW; i++) col[(size_t)i] = gx_cu_up_im2col_at(x->data + s * Cin * HW, i, Cin, H, W);
            for (int par = 0; par < 4; par++)
                naive_gemm(0, 0, Cout, HW, K4, &wp[(size_t)(par * Cout * K4)], K4, &col[(size_t)(par * K4 * HW)], HW, 0.0f,
                           &yp[(size_t)(par * Cout * HW)], HW);
            for (int64_t i = 0; i < 4 * Cout * HW; i++) {
                yb[s * 4 * Cout * HW + i] = gx_cu_up_put_at(yp.data(), b->data, -1, 0, 0, i, Cout, H, W);
                ylb[s * 4 * Cout * HW + i] = gx_cu_up_put_at(yp.data(), b->data, GX_CU_LEAKY_RELU, 0.2, 0, i, Cout, H, W);
            }
            /* backward of this sample */
            for (int64_t i = 0; i < 4 * Cout * HW; i++) yp[(size_t)i] = gx_cu_up_gather_at(g + s * 4 * Cout * HW, i, Cout, H, W);
            for (int par = 0; par < 4; par++)
                naive_gemm(0, 1, Cout, K4, HW, &yp[(size_t)(par * Cout * HW)], HW, &col[(size_t)(par * K4 * HW)], HW, 1.0f,
                           &dwp[(size_t)(par * Cout * K4)], K4);
            for (int par = 0; par < 4; par++)
                naive_gemm(1, 0, K4, HW, Cout, &wp[(size_t)(par * Cout * K4)], K4, &yp[(size_t)(par * Cout * HW)], HW, 0.0f,
                           &col[(size_t)(par * K4 * HW)], HW);
            for (int64_t i = 0; i < Cin * HW; i++) gx[s * Cin * HW + i] += (float)gx_cu_up_col2im_at(col.data(), i, Cin, H, W);
        }
        for (int64_t i = 0; i < w->numel; i++) gw[i] += (float)gx_cu_up_unfold_at(dwp.data(), i, Cout, Cin);
        const int64_t from[3] = { B, Cout, 4 * HW }, to[2] = { Cout, 1 };
        emu_rb(gb, 2, to, g, 3, from, 0);
        snprintf(what, sizeof what, "upconv case %zu forward", k);
        cmp(h, what, yb, y->data, y->numel, 1e-5, 1e-5);
        snprintf(what, sizeof what, "upconv case %zu leaky forward", k);
        cmp(h, what, ylb, yl->data, y->numel, 1e-5, 1e-5);
        snprintf(what, sizeof what, "upconv case %zu grad x", k);
        cmp(h, what, gx, x->grad, x->numel, 1e-5, 1e-5);
        snprintf(what, sizeof what, "upconv case %zu grad w", k);
        cmp(h, what, gw, w->grad, w->numel, 1e-5, 1e-5);
        snprintf(what, sizeof what, "upconv case %zu grad b", k);
        cmp(h, what, gb, b->grad, Cout, 1e-5, 1e-5);
        gx_ctx_reset(&h->ctx);
    }
}

/* ------------------------------------------------ conv + BN + activation */

/* The fused epilogue against the CPU chain gx_conv2d -> gx_batchnorm (eval)
 * -> activation, on the raw conv of the emulated im2col GEMMs. */
static void t_cbna(hh *h) {
    static const gx_cu_conv_shape Cs[] = {
        { 2, 4, 9, 9, 6, 3, 3, 1, 1, 1 }, { 2, 4, 10, 9, 6, 3, 3, 2, 1, 2 }, { 3, 5, 6, 7, 8, 1, 1, 1, 0, 1 },
        { 2, 4, 8, 8, 4, 3, 3, 1, 1, 4 },
    };
    static const struct { int op; ctu_unary_cpu f; double p0; } A[] = {
        { -1, NULL, 0 }, { GX_CU_RELU, gx_relu, 0 }, { GX_CU_LEAKY_RELU, ctu_leaky, 0.1 }, { GX_CU_SILU, gx_silu, 0 },
    };
    char what[64];
    for (size_t k = 0; k < sizeof Cs / sizeof *Cs; k++) {
        const gx_cu_conv_shape *c = &Cs[k];
        const size_t ai = k % (sizeof A / sizeof *A);
        gx_cu_cv v = gx_cu_cv_make(c);
        const int64_t G = c->groups, cig = c->Cin / G, cog = c->Cout / G, P = v.Ho * v.Wo, CK = cig * v.kh * v.kw;
        const int64_t xs[4] = { c->B, c->Cin, c->H, c->W }, ws[4] = { c->Cout, cig, c->kh, c->kw }, cs[1] = { c->Cout };
        gx_tensor *x = leaf(h, 4, xs, -1, 1), *w = leaf(h, 4, ws, -0.5, 0.5), *b = leaf(h, 1, cs, -0.5, 0.5);
        gx_tensor *gm = leaf(h, 1, cs, 0.5, 1.5), *bt = leaf(h, 1, cs, -1, 1);
        gx_tensor *rm = leaf(h, 1, cs, -0.5, 0.5), *rv = leaf(h, 1, cs, 0.5, 2);
        gx_tensor *y = ctu_conv_bn_act_cpu(&h->ctx, c, x, w, b, gm, bt, rm, rv, A[ai].f);
        const int64_t ncol = gx_cu_conv_col_floats(c), nx = c->Cin * v.H * v.W;
        std::vector<float> col((size_t)ncol);
        std::vector<double> ab((size_t)(2 * c->Cout));
        float *yb = zeros(h, y->numel);
        for (int64_t ch = 0; ch < c->Cout; ch++) gx_cu_bn_fold_at(gm->data, bt->data, rm->data, rv->data, 1e-5, ch, c->Cout, ab.data());
        for (int64_t s = 0; s < c->B; s++) {
            for (int64_t i = 0; i < ncol; i++) col[(size_t)i] = gx_cu_im2col_at(v, x->data + s * nx, i);
            for (int64_t q = 0; q < G; q++)
                naive_gemm(0, 0, cog, P, CK, w->data + q * cog * CK, CK, &col[(size_t)(q * CK * P)], P, 0.0f,
                           yb + s * c->Cout * P + q * cog * P, P);
        }
        for (int64_t i = 0; i < y->numel; i++) yb[i] = gx_cu_cbna_at(yb, b->data, ab.data(), A[ai].op, A[ai].p0, 0, i, c->Cout, P);
        snprintf(what, sizeof what, "conv_bn_act case %zu (act %d)", k, A[ai].op);
        cmp(h, what, yb, y->data, y->numel, 1e-5, 1e-5);
        gx_ctx_reset(&h->ctx);
    }
}

int main(void) {
    hh h;
    memset(&h, 0, sizeof h);
    gx_ctx_init(&h.ctx, 64 << 20);
    h.ctx.grad_enabled = 1;
    gx_rng_init(&h.rng, 424242);
    static const struct { const char *name; void (*fn)(hh *); } G[] = {
        { "unary", t_unary }, { "binary", t_binary }, { "reduce", t_reduce }, { "pool", t_pool },
        { "maxpool", t_maxpool }, { "conv", t_conv }, { "conv1d", t_conv1d }, { "scan", t_scan },
        { "sinkhorn", t_sinkhorn }, { "optim", t_optim }, { "shape", t_shape }, { "reduce2", t_reduce2 },
        { "clip", t_clip }, { "pairwise", t_pairwise }, { "upconv", t_upconv }, { "conv_bn_act", t_cbna },
    };
    int fails = 0;
    for (size_t i = 0; i < sizeof G / sizeof *G; i++) {
        h.group = G[i].name;
        h.checks = h.fails = 0;
        G[i].fn(&h);
        printf("%-4s host bodies %s: %d comparisons, %d failed\n", h.fails ? "FAIL" : "ok", G[i].name, h.checks, h.fails);
        fails += h.fails;
    }
    gx_ctx_free(&h.ctx);
    return fails ? 1 : 0;
}
