/*
 * test_cuda.c — every CUDA launcher against the CPU op on the same random
 * inputs, forward and backward (make test-cuda; make test-cuda-memcheck runs
 * it under compute-sanitizer).
 *
 * The CPU side is the engine's op (kernels/gx_*.c) with the tape: y = op(x),
 * backward from a random seed gradient g. The GPU side uploads the same x and
 * g, runs the forward and backward launchers (gradients accumulate into
 * zeroed buffers) and downloads. Device memory comes from the backend's own
 * pool and arena, so they are exercised on the device too.
 *
 * Tolerances (|gpu - cpu| <= atol + rtol |cpu|), FP32:
 *   elementwise, pooling, resize    1e-6 abs + 1e-6 rel (same double math)
 *   reductions, softmax, CE, norms  1e-5 + 1e-5 (double sums, other order)
 *   GEMM, conv (cuBLAS FP32)        1e-4 + 1e-4 (float sums, other order)
 *   selective scan                  1e-4 + 1e-4 (float atomics over b)
 *   Sinkhorn                        1e-5 + 1e-5 (same double math; FMA)
 *   GEMM with TF32                  2e-2 + 2e-2 (10-bit mantissa inputs)
 *   permute, concat, slice, flip,   0 (exact copies; 1e-6 where two of them
 *   gather, one-hot, accumulate        add into one gradient)
 *   logsumexp, L2 normalise,        1e-5 + 1e-5 (double sums, other order)
 *   sum_all / mean_all
 *   gradient clipping               norm 1e-9 relative (double), scaled
 *                                   gradients 1e-6 + 1e-6
 *   pairwise sqdist, upconv2x3,     1e-4 + 1e-4 (cuBLAS FP32 sums)
 *   conv + BN + activation          (and 0 against the GPU's unfused chain)
 *
 * Without a usable GPU every group prints exactly one line
 * "<group>: skipped: no GPU (<reason>)" and the program exits 0: visible,
 * not counted as passing.
 */
#include "cuda_test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const k_groups[] = { "elem", "reduce", "gemm", "norm", "conv", "pool",
                                         "maxpool_conv1d", "scan", "sinkhorn", "optim", "shape",
                                         "reduce2", "pairwise", "upconv", "conv_bn_act" };
#define NGROUPS ((int)(sizeof k_groups / sizeof *k_groups))

#if defined(GX_HAVE_CUDA) && GX_HAVE_CUDA

typedef struct {
    gx_cuda_stream *s, *s_tf32;
    gx_cuda_pool   *pool;
    gx_cuda_arena   ar;
    gx_ctx          ctx;
    gx_rng          rng;
    const char     *group;
    int             checks, fails;
} th;

/* ------------------------------------------------------------ helpers */

static void *dev(th *h, size_t bytes) {
    void *p = gx_cuda_arena_alloc(&h->ar, bytes);
    if (!p) { fprintf(stderr, "%s: device arena refused %zu bytes\n", h->group, bytes); exit(2); }
    return p;
}
static float *up(th *h, const float *src, int64_t n) {
    float *d = dev(h, (size_t)n * sizeof(float));
    gx_cuda_upload(h->s, d, src, (size_t)n * sizeof(float));
    return d;
}
static float *zeros(th *h, int64_t n) {
    float *d = dev(h, (size_t)n * sizeof(float));
    gx_cuda_memset0(h->s, d, (size_t)n * sizeof(float));
    return d;
}

static gx_tensor *leaf(th *h, int nd, const int64_t *shape, double lo, double hi) {
    return ctu_leaf(&h->ctx, &h->rng, nd, shape, lo, hi);
}
static float *rnd(th *h, int64_t n) { return ctu_rnd(&h->ctx, &h->rng, n); }

/* Downloads n floats (after a sync) and compares with want. */
static void cmp(th *h, const char *what, const float *d, const float *want, int64_t n,
                double atol, double rtol) {
    h->checks++;
    float *got = gx_ctx_alloc(&h->ctx, (size_t)(n > 0 ? n : 1) * sizeof(float));
    gx_err err;
    gx_cuda_download(h->s, got, d, (size_t)n * sizeof(float));
    if (gx_cuda_stream_sync(h->s, &err) != GX_OK) {
        printf("FAIL %s %s: %s\n", h->group, what, err.msg);
        h->fails++;
        return;
    }
    int64_t worst, bad = ctu_count_bad(got, want, n, atol, rtol, 1, &worst);
    if (bad) {
        printf("FAIL %s %s: %lld of %lld differ; worst [%lld] gpu %.9g cpu %.9g (atol %g rtol %g)\n",
               h->group, what, (long long)bad, (long long)n, (long long)worst, got[worst],
               want[worst], atol, rtol);
        h->fails++;
    }
}

/* CPU backward from seed g (numel of y). */
static void cpu_bw(th *h, gx_tensor *y, const float *g) { gx_backward(&h->ctx, y, g); }

static void reset(th *h) {
    gx_err err;
    if (gx_cuda_stream_sync(h->s, &err) != GX_OK) { printf("FAIL %s: %s\n", h->group, err.msg); h->fails++; }
    gx_ctx_reset(&h->ctx);
    if (gx_cuda_arena_reset(&h->ar) != GX_OK) { printf("FAIL %s: arena reset\n", h->group); h->fails++; }
}

#define ATOL_E 1e-6
#define ATOL_R 1e-5
#define ATOL_G 1e-4

/* ---------------------------------------------------------------- elem */

static void test_elem(th *h) {
    const ctu_unary_case *U = ctu_unary;
    char what[64];
    for (int k = 0; k < CTU_NUNARY; k++) {
        gx_tensor *x = leaf(h, 2, GX_SHAPE(37, 41), U[k].lo, U[k].hi);
        gx_tensor *y = U[k].f(&h->ctx, x);
        float *g = rnd(h, y->numel);
        cpu_bw(h, y, g);
        float *dx = up(h, x->data, x->numel), *dy = zeros(h, x->numel), *dgx = zeros(h, x->numel);
        gx_cu_unary_fwd(h->s, U[k].op, U[k].p0, U[k].p1, dx, dy, x->numel);
        gx_cu_unary_bwd(h->s, U[k].op, U[k].p0, U[k].p1, dx, dy, up(h, g, y->numel), dgx, x->numel);
        snprintf(what, sizeof what, "%s forward", U[k].name);
        cmp(h, what, dy, y->data, y->numel, ATOL_E, ATOL_E);
        snprintf(what, sizeof what, "%s backward", U[k].name);
        cmp(h, what, dgx, x->grad, x->numel, ATOL_E, ATOL_E);
        reset(h);
    }
    const ctu_binary_case *Bn = ctu_binary;
    static const struct { int na, nb; int64_t a[4], b[4]; } S[] = {
        { 3, 3, { 2, 3, 4 }, { 2, 3, 4 } },          /* equal */
        { 3, 1, { 5, 3, 70 }, { 70 } },              /* bias-like */
        { 4, 3, { 2, 3, 5, 5 }, { 3, 1, 1 } },       /* per channel */
        { 1, 3, { 1 }, { 2, 3, 4 } },                /* scalar a */
        { 3, 3, { 2, 1, 4 }, { 1, 3, 1 } },          /* both broadcast */
        { 2, 2, { 3000, 3 }, { 1, 3 } },             /* long reduction */
    };
    for (int k = 0; k < CTU_NBINARY; k++)
        for (size_t c = 0; c < sizeof S / sizeof *S; c++) {
            gx_tensor *a = leaf(h, S[c].na, S[c].a, -2, 2), *b = leaf(h, S[c].nb, S[c].b, 0.5, 2);
            if (Bn[k].op == GX_CU_MAX) ctu_quantise_for_max(a, b);
            gx_tensor *y = Bn[k].f(&h->ctx, a, b);
            float *g = rnd(h, y->numel);
            cpu_bw(h, y, g);
            float *da = up(h, a->data, a->numel), *db = up(h, b->data, b->numel);
            float *dy = zeros(h, y->numel), *ga = zeros(h, a->numel), *gb = zeros(h, b->numel);
            gx_cu_binary_fwd(h->s, Bn[k].op, da, a->ndim, a->shape, db, b->ndim, b->shape, dy, y->ndim, y->shape);
            gx_cu_binary_bwd(h->s, Bn[k].op, da, a->ndim, a->shape, db, b->ndim, b->shape, dy,
                             up(h, g, y->numel), y->ndim, y->shape, ga, gb, zeros(h, y->numel));
            snprintf(what, sizeof what, "%s case %zu forward", Bn[k].name, c);
            cmp(h, what, dy, y->data, y->numel, ATOL_E, ATOL_E);
            snprintf(what, sizeof what, "%s case %zu grad a", Bn[k].name, c);
            cmp(h, what, ga, a->grad, a->numel, ATOL_R, ATOL_R);
            snprintf(what, sizeof what, "%s case %zu grad b", Bn[k].name, c);
            cmp(h, what, gb, b->grad, b->numel, ATOL_R, ATOL_R);
            reset(h);
        }
}

/* -------------------------------------------------------------- reduce */

static void test_reduce(th *h) {
    char what[64];
    const int64_t shape[3] = { 3, 50, 7 };
    for (int d = 0; d < 3; d++) {
        int64_t outer, n = shape[d], inner;
        ctu_split(shape, 3, d, &outer, &inner);
        for (int op = 0; op < 3; op++) {
            gx_tensor *x = leaf(h, 3, shape, -2, 2);
            gx_tensor *y = op == 0 ? gx_sum(&h->ctx, x, d, 0) : op == 1 ? gx_mean(&h->ctx, x, d, 0)
                                                             : gx_max(&h->ctx, x, d, 0);
            float *g = rnd(h, y->numel);
            cpu_bw(h, y, g);
            float *dx = up(h, x->data, x->numel), *dy = zeros(h, y->numel), *dg = zeros(h, x->numel);
            gx_cu_reduce op_ = op == 0 ? GX_CU_SUM : op == 1 ? GX_CU_MEAN : GX_CU_MAXR;
            gx_cu_reduce_fwd(h->s, op_, dx, dy, outer, n, inner);
            gx_cu_reduce_bwd(h->s, op_, dx, dy, up(h, g, y->numel), dg, outer, n, inner);
            snprintf(what, sizeof what, "%s dim %d forward", op == 0 ? "sum" : op == 1 ? "mean" : "max", d);
            cmp(h, what, dy, y->data, y->numel, ATOL_R, ATOL_R);
            snprintf(what, sizeof what, "%s dim %d backward", op == 0 ? "sum" : op == 1 ? "mean" : "max", d);
            cmp(h, what, dg, x->grad, x->numel, ATOL_R, ATOL_R);
            reset(h);
        }
        for (int lg = 0; lg < 2; lg++) {
            gx_tensor *x = leaf(h, 3, shape, -4, 4);
            gx_tensor *y = lg ? gx_log_softmax(&h->ctx, x, d) : gx_softmax(&h->ctx, x, d);
            float *g = rnd(h, y->numel);
            cpu_bw(h, y, g);
            float *dy = zeros(h, y->numel), *dg = zeros(h, x->numel);
            gx_cu_softmax_fwd(h->s, lg, up(h, x->data, x->numel), dy, outer, n, inner);
            gx_cu_softmax_bwd(h->s, lg, dy, up(h, g, y->numel), dg, outer, n, inner);
            snprintf(what, sizeof what, "%s dim %d forward", lg ? "log_softmax" : "softmax", d);
            cmp(h, what, dy, y->data, y->numel, ATOL_R, ATOL_R);
            snprintf(what, sizeof what, "%s dim %d backward", lg ? "log_softmax" : "softmax", d);
            cmp(h, what, dg, x->grad, x->numel, ATOL_R, ATOL_R);
            reset(h);
        }
    }
    static const int64_t BK[][2] = { { 6, 10 }, { 4, 300 } };
    for (int c = 0; c < 2; c++)
        for (int l = 0; l < 2; l++) {
            const int64_t B = BK[c][0], K = BK[c][1];
            const double ls = l ? 0.1 : 0.0;
            int32_t t[6];
            for (int64_t b = 0; b < B; b++) t[b] = (int32_t)((b * 7 + 3) % K);
            gx_tensor *x = leaf(h, 2, GX_SHAPE(B, K), -5, 5);
            gx_tensor *y = gx_cross_entropy(&h->ctx, x, t, ls);
            float *g = rnd(h, B);
            cpu_bw(h, y, g);
            int32_t *dt = dev(h, sizeof t);
            gx_cuda_upload(h->s, dt, t, sizeof t);
            double *lse = dev(h, (size_t)B * sizeof(double));
            float *dx = up(h, x->data, x->numel), *dl = zeros(h, B), *dg = zeros(h, x->numel);
            gx_cu_cross_entropy_fwd(h->s, dx, dt, ls, dl, lse, B, K);
            gx_cu_cross_entropy_bwd(h->s, dx, dt, ls, lse, up(h, g, B), dg, B, K);
            snprintf(what, sizeof what, "cross_entropy K=%lld ls=%g forward", (long long)K, ls);
            cmp(h, what, dl, y->data, B, ATOL_R, ATOL_R);
            snprintf(what, sizeof what, "cross_entropy K=%lld ls=%g backward", (long long)K, ls);
            cmp(h, what, dg, x->grad, x->numel, ATOL_R, ATOL_R);
            reset(h);
        }
}

/* ---------------------------------------------------------------- gemm */

/* C = op(A) op(B) in double, row-major (the reference for the transposes). */
static void ref_gemm(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, const float *B,
                     float *C) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++)
                s += (double)(ta ? A[k * M + i] : A[i * K + k]) * (tb ? B[j * K + k] : B[k * N + j]);
            C[i * N + j] = (float)s;
        }
}

/* Runs on stream s: every helper uses h->s, so it is swapped in for the
 * duration (uploads, launches and downloads then share one stream). */
static void test_gemm_on(th *h, gx_cuda_stream *s, const char *mode, double tol) {
    char what[96];
    gx_cuda_stream *saved = h->s;
    h->s = s;
    const int64_t M = 33, N = 47, K = 129;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            float *A = rnd(h, M * K), *B = rnd(h, K * N), *C = gx_ctx_alloc(&h->ctx, (size_t)(M * N) * sizeof(float));
            ref_gemm(ta, tb, M, N, K, A, B, C);
            float *dc = zeros(h, M * N);
            gx_cu_gemm(s, ta, tb, M, N, K, 1.0f, up(h, A, M * K), ta ? M : K, up(h, B, K * N), tb ? K : N,
                       0.0f, dc, N);
            snprintf(what, sizeof what, "%s gemm ta=%d tb=%d", mode, ta, tb);
            cmp(h, what, dc, C, M * N, tol, tol);
            reset(h);
        }
    /* Batched, through gx_matmul's forward and backward: dA = g B^T, dB = A^T g. */
    const int64_t Bt = 3;
    gx_tensor *a = leaf(h, 3, GX_SHAPE(Bt, M, K), -1, 1), *b = leaf(h, 3, GX_SHAPE(Bt, K, N), -1, 1);
    gx_tensor *y = gx_matmul(&h->ctx, a, b);
    float *g = rnd(h, y->numel);
    cpu_bw(h, y, g);
    float *da = up(h, a->data, a->numel), *db = up(h, b->data, b->numel), *dg = up(h, g, y->numel);
    float *dy = zeros(h, y->numel), *ga = zeros(h, a->numel), *gb = zeros(h, b->numel);
    gx_cu_gemm_batched(s, 0, 0, M, N, K, 1.0f, da, K, M * K, db, N, K * N, 0.0f, dy, N, M * N, Bt);
    gx_cu_gemm_batched(s, 0, 1, M, K, N, 1.0f, dg, N, M * N, db, N, K * N, 1.0f, ga, K, M * K, Bt);
    gx_cu_gemm_batched(s, 1, 0, K, N, M, 1.0f, da, K, M * K, dg, N, M * N, 1.0f, gb, N, K * N, Bt);
    gx_err err;
    if (gx_cuda_stream_sync(s, &err) != GX_OK) { printf("FAIL gemm %s: %s\n", mode, err.msg); h->fails++; }
    snprintf(what, sizeof what, "%s batched matmul forward", mode);
    cmp(h, what, dy, y->data, y->numel, tol, tol);
    snprintf(what, sizeof what, "%s batched matmul grad a", mode);
    cmp(h, what, ga, a->grad, a->numel, tol, tol);
    snprintf(what, sizeof what, "%s batched matmul grad b", mode);
    cmp(h, what, gb, b->grad, b->numel, tol, tol);
    reset(h);
    h->s = saved;
}

static void test_gemm(th *h) {
    test_gemm_on(h, h->s, "fp32", ATOL_G);
    test_gemm_on(h, h->s_tf32, "tf32", 2e-2);
}

/* ---------------------------------------------------------------- norm */

static void test_norm(th *h) {
    const int64_t R = 4 * 6, D = 33;
    gx_tensor *x = leaf(h, 3, GX_SHAPE(4, 6, D), -2, 3);
    gx_tensor *ga = leaf(h, 1, GX_SHAPE(D), 0.5, 1.5), *be = leaf(h, 1, GX_SHAPE(D), -1, 1);
    gx_tensor *y = gx_layernorm(&h->ctx, x, ga, be, 1e-5);
    float *g = rnd(h, y->numel);
    cpu_bw(h, y, g);
    double *mean = dev(h, (size_t)R * sizeof(double)), *rstd = dev(h, (size_t)R * sizeof(double));
    float *dx = up(h, x->data, x->numel), *dga = up(h, ga->data, D), *dy = zeros(h, y->numel);
    float *gx = zeros(h, x->numel), *gg = zeros(h, D), *gb = zeros(h, D);
    gx_cu_layernorm_fwd(h->s, dx, dga, up(h, be->data, D), dy, mean, rstd, R, D, 1e-5);
    gx_cu_layernorm_bwd(h->s, dx, dga, mean, rstd, up(h, g, y->numel), gx, gg, gb, R, D);
    cmp(h, "layernorm forward", dy, y->data, y->numel, ATOL_R, ATOL_R);
    cmp(h, "layernorm grad x", gx, x->grad, x->numel, ATOL_R, ATOL_R);
    cmp(h, "layernorm grad gamma", gg, ga->grad, D, ATOL_R, ATOL_R);
    cmp(h, "layernorm grad beta", gb, be->grad, D, ATOL_R, ATOL_R);
    reset(h);

    for (int training = 1; training >= 0; training--) {
        const int64_t B = 4, C = 5, S = 9;
        gx_tensor *xb = leaf(h, 4, GX_SHAPE(B, C, 3, 3), -2, 3);
        gx_tensor *gm = leaf(h, 1, GX_SHAPE(C), 0.5, 1.5), *bt = leaf(h, 1, GX_SHAPE(C), -1, 1);
        gx_tensor *rm = leaf(h, 1, GX_SHAPE(C), -0.5, 0.5), *rv = leaf(h, 1, GX_SHAPE(C), 0.5, 2);
        rm->requires_grad = rv->requires_grad = 0;
        float *drm = up(h, rm->data, C), *drv = up(h, rv->data, C);   /* before the CPU moves them */
        gx_tensor *yb = gx_batchnorm(&h->ctx, xb, gm, bt, rm, rv, training, 0.1, 1e-5);
        float *gy = rnd(h, yb->numel);
        cpu_bw(h, yb, gy);
        double *mu = dev(h, (size_t)C * sizeof(double)), *is = dev(h, (size_t)C * sizeof(double));
        float *dxb = up(h, xb->data, xb->numel), *dgm = up(h, gm->data, C), *dyb = zeros(h, yb->numel);
        float *gxb = zeros(h, xb->numel), *ggm = zeros(h, C), *gbt = zeros(h, C);
        gx_cu_batchnorm_fwd(h->s, dxb, dgm, up(h, bt->data, C), drm, drv, training, 0.1, 1e-5, dyb, mu, is,
                            B, C, S);
        gx_cu_batchnorm_bwd(h->s, dxb, dgm, training, mu, is, up(h, gy, yb->numel), gxb, ggm, gbt, B, C, S);
        const char *m = training ? "train" : "eval";
        char what[64];
        snprintf(what, sizeof what, "batchnorm %s forward", m);
        cmp(h, what, dyb, yb->data, yb->numel, ATOL_R, ATOL_R);
        snprintf(what, sizeof what, "batchnorm %s running mean", m);
        cmp(h, what, drm, rm->data, C, ATOL_R, ATOL_R);
        snprintf(what, sizeof what, "batchnorm %s running var", m);
        cmp(h, what, drv, rv->data, C, ATOL_R, ATOL_R);
        snprintf(what, sizeof what, "batchnorm %s grad x", m);
        cmp(h, what, gxb, xb->grad, xb->numel, ATOL_R, ATOL_R);
        snprintf(what, sizeof what, "batchnorm %s grad gamma", m);
        cmp(h, what, ggm, gm->grad, C, ATOL_R, ATOL_R);
        snprintf(what, sizeof what, "batchnorm %s grad beta", m);
        cmp(h, what, gbt, bt->grad, C, ATOL_R, ATOL_R);
        reset(h);
    }
}

/* ---------------------------------------------------------------- conv */

static void test_conv(th *h) {
    static const gx_cu_conv_shape C[] = {
        { 2, 4, 9, 9, 6, 3, 3, 1, 1, 1 },     /* 3x3 same */
        { 2, 4, 10, 9, 6, 3, 3, 2, 1, 2 },    /* strided, 2 groups */
        { 2, 4, 8, 8, 4, 3, 3, 1, 1, 4 },     /* depthwise */
        { 3, 5, 6, 7, 8, 1, 1, 1, 0, 1 },     /* 1x1 */
        { 1, 3, 11, 11, 4, 5, 5, 2, 2, 1 },   /* 5x5 stride 2 */
    };
    char what[64];
    for (size_t k = 0; k < sizeof C / sizeof *C; k++) {
        const gx_cu_conv_shape *c = &C[k];
        gx_tensor *x = leaf(h, 4, GX_SHAPE(c->B, c->Cin, c->H, c->W), -1, 1);
        gx_tensor *w = leaf(h, 4, GX_SHAPE(c->Cout, c->Cin / c->groups, c->kh, c->kw), -0.5, 0.5);
        gx_tensor *b = leaf(h, 1, GX_SHAPE(c->Cout), -0.5, 0.5);
        gx_tensor *y = gx_conv2d(&h->ctx, x, w, b, c->stride, c->pad, c->groups);
        float *g = rnd(h, y->numel);
        cpu_bw(h, y, g);
        float *col = dev(h, (size_t)gx_cu_conv_col_floats(c) * sizeof(float));
        float *dx = up(h, x->data, x->numel), *dw = up(h, w->data, w->numel), *dy = zeros(h, y->numel);
        float *gx = zeros(h, x->numel), *gw = zeros(h, w->numel), *gb = zeros(h, b->numel);
        gx_cu_conv2d_fwd(h->s, c, dx, dw, up(h, b->data, b->numel), dy, col);
        gx_cu_conv2d_bwd(h->s, c, dx, dw, up(h, g, y->numel), gx, gw, gb, col);
        snprintf(what, sizeof what, "conv case %zu forward", k);
        cmp(h, what, dy, y->data, y->numel, ATOL_G, ATOL_G);
        snprintf(what, sizeof what, "conv case %zu grad x", k);
        cmp(h, what, gx, x->grad, x->numel, ATOL_G, ATOL_G);
        snprintf(what, sizeof what, "conv case %zu grad w", k);
        cmp(h, what, gw, w->grad, w->numel, ATOL_G, ATOL_G);
        snprintf(what, sizeof what, "conv case %zu grad b", k);
        cmp(h, what, gb, b->grad, b->numel, ATOL_G, ATOL_G);
        reset(h);
    }
}

/* ---------------------------------------------------------------- pool */

static void test_pool(th *h) {
    static const int64_t R[][4] = { { 7, 5, 3, 3 }, { 5, 6, 8, 9 }, { 8, 8, 1, 1 }, { 6, 7, 6, 7 } };
    char what[64];
    for (int kind = 0; kind < 2; kind++)
        for (size_t k = 0; k < sizeof R / sizeof *R; k++) {
            const int64_t H = R[k][0], W = R[k][1], oh = R[k][2], ow = R[k][3], P = 2 * 3;
            gx_tensor *x = leaf(h, 4, GX_SHAPE(2, 3, H, W), -1, 1);
            gx_tensor *y = kind ? gx_resize_bilinear(&h->ctx, x, oh, ow) : gx_adaptive_avg_pool2d(&h->ctx, x, oh, ow);
            float *g = rnd(h, y->numel);
            cpu_bw(h, y, g);
            float *dx = up(h, x->data, x->numel), *dy = zeros(h, y->numel), *gx = zeros(h, x->numel);
            float *dg = up(h, g, y->numel);
            if (kind) {
                gx_cu_resize_bilinear_fwd(h->s, dx, dy, P, H, W, oh, ow);
                gx_cu_resize_bilinear_bwd(h->s, dg, gx, P, H, W, oh, ow);
            } else {
                gx_cu_adaptive_avg_pool_fwd(h->s, dx, dy, P, H, W, oh, ow);
                gx_cu_adaptive_avg_pool_bwd(h->s, dg, gx, P, H, W, oh, ow);
            }
            const char *name = kind ? "bilinear" : "adaptive_avg_pool";
            snprintf(what, sizeof what, "%s %lldx%lld->%lldx%lld forward", name, (long long)H, (long long)W,
                     (long long)oh, (long long)ow);
            cmp(h, what, dy, y->data, y->numel, ATOL_E, ATOL_E);
            snprintf(what, sizeof what, "%s %lldx%lld->%lldx%lld backward", name, (long long)H, (long long)W,
                     (long long)oh, (long long)ow);
            cmp(h, what, gx, x->grad, x->numel, ATOL_E, ATOL_E);
            reset(h);
        }
    gx_tensor *x = leaf(h, 4, GX_SHAPE(2, 3, 5, 4), -1, 1);
    gx_tensor *y = gx_upsample_nearest2x(&h->ctx, x);
    float *g = rnd(h, y->numel);
    cpu_bw(h, y, g);
    float *dy = zeros(h, y->numel), *gx = zeros(h, x->numel);
    gx_cu_upsample_nearest2x_fwd(h->s, up(h, x->data, x->numel), dy, 6, 5, 4);
    gx_cu_upsample_nearest2x_bwd(h->s, up(h, g, y->numel), gx, 6, 5, 4);
    cmp(h, "nearest2x forward", dy, y->data, y->numel, 0, 0);
    cmp(h, "nearest2x backward", gx, x->grad, x->numel, ATOL_E, ATOL_E);
    reset(h);
}

/* ------------------------------------------------- max pool and conv1d */

static void test_maxpool_conv1d(th *h) {
    static const int P_[][5] = { { 9, 8, 3, 2, 1 }, { 8, 8, 2, 2, 0 }, { 7, 6, 3, 1, 1 } };
    char what[64];
    for (size_t k = 0; k < sizeof P_ / sizeof *P_; k++) {
        const int64_t H = P_[k][0], W = P_[k][1];
        const int ks = P_[k][2], st = P_[k][3], pad = P_[k][4];
        gx_tensor *x = leaf(h, 4, GX_SHAPE(2, 3, H, W), -1, 1);
        for (int64_t i = 0; i < x->numel; i += 3) x->data[i] = roundf(x->data[i] * 2) / 2;   /* ties */
        gx_tensor *y = gx_max_pool2d(&h->ctx, x, ks, st, pad);
        float *g = rnd(h, y->numel);
        cpu_bw(h, y, g);
        float *dx = up(h, x->data, x->numel), *dy = zeros(h, y->numel), *gx = zeros(h, x->numel);
        gx_cu_max_pool2d_fwd(h->s, dx, dy, 6, H, W, ks, st, pad);
        gx_cu_max_pool2d_bwd(h->s, dx, up(h, g, y->numel), gx, 6, H, W, ks, st, pad);
        snprintf(what, sizeof what, "max_pool case %zu forward", k);
        cmp(h, what, dy, y->data, y->numel, 0, 0);
        snprintf(what, sizeof what, "max_pool case %zu backward", k);
        cmp(h, what, gx, x->grad, x->numel, ATOL_E, ATOL_E);
        reset(h);
    }
    const int64_t B = 3, L = 17, E = 37, K = 4;
    gx_tensor *x = leaf(h, 3, GX_SHAPE(B, L, E), -1, 1), *w = leaf(h, 3, GX_SHAPE(E, 1, K), -1, 1);
    gx_tensor *b = leaf(h, 1, GX_SHAPE(E), -1, 1);
    gx_tensor *y = gx_conv1d_causal_dw(&h->ctx, x, w, b);
    float *g = rnd(h, y->numel);
    cpu_bw(h, y, g);
    float *dx = up(h, x->data, x->numel), *dw = up(h, w->data, w->numel), *dy = zeros(h, y->numel);
    float *gx = zeros(h, x->numel), *gw = zeros(h, w->numel), *gb = zeros(h, E);
    gx_cu_conv1d_causal_dw_fwd(h->s, dx, dw, up(h, b->data, E), dy, B, L, E, K);
    gx_cu_conv1d_causal_dw_bwd(h->s, dx, dw, up(h, g, y->numel), gx, gw, gb, B, L, E, K);
    cmp(h, "conv1d forward", dy, y->data, y->numel, ATOL_R, ATOL_R);
    cmp(h, "conv1d grad x", gx, x->grad, x->numel, ATOL_R, ATOL_R);
    cmp(h, "conv1d grad w", gw, w->grad, w->numel, ATOL_R, ATOL_R);
    cmp(h, "conv1d grad b", gb, b->grad, E, ATOL_R, ATOL_R);
    reset(h);
}

/* ---------------------------------------------------------------- scan */

static void test_scan(th *h) {
    static const int64_t Cs[][5] = {      /* B, L, E, N, token mode */
        { 2, 9, 5, 16, 1 }, { 2, 9, 5, 16, 0 }, { 3, 17, 37, 5, 1 }, { 1, 4, 3, 32, 1 },
    };
    char what[64];
    for (size_t k = 0; k < sizeof Cs / sizeof *Cs; k++) {
        const int64_t B = Cs[k][0], L = Cs[k][1], E = Cs[k][2], N = Cs[k][3], Ld = Cs[k][4] ? L : 1;
        gx_tensor *xs = leaf(h, 3, GX_SHAPE(B, L, E), -1, 1);
        gx_tensor *dl = leaf(h, 3, GX_SHAPE(B, Ld, E), 0.01, 1);
        gx_tensor *A = leaf(h, 2, GX_SHAPE(E, N), -3, -0.05);
        gx_tensor *Bm = leaf(h, 2, GX_SHAPE(E, N), -1, 1), *Cm = leaf(h, 2, GX_SHAPE(E, N), -1, 1);
        dl->data[0] = 1e-7f;                   /* the |delta A| < 1e-6 branch */
        gx_tensor *y = gx_ssm_scan(&h->ctx, xs, dl, A, Bm, Cm);
        float *g = rnd(h, y->numel);
        cpu_bw(h, y, g);
        float *dxs = up(h, xs->data, xs->numel), *ddl = up(h, dl->data, dl->numel);
        float *dA = up(h, A->data, A->numel), *dB = up(h, Bm->data, Bm->numel), *dC = up(h, Cm->data, Cm->numel);
        float *dy = zeros(h, y->numel), *gxs = zeros(h, xs->numel), *gdl = zeros(h, dl->numel);
        float *gA = zeros(h, A->numel), *gB = zeros(h, A->numel), *gC = zeros(h, A->numel);
        double *H = dev(h, (size_t)(B * L * E * N) * sizeof(double));
        gx_cu_ssm_scan_fwd(h->s, dxs, ddl, dA, dB, dC, dy, B, L, Ld, E, N);
        gx_cu_ssm_scan_bwd(h->s, dxs, ddl, dA, dB, dC, up(h, g, y->numel), gxs, gdl, gA, gB, gC, H,
                           B, L, Ld, E, N);
        const struct { const char *n; float *d; gx_tensor *t; } out[] = {
            { "y", dy, NULL }, { "grad xs", gxs, xs }, { "grad delta", gdl, dl },
            { "grad A", gA, A }, { "grad Bm", gB, Bm }, { "grad Cm", gC, Cm },
        };
        for (int i = 0; i < 6; i++) {
            snprintf(what, sizeof what, "scan case %zu %s", k, out[i].n);
            const gx_tensor *t = out[i].t;
            cmp(h, what, out[i].d, t ? t->grad : y->data, t ? t->numel : y->numel, ATOL_G, ATOL_G);
        }
        reset(h);
    }
}

/* ------------------------------------------------------------ sinkhorn */

static void test_sinkhorn(th *h) {
    static const struct { int64_t B, n; int iters; double lambda; } Cs[] = { { 37, 40, 50, 0.1 }, { 2, 7, 1, 0.5 } };
    char what[64];
    for (size_t k = 0; k < sizeof Cs / sizeof *Cs; k++) {
        const int64_t B = Cs[k].B, n = Cs[k].n;
        const int T = Cs[k].iters;
        gx_tensor *a = leaf(h, 2, GX_SHAPE(B, n), 0.01, 1), *b = leaf(h, 2, GX_SHAPE(B, n), 0.01, 1);
        a->data[1] = 0.0f;                     /* an empty bin */
        gx_tensor *C = gx_tensor_new(&h->ctx, 2, GX_SHAPE(n, n));
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++) C->data[i * n + j] = (float)((i - j) * (i - j)) / (float)(n * n);
        gx_tensor *y = gx_sinkhorn_hk(&h->ctx, a, b, C, Cs[k].lambda, T, 1e-4);
        float *g = rnd(h, B);
        cpu_bw(h, y, g);
        double *mats = dev(h, (size_t)(4 * n * n) * sizeof(double));
        double *pq = dev(h, (size_t)(B * T * 2 * n + B) * sizeof(double));
        double *work = dev(h, (size_t)(B * 7 * n) * sizeof(double));
        float *da = up(h, a->data, a->numel), *db = up(h, b->data, b->numel), *dy = zeros(h, B);
        float *ga = zeros(h, a->numel), *gb = zeros(h, b->numel);
        gx_cu_sinkhorn_fwd(h->s, da, db, up(h, C->data, n * n), Cs[k].lambda, T, 1e-4, dy, mats, pq, work, B, n);
        gx_cu_sinkhorn_bwd(h->s, da, db, up(h, g, B), mats, pq, T, ga, gb, work, B, n);
        snprintf(what, sizeof what, "sinkhorn case %zu forward", k);
        cmp(h, what, dy, y->data, B, ATOL_R, ATOL_R);
        snprintf(what, sizeof what, "sinkhorn case %zu grad a", k);
        cmp(h, what, ga, a->grad, a->numel, ATOL_R, ATOL_R);
        snprintf(what, sizeof what, "sinkhorn case %zu grad b", k);
        cmp(h, what, gb, b->grad, b->numel, ATOL_R, ATOL_R);
        reset(h);
    }
}

/* --------------------------------------------------------------- optim */

static void test_optim(th *h) {
    gx_optim_cfg cfgs[3] = { gx_optim_defaults(GX_OPT_ADAMW), gx_optim_defaults(GX_OPT_ADAM),
                             gx_optim_defaults(GX_OPT_SGD) };
    cfgs[1].weight_decay = 0.05;
    cfgs[2].momentum = 0.9; cfgs[2].nesterov = 1; cfgs[2].weight_decay = 0.01;
    char what[64];
    for (int c = 0; c < 3; c++) {
        gx_params P;
        gx_params_init(&P);
        gx_tensor *t = gx_params_add(&P, "w", 2, GX_SHAPE(33, 65), GX_PARAM_DECAY);
        gx_rng_fill_uniform(&h->rng, t->data, t->numel, -1, 1);
        const int64_t n = t->numel;
        float *dx = up(h, t->data, n), *dg = zeros(h, n), *dst = zeros(h, 2 * n);
        gx_optim o;
        gx_err err;
        if (gx_optim_init(&o, &P, &cfgs[c], &err) != GX_OK) { printf("FAIL optim init: %s\n", err.msg); h->fails++; }
        const double lr[1] = { 0.01 };
        for (int64_t step = 1; step <= 3; step++) {
            gx_rng_fill_uniform(&h->rng, t->grad, n, -1, 1);
            gx_cuda_upload(h->s, dg, t->grad, (size_t)n * sizeof(float));
            gx_optim_step(&o, &P, lr);
            gx_cu_optim_update(h->s, &cfgs[c], dx, dg, dst, n, step, lr[0], cfgs[c].weight_decay);
            gx_cuda_stream_sync(h->s, &err);       /* t->grad is rewritten next step */
        }
        snprintf(what, sizeof what, "optim config %d after 3 steps", c);
        cmp(h, what, dx, t->data, n, ATOL_E, ATOL_E);
        gx_optim_free(&o);
        gx_params_free(&P);
        reset(h);
    }
}

/* --------------------------------------------------------------- shape */

static void test_shape(th *h) {
    char what[64];
    static const struct { int nd; int64_t s[4]; int perm[4]; } Pm[] = {
        { 3, { 4, 5, 6 }, { 2, 0, 1 } }, { 4, { 2, 3, 4, 5 }, { 0, 2, 3, 1 } }, { 4, { 2, 3, 4, 5 }, { 3, 2, 1, 0 } },
    };
    for (size_t k = 0; k < sizeof Pm / sizeof *Pm; k++) {
        gx_tensor *x = leaf(h, Pm[k].nd, Pm[k].s, -1, 1);
        gx_tensor *y = gx_permute(&h->ctx, x, Pm[k].perm);
        float *g = rnd(h, y->numel);
        cpu_bw(h, y, g);
        float *dy = zeros(h, y->numel), *gx = zeros(h, x->numel);
        gx_cu_permute_fwd(h->s, up(h, x->data, x->numel), Pm[k].nd, Pm[k].s, Pm[k].perm, dy);
        gx_cu_permute_bwd(h->s, up(h, g, y->numel), Pm[k].nd, Pm[k].s, Pm[k].perm, gx);
        snprintf(what, sizeof what, "permute case %zu forward", k);
        cmp(h, what, dy, y->data, y->numel, 0, 0);
        snprintf(what, sizeof what, "permute case %zu backward", k);
        cmp(h, what, gx, x->grad, x->numel, 0, 0);
        reset(h);
    }
    for (int dim = 0; dim < 3; dim++) {
        const int64_t sz[3] = { 2, 5, 3 };
        gx_tensor *xs[3];
        const float *dxs[3];
        float *gxs[3];
        for (int k = 0; k < 3; k++) {
            int64_t sh[3] = { 3, 4, 5 };
            sh[dim] = sz[k];
            xs[k] = leaf(h, 3, sh, -1, 1);
            dxs[k] = up(h, xs[k]->data, xs[k]->numel);
            gxs[k] = zeros(h, xs[k]->numel);
        }
        gx_tensor *y = gx_concat(&h->ctx, 3, xs, dim);
        float *g = rnd(h, y->numel);
        cpu_bw(h, y, g);
        int64_t outer, inner;
        ctu_split(y->shape, 3, dim, &outer, &inner);
        float *dy = zeros(h, y->numel);
        gx_cu_concat_fwd(h->s, 3, dxs, sz, dy, outer, inner);
        gx_cu_concat_bwd(h->s, 3, up(h, g, y->numel), sz, gxs, outer, inner);
        snprintf(what, sizeof what, "concat dim %d forward", dim);
        cmp(h, what, dy, y->data, y->numel, 0, 0);
        for (int k = 0; k < 3; k++) {
            snprintf(what, sizeof what, "concat dim %d grad %d", dim, k);
            cmp(h, what, gxs[k], xs[k]->grad, xs[k]->numel, 0, 0);
        }
        reset(h);
        /* slice [1, 4) and flip of x, both gradients into one buffer: one
         * CPU backward through concat(slice, flip) (a second gx_backward
         * would rerun the first one's nodes) */
        int64_t sh[3] = { 3, 4, 5 };
        sh[dim] = 6;
        gx_tensor *x = leaf(h, 3, sh, -1, 1);
        gx_tensor *ys = gx_slice(&h->ctx, x, dim, 1, 4), *yf = gx_flip(&h->ctx, x, dim);
        gx_tensor *both[2] = { gx_reshape(&h->ctx, ys, 1, GX_SHAPE(ys->numel)),
                               gx_reshape(&h->ctx, yf, 1, GX_SHAPE(yf->numel)) };
        gx_tensor *cat = gx_concat(&h->ctx, 2, both, 0);
        float *gc = rnd(h, cat->numel), *gs = gc, *gf = gc + ys->numel;
        cpu_bw(h, cat, gc);
        ctu_split(sh, 3, dim, &outer, &inner);
        float *dx = up(h, x->data, x->numel), *dys = zeros(h, ys->numel), *dyf = zeros(h, yf->numel);
        float *gx = zeros(h, x->numel);
        gx_cu_slice_fwd(h->s, dx, dys, outer, 6, inner, 1, 4);
        gx_cu_flip_fwd(h->s, dx, dyf, outer, 6, inner);
        gx_cu_slice_bwd(h->s, up(h, gs, ys->numel), gx, outer, 6, inner, 1, 4);
        gx_cu_flip_bwd(h->s, up(h, gf, yf->numel), gx, outer, 6, inner);
        snprintf(what, sizeof what, "slice dim %d forward", dim);
        cmp(h, what, dys, ys->data, ys->numel, 0, 0);
        snprintf(what, sizeof what, "flip dim %d forward", dim);
        cmp(h, what, dyf, yf->data, yf->numel, 0, 0);
        snprintf(what, sizeof what, "slice+flip dim %d backward", dim);
        cmp(h, what, gx, x->grad, x->numel, ATOL_E, ATOL_E);   /* the CPU adds in another order */
        reset(h);
    }
    /* reshape's backward: gx += g */
    gx_tensor *xr = leaf(h, 2, GX_SHAPE(6, 7), -1, 1);
    gx_tensor *yr = gx_reshape(&h->ctx, xr, 3, GX_SHAPE(3, 2, 7));
    float *gr = rnd(h, yr->numel), *gxr = zeros(h, xr->numel);
    cpu_bw(h, yr, gr);
    gx_cu_accumulate(h->s, gxr, up(h, gr, yr->numel), yr->numel);
    cmp(h, "reshape backward (accumulate)", gxr, xr->grad, xr->numel, 0, 0);
    reset(h);
    const int64_t B = 37, K = 11;
    int32_t idx[37];
    for (int64_t b = 0; b < B; b++) idx[b] = (int32_t)((b * 7 + 3) % K);
    gx_tensor *x = leaf(h, 2, GX_SHAPE(B, K), -1, 1);
    gx_tensor *y = gx_gather(&h->ctx, x, idx), *oh = gx_one_hot(&h->ctx, idx, B, K);
    float *g = rnd(h, B);
    cpu_bw(h, y, g);
    int32_t *di = dev(h, sizeof idx);
    gx_cuda_upload(h->s, di, idx, sizeof idx);
    float *dy = zeros(h, B), *gx = zeros(h, x->numel), *doh = zeros(h, B * K);
    gx_cu_gather_fwd(h->s, up(h, x->data, x->numel), di, dy, B, K);
    gx_cu_gather_bwd(h->s, di, up(h, g, B), gx, B, K);
    gx_cu_one_hot(h->s, di, doh, B, K);
    cmp(h, "gather forward", dy, y->data, B, 0, 0);
    cmp(h, "gather backward", gx, x->grad, x->numel, 0, 0);
    cmp(h, "one_hot", doh, oh->data, B * K, 0, 0);
    reset(h);
}

/* ------------------------------------------------- more reductions */

static void test_reduce2(th *h) {
    char what[64];
    const int64_t shape[3] = { 3, 50, 7 };
    for (int d = 0; d < 3; d++) {
        int64_t outer, n = shape[d], inner;
        ctu_split(shape, 3, d, &outer, &inner);
        const int64_t ncol = outer * inner;
        gx_tensor *x = leaf(h, 3, shape, -4, 4);
        gx_tensor *y = gx_logsumexp(&h->ctx, x, d, 0);
        float *g = rnd(h, ncol);
        cpu_bw(h, y, g);
        float *dx = up(h, x->data, x->numel), *dy = zeros(h, ncol), *gx = zeros(h, x->numel);
        gx_cu_logsumexp_fwd(h->s, dx, dy, outer, n, inner);
        gx_cu_logsumexp_bwd(h->s, dx, dy, up(h, g, ncol), gx, outer, n, inner);
        snprintf(what, sizeof what, "logsumexp dim %d forward", d);
        cmp(h, what, dy, y->data, ncol, ATOL_R, ATOL_R);
        snprintf(what, sizeof what, "logsumexp dim %d backward", d);
        cmp(h, what, gx, x->grad, x->numel, ATOL_R, ATOL_R);
        reset(h);
        const double eps = 1e-3;
        x = leaf(h, 3, shape, -1, 1);
        for (int64_t j = 0; j < n; j++) x->data[((1 / inner) * n + j) * inner + 1 % inner] *= 1e-6f;  /* clamped column */
        y = gx_l2_normalize(&h->ctx, x, d, eps);
        g = rnd(h, x->numel);
        cpu_bw(h, y, g);
        double *norm = dev(h, (size_t)ncol * sizeof(double));
        dy = zeros(h, x->numel);
        gx = zeros(h, x->numel);
        gx_cu_l2_normalize_fwd(h->s, up(h, x->data, x->numel), dy, norm, eps, outer, n, inner);
        gx_cu_l2_normalize_bwd(h->s, dy, norm, up(h, g, x->numel), gx, eps, outer, n, inner);
        snprintf(what, sizeof what, "l2_normalize dim %d forward", d);
        cmp(h, what, dy, y->data, x->numel, ATOL_R, ATOL_R);
        snprintf(what, sizeof what, "l2_normalize dim %d backward", d);
        cmp(h, what, gx, x->grad, x->numel, ATOL_R, ATOL_R);
        reset(h);
    }
    for (int mean = 0; mean < 2; mean++) {
        const int64_t n = 5 * GX_CU_CHUNK + 321;
        gx_tensor *x = leaf(h, 1, GX_SHAPE(n), -1, 1);
        gx_tensor *y = mean ? gx_mean_all(&h->ctx, x) : gx_sum_all(&h->ctx, x);
        float g = 0.75f;
        cpu_bw(h, y, &g);
        double *part = dev(h, (size_t)gx_cu_chunk_count(n) * sizeof(double));
        float *dy = zeros(h, 1), *gx = zeros(h, n);
        gx_cu_sum_all_fwd(h->s, mean, up(h, x->data, n), dy, part, n);
        gx_cu_sum_all_bwd(h->s, mean, up(h, &g, 1), gx, n);
        snprintf(what, sizeof what, "%s forward", mean ? "mean_all" : "sum_all");
        cmp(h, what, dy, y->data, 1, ATOL_R, ATOL_R);
        snprintf(what, sizeof what, "%s backward", mean ? "mean_all" : "sum_all");
        cmp(h, what, gx, x->grad, n, 0, 0);
        reset(h);
    }
    /* gradient clipping: clipped (max 0.5) and not (max 1e6) */
    for (int clip = 1; clip >= 0; clip--) {
        gx_params P;
        gx_params_init(&P);
        gx_tensor *t[3] = { gx_params_add(&P, "w", 2, GX_SHAPE(97, 181), GX_PARAM_DECAY),
                            gx_params_add(&P, "b", 1, GX_SHAPE(13), 0), gx_params_add(&P, "c", 2, GX_SHAPE(3, 5), 0) };
        float *dg[3];
        int64_t n[3];
        for (int i = 0; i < 3; i++) {
            gx_rng_fill_uniform(&h->rng, t[i]->grad, t[i]->numel, -1, 1);
            n[i] = t[i]->numel;
            dg[i] = up(h, t[i]->grad, n[i]);
        }
        double *part = dev(h, (size_t)gx_cu_clip_scratch(3, n) * sizeof(double)), *dnorm = dev(h, sizeof(double));
        const double max_norm = clip ? 0.5 : 1e6;
        gx_cu_clip_grad_norm(h->s, 3, dg, n, max_norm, part, dnorm);
        double got = 0;
        gx_err err;
        gx_cuda_download(h->s, &got, dnorm, sizeof got);          /* t->grad is read before the CPU clips */
        if (gx_cuda_stream_sync(h->s, &err) != GX_OK) { printf("FAIL clip: %s\n", err.msg); h->fails++; }
        const double want = gx_clip_grad_norm(&P, max_norm);
        h->checks++;
        if (!(fabs(got - want) <= 1e-9 * want)) {
            printf("FAIL %s clip %d norm: gpu %.17g cpu %.17g\n", h->group, clip, got, want);
            h->fails++;
        }
        for (int i = 0; i < 3; i++) {
            snprintf(what, sizeof what, "clip %d tensor %d", clip, i);
            cmp(h, what, dg[i], t[i]->grad, n[i], ATOL_E, ATOL_E);
        }
        gx_params_free(&P);
        reset(h);
    }
}

/* ------------------------------------------------------------ pairwise */

static void test_pairwise(th *h) {
    char what[64];
    for (int same = 0; same < 2; same++) {
        const int64_t N = 33, M = same ? 33 : 20, D = 47;
        gx_tensor *a = leaf(h, 2, GX_SHAPE(N, D), -1, 1), *b = same ? a : leaf(h, 2, GX_SHAPE(M, D), -1, 1);
        gx_tensor *y = gx_pairwise_sqdist(&h->ctx, a, b);
        float *g = rnd(h, y->numel);
        cpu_bw(h, y, g);
        float *da = up(h, a->data, a->numel), *db = same ? da : up(h, b->data, b->numel);
        float *dy = zeros(h, N * M), *ga = zeros(h, N * D), *gb = same ? ga : zeros(h, M * D);
        double *sq = dev(h, (size_t)(N + M) * sizeof(double)), *sums = dev(h, (size_t)(N + M) * sizeof(double));
        gx_cu_pairwise_sqdist_fwd(h->s, da, db, dy, sq, N, M, D);
        gx_cu_pairwise_sqdist_bwd(h->s, da, db, dy, up(h, g, N * M), ga, gb, zeros(h, N * M), sums, N, M, D);
        /* the diagonal of a == b is exactly 0 on the CPU; the GPU's GEMM may
         * round it to a tiny positive value (ATOL_G covers it) */
        snprintf(what, sizeof what, "pairwise_sqdist%s forward", same ? " (a == b)" : "");
        cmp(h, what, dy, y->data, y->numel, ATOL_G, ATOL_G);
        snprintf(what, sizeof what, "pairwise_sqdist%s grad a", same ? " (a == b)" : "");
        cmp(h, what, ga, a->grad, a->numel, ATOL_G, ATOL_G);
        if (!same) cmp(h, "pairwise_sqdist grad b", gb, b->grad, b->numel, ATOL_G, ATOL_G);
        reset(h);
    }
}

/* -------------------------------------------------------------- upconv */

static void test_upconv(th *h) {
    static const int64_t Cs[][5] = { { 2, 3, 4, 5, 4 }, { 3, 16, 8, 8, 8 }, { 2, 32, 4, 4, 16 } };
    char what[64];
    for (size_t k = 0; k < sizeof Cs / sizeof *Cs; k++) {
        const int64_t B = Cs[k][0], Cin = Cs[k][1], H = Cs[k][2], W = Cs[k][3], Cout = Cs[k][4];
        gx_tensor *x = leaf(h, 4, GX_SHAPE(B, Cin, H, W), -1, 1), *w = leaf(h, 4, GX_SHAPE(Cout, Cin, 3, 3), -0.5, 0.5);
        gx_tensor *b = leaf(h, 1, GX_SHAPE(Cout), -0.5, 0.5);
        gx_tensor *y = gx_upconv2x3(&h->ctx, x, w, b);
        float *g = rnd(h, y->numel);
        cpu_bw(h, y, g);
        h->ctx.grad_enabled = 0;
        gx_tensor *yl = gx_upconv2x3_leaky(&h->ctx, x, w, b, 0.2);
        h->ctx.grad_enabled = 1;
        float *sc = dev(h, (size_t)gx_cu_upconv_scratch_floats(Cin, H, W, Cout) * sizeof(float));
        float *dx = up(h, x->data, x->numel), *dw = up(h, w->data, w->numel), *dbias = up(h, b->data, Cout);
        float *dy = zeros(h, y->numel), *dyl = zeros(h, y->numel);
        float *gx = zeros(h, x->numel), *gw = zeros(h, w->numel), *gb = zeros(h, Cout);
        gx_cu_upconv2x3_fwd(h->s, dx, dw, dbias, -1, 0, 0, dy, sc, B, Cin, H, W, Cout);
        gx_cu_upconv2x3_fwd(h->s, dx, dw, dbias, GX_CU_LEAKY_RELU, 0.2, 0, dyl, sc, B, Cin, H, W, Cout);
        gx_cu_upconv2x3_bwd(h->s, dx, dw, up(h, g, y->numel), gx, gw, gb, sc, B, Cin, H, W, Cout);
        const struct { const char *n; float *d; const float *want; int64_t cnt; } out[] = {
            { "forward", dy, y->data, y->numel }, { "leaky forward", dyl, yl->data, y->numel },
            { "grad x", gx, x->grad, x->numel }, { "grad w", gw, w->grad, w->numel }, { "grad b", gb, b->grad, Cout },
        };
        for (int i = 0; i < 5; i++) {
            snprintf(what, sizeof what, "upconv case %zu %s", k, out[i].n);
            cmp(h, what, out[i].d, out[i].want, out[i].cnt, ATOL_G, ATOL_G);
        }
        reset(h);
    }
}

/* ------------------------------------------------- conv + BN + activation */

/* Against the CPU chain (1e-4: cuBLAS sums), and bit for bit against the
 * GPU's own unfused launchers (the epilogue rounds where they round). */
static void test_conv_bn_act(th *h) {
    static const gx_cu_conv_shape C[] = {
        { 2, 4, 9, 9, 6, 3, 3, 1, 1, 1 }, { 2, 4, 10, 9, 6, 3, 3, 2, 1, 2 }, { 3, 5, 6, 7, 8, 1, 1, 1, 0, 1 },
        { 2, 16, 8, 8, 32, 3, 3, 1, 1, 1 },
    };
    static const struct { int op; gx_cu_unary uop; ctu_unary_cpu f; double p0; } A[] = {
        { -1, GX_CU_RELU, NULL, 0 }, { GX_CU_RELU, GX_CU_RELU, gx_relu, 0 },
        { GX_CU_LEAKY_RELU, GX_CU_LEAKY_RELU, ctu_leaky, 0.1 }, { GX_CU_SILU, GX_CU_SILU, gx_silu, 0 },
    };
    char what[64];
    for (size_t k = 0; k < sizeof C / sizeof *C; k++) {
        const gx_cu_conv_shape *c = &C[k];
        const size_t ai = k % (sizeof A / sizeof *A);
        gx_tensor *x = leaf(h, 4, GX_SHAPE(c->B, c->Cin, c->H, c->W), -1, 1);
        gx_tensor *w = leaf(h, 4, GX_SHAPE(c->Cout, c->Cin / c->groups, c->kh, c->kw), -0.5, 0.5);
        gx_tensor *b = leaf(h, 1, GX_SHAPE(c->Cout), -0.5, 0.5), *gm = leaf(h, 1, GX_SHAPE(c->Cout), 0.5, 1.5);
        gx_tensor *bt = leaf(h, 1, GX_SHAPE(c->Cout), -1, 1), *rm = leaf(h, 1, GX_SHAPE(c->Cout), -0.5, 0.5);
        gx_tensor *rv = leaf(h, 1, GX_SHAPE(c->Cout), 0.5, 2);
        gx_tensor *y = ctu_conv_bn_act_cpu(&h->ctx, c, x, w, b, gm, bt, rm, rv, A[ai].f);
        const int64_t Cn = c->Cout, P = y->numel / (c->B * Cn);
        float *col = dev(h, (size_t)gx_cu_conv_col_floats(c) * sizeof(float));
        float *dx = up(h, x->data, x->numel), *dw = up(h, w->data, w->numel), *db = up(h, b->data, Cn);
        float *dgm = up(h, gm->data, Cn), *dbt = up(h, bt->data, Cn), *drm = up(h, rm->data, Cn), *drv = up(h, rv->data, Cn);
        float *dy = zeros(h, y->numel), *t1 = zeros(h, y->numel), *t2 = zeros(h, y->numel);
        double *ab = dev(h, (size_t)(2 * Cn) * sizeof(double)), *mu = dev(h, (size_t)Cn * sizeof(double));
        double *is = dev(h, (size_t)Cn * sizeof(double));
        gx_cu_conv2d_bn_act_fwd(h->s, c, dx, dw, db, dgm, dbt, drm, drv, 1e-5, A[ai].op, A[ai].p0, 0, dy, col, ab);
        gx_cu_conv2d_fwd(h->s, c, dx, dw, db, t1, col);                 /* the unfused chain */
        gx_cu_batchnorm_fwd(h->s, t1, dgm, dbt, drm, drv, 0, 0.1, 1e-5, t2, mu, is, c->B, Cn, P);
        if (A[ai].op >= 0) gx_cu_unary_fwd(h->s, A[ai].uop, A[ai].p0, 0, t2, t2, y->numel);
        float *unf = gx_ctx_alloc(&h->ctx, (size_t)y->numel * sizeof(float));
        gx_cuda_download(h->s, unf, t2, (size_t)y->numel * sizeof(float));
        snprintf(what, sizeof what, "conv_bn_act case %zu (act %d) vs CPU", k, A[ai].op);
        cmp(h, what, dy, y->data, y->numel, ATOL_G, ATOL_G);
        snprintf(what, sizeof what, "conv_bn_act case %zu (act %d) vs unfused", k, A[ai].op);
        cmp(h, what, dy, unf, y->numel, 0, 0);
        reset(h);
    }
}

/* ---------------------------------------------------------------- main */

typedef void (*group_fn)(th *);
static const group_fn k_fns[NGROUPS] = { test_elem, test_reduce, test_gemm, test_norm, test_conv,
                                         test_pool, test_maxpool_conv1d, test_scan, test_sinkhorn,
                                         test_optim, test_shape, test_reduce2, test_pairwise, test_upconv,
                                         test_conv_bn_act };

static int run_all(const char *filter) {
    th h;
    memset(&h, 0, sizeof h);
    gx_err err;
    gx_cuda_backend be;
    if (gx_cuda_device_backend(0, &be, &err) != GX_OK || gx_cuda_pool_create(&be, 0, &h.pool, &err) != GX_OK ||
        gx_cuda_stream_create(0, 0, &h.s, &err) != GX_OK || gx_cuda_stream_create(0, 1, &h.s_tf32, &err) != GX_OK) {
        printf("FAIL setup: %s\n", err.msg);
        return 1;
    }
    gx_cuda_arena_init(&h.ar, h.pool, 16 << 20);
    gx_ctx_init(&h.ctx, 64 << 20);
    h.ctx.grad_enabled = 1;
    gx_rng_init(&h.rng, 20261123);
    int total_fail = 0;
    for (int i = 0; i < NGROUPS; i++) {
        if (filter && !strstr(k_groups[i], filter)) continue;
        h.group = k_groups[i];
        h.checks = h.fails = 0;
        k_fns[i](&h);
        printf("%-7s %s: %d comparisons, %d failed\n", h.fails ? "FAIL" : "ok", k_groups[i], h.checks, h.fails);
        total_fail += h.fails;
    }
    gx_ctx_free(&h.ctx);
    gx_cuda_arena_free(&h.ar);
    gx_cuda_stream_destroy(h.s_tf32);
    gx_cuda_stream_destroy(h.s);
    gx_cuda_pool_destroy(h.pool);
    return total_fail ? 1 : 0;
}
#endif /* GX_HAVE_CUDA */

/* Usage: test_cuda [--need-sanitizer] [group]. --need-sanitizer is what
 * make test-cuda-memcheck runs when compute-sanitizer is missing: with no
 * GPU it skips like the plain run; with a GPU it fails (memcheck unproven). */
int main(int argc, char **argv) {
    int need_san = 0;
    const char *filter = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--need-sanitizer") == 0) need_san = 1;
        else filter = argv[i];
    }
    char why[160];
    if (gx_cuda_probe(why, sizeof why) == 0) {
        for (int i = 0; i < NGROUPS; i++)
            if (!filter || strstr(k_groups[i], filter)) printf("%s: skipped: no GPU (%s)\n", k_groups[i], why);
        return 0;
    }
    if (need_san) {
        printf("test-cuda-memcheck: compute-sanitizer not found (a GPU is present, so this is a failure)\n");
        return 1;
    }
#if defined(GX_HAVE_CUDA) && GX_HAVE_CUDA
    return run_all(filter);
#else
    return 0;            /* unreachable: the probe of a CUDA-less build answers 0 */
#endif
}
