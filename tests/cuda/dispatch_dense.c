/*
 * dispatch_dense.c — the dense ops (gx_matmul.h, gx_conv.h, gx_norm.h)
 * called through the gx API with their inputs on the device
 * (kernels/cuda/gx_cuda_ops_dense.c), against the same calls on the CPU:
 * forward and every input's gradient (dispatch_util.h), plus the batch-norm
 * layer with its running statistics as device parameters.
 *
 * Shapes exercise what the launchers' comments single out: odd sizes,
 * channels and features above 32 (warp-sized loops), batch > 1, strides,
 * padding, groups and depthwise, a shared (2-D) matmul operand, a == b for
 * the Gram matrix and the distances, kernels longer than the sequence.
 *
 * Tolerances are tests/cuda/test_cuda.c's for the same launchers: 1e-4 +
 * 1e-4 for everything with a cuBLAS FP32 GEMM inside (float sums in
 * another order), 1e-5 + 1e-5 for the norms and the direct conv1d (double
 * sums in another order).
 */
#include "dispatch_util.h"

#include <string.h>

#define TOL_G ((gx_gpu_tol){ 1e-4, 1e-4, 1 })   /* test_cuda.c's ATOL_G */
#define TOL_R ((gx_gpu_tol){ 1e-5, 1e-5, 1 })   /* test_cuda.c's ATOL_R */

/* ============================================================== matmul */

static gx_tensor *build_linear(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    (void)arg;
    return gx_linear(ctx, in[0], in[1], in[2]);
}
static gx_tensor *build_linear_nobias(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    (void)arg;
    return gx_linear(ctx, in[0], in[1], NULL);
}

GX_TEST(dispatch_linear) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    /* [B, L, in] tokens (one BLAS GEMM per sample on the CPU) and [B, in]
     * rows (the CPU's row-invariant kernel): one GEMM over all rows here. */
    static const int64_t x3[] = { 3, 17, 37 }, x2[] = { 5, 37 }, ws[] = { 33, 37 }, bs[] = { 33 };
    for (int k = 0; k < 2; k++) {
        gx_gpu_input in[3] = { { k ? 2 : 3, k ? x2 : x3, -1, 1, 1 }, { 2, ws, -0.5, 0.5, 1 },
                               { 1, bs, -0.5, 0.5, 1 } };
        gx_gpu_check(T, &g, k ? "linear [B, in] + bias" : "linear [B, L, in] + bias", build_linear, NULL, 3, in,
                     TOL_G);
        gx_gpu_check(T, &g, k ? "linear [B, in]" : "linear [B, L, in]", build_linear_nobias, NULL, 2, in, TOL_G);
    }
    gx_gpu_close(&g);
}

static gx_tensor *build_matmul(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    (void)arg;
    return gx_matmul(ctx, in[0], in[1]);
}

GX_TEST(dispatch_matmul) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    static const int64_t a4[] = { 2, 3, 17, 19 }, b4[] = { 2, 3, 19, 23 }, b2[] = { 19, 23 }, a2[] = { 17, 19 };
    /* batched (strided-batched GEMM), shared b (the batch folds into the
     * rows of one GEMM), and a plain 2-D product */
    gx_gpu_input batched[2] = { { 4, a4, -1, 1, 1 }, { 4, b4, -1, 1, 1 } };
    gx_gpu_input shared[2] = { { 4, a4, -1, 1, 1 }, { 2, b2, -1, 1, 1 } };
    gx_gpu_input plain[2] = { { 2, a2, -1, 1, 1 }, { 2, b2, -1, 1, 1 } };
    gx_gpu_check(T, &g, "matmul batched", build_matmul, NULL, 2, batched, TOL_G);
    gx_gpu_check(T, &g, "matmul shared b", build_matmul, NULL, 2, shared, TOL_G);
    gx_gpu_check(T, &g, "matmul 2-D", build_matmul, NULL, 2, plain, TOL_G);
    gx_gpu_close(&g);
}

static gx_tensor *build_gram(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    (void)arg;
    return gx_gram(ctx, in[0], in[1]);
}
static gx_tensor *build_gram_self(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    (void)arg;
    return gx_gram(ctx, in[0], in[0]);
}

GX_TEST(dispatch_gram) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    static const int64_t as[] = { 33, 47 }, bs[] = { 20, 47 };
    gx_gpu_input in[2] = { { 2, as, -1, 1, 1 }, { 2, bs, -1, 1, 1 } };
    gx_gpu_check(T, &g, "gram a b^T", build_gram, NULL, 2, in, TOL_G);
    /* a == b: both GEMMs of the backward add into one gradient buffer */
    gx_gpu_check(T, &g, "gram a a^T", build_gram_self, NULL, 1, in, TOL_G);
    gx_gpu_close(&g);
}

static gx_tensor *build_sqdist(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    (void)arg;
    return gx_pairwise_sqdist(ctx, in[0], in[1]);
}
static gx_tensor *build_sqdist_self(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    (void)arg;
    return gx_pairwise_sqdist(ctx, in[0], in[0]);
}

GX_TEST(dispatch_pairwise_sqdist) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    static const int64_t as[] = { 33, 47 }, bs[] = { 20, 47 };
    gx_gpu_input in[2] = { { 2, as, -1, 1, 1 }, { 2, bs, -1, 1, 1 } };
    gx_gpu_check(T, &g, "pairwise_sqdist", build_sqdist, NULL, 2, in, TOL_G);
    /* a == b: the diagonal is exactly 0 on the CPU (no gradient); cuBLAS
     * may round it to a tiny positive value, whose gradient terms cancel
     * to within the tolerance (as in test_cuda.c) */
    gx_gpu_check(T, &g, "pairwise_sqdist a == b", build_sqdist_self, NULL, 1, in, TOL_G);
    gx_gpu_close(&g);
}

/* ================================================================ conv */

typedef struct {
    int64_t B, Cin, H, W, Cout, kh, kw;
    int stride, pad, groups, bias;
    const char *what;
} conv_case;

static gx_tensor *build_conv2d(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const conv_case *c = arg;
    return gx_conv2d(ctx, in[0], in[1], c->bias ? in[2] : NULL, c->stride, c->pad, c->groups);
}

GX_TEST(dispatch_conv2d) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    /* Each of the CPU's paths (shifted GEMM at stride 1, im2col at stride
     * > 1, the direct depthwise kernel), one launcher on the device. */
    static const conv_case C[] = {
        { 2, 4, 9, 9, 40, 3, 3, 1, 1, 1, 1, "3x3 same, Cout 40" },
        { 2, 4, 10, 9, 6, 3, 3, 2, 1, 2, 1, "3x3 stride 2, 2 groups" },
        { 2, 36, 8, 7, 36, 3, 3, 1, 1, 36, 1, "depthwise 36 channels" },
        { 2, 8, 6, 6, 16, 3, 3, 2, 1, 8, 0, "groups = Cin, multiplier 2, stride 2" },
        { 3, 5, 6, 7, 8, 1, 1, 1, 0, 1, 0, "1x1, no bias" },
        { 1, 3, 11, 11, 4, 5, 5, 2, 2, 1, 1, "5x5 stride 2 pad 2" },
        { 2, 3, 7, 5, 4, 3, 3, 3, 0, 1, 1, "3x3 stride 3, no padding" },
    };
    for (size_t k = 0; k < sizeof C / sizeof *C; k++) {
        const conv_case *c = &C[k];
        const int64_t xs[] = { c->B, c->Cin, c->H, c->W }, ws[] = { c->Cout, c->Cin / c->groups, c->kh, c->kw };
        const int64_t bs[] = { c->Cout };
        gx_gpu_input in[3] = { { 4, xs, -1, 1, 1 }, { 4, ws, -0.5, 0.5, 1 }, { 1, bs, -0.5, 0.5, 1 } };
        char label[96];
        snprintf(label, sizeof label, "conv2d %s", c->what);
        gx_gpu_check(T, &g, label, build_conv2d, (void *)c, c->bias ? 3 : 2, in, TOL_G);
    }
    gx_gpu_close(&g);
}

typedef struct { int bias; double slope; } up_arg;

static gx_tensor *build_upconv(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const up_arg *u = arg;
    return gx_upconv2x3(ctx, in[0], in[1], u->bias ? in[2] : NULL);
}
static gx_tensor *build_upconv_leaky(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const up_arg *u = arg;
    return gx_upconv2x3_leaky(ctx, in[0], in[1], u->bias ? in[2] : NULL, u->slope);
}

/* [B, Cin, H, W, Cout]: test_cuda.c's cases, and channels above 32. */
static const int64_t k_up[][5] = { { 2, 3, 4, 5, 4 }, { 3, 16, 8, 8, 8 }, { 2, 40, 4, 4, 33 } };

GX_TEST(dispatch_upconv2x3) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    for (size_t k = 0; k < sizeof k_up / sizeof *k_up; k++) {
        const int64_t *u = k_up[k];
        const int64_t xs[] = { u[0], u[1], u[2], u[3] }, ws[] = { u[4], u[1], 3, 3 }, bs[] = { u[4] };
        gx_gpu_input in[3] = { { 4, xs, -1, 1, 1 }, { 4, ws, -0.5, 0.5, 1 }, { 1, bs, -0.5, 0.5, 1 } };
        up_arg a = { k != 1, 0 };          /* case 1 without bias */
        char label[96];
        snprintf(label, sizeof label, "upconv2x3 case %zu%s", k, a.bias ? "" : " (no bias)");
        gx_gpu_check(T, &g, label, build_upconv, &a, a.bias ? 3 : 2, in, TOL_G);
    }
    gx_gpu_close(&g);
}

GX_TEST(dispatch_upconv2x3_leaky) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    for (size_t k = 0; k < sizeof k_up / sizeof *k_up; k++) {
        const int64_t *u = k_up[k];
        const int64_t xs[] = { u[0], u[1], u[2], u[3] }, ws[] = { u[4], u[1], 3, 3 }, bs[] = { u[4] };
        gx_gpu_input in[3] = { { 4, xs, -1, 1, 1 }, { 4, ws, -0.5, 0.5, 1 }, { 1, bs, -0.5, 0.5, 1 } };
        up_arg a = { 1, 0.2 };
        char label[96];
        /* Untaped (grad off): the activation in the launcher's epilogue
         * (the CPU takes its per-parity path for the 4x4 inputs). */
        gx_gpu_tol fwd = TOL_G;
        fwd.backward = 0;
        snprintf(label, sizeof label, "upconv2x3_leaky case %zu, inference", k);
        gx_gpu_check(T, &g, label, build_upconv_leaky, &a, 3, in, fwd);
        /* Taped: the unfused pair, gradients through gx_leaky_relu. */
        snprintf(label, sizeof label, "upconv2x3_leaky case %zu, taped", k);
        gx_gpu_check(T, &g, label, build_upconv_leaky, &a, 3, in, TOL_G);
    }
    gx_gpu_close(&g);
}

static gx_tensor *build_conv1d(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const int *bias = arg;
    return gx_conv1d_causal_dw(ctx, in[0], in[1], *bias ? in[2] : NULL);
}

GX_TEST(dispatch_conv1d_causal_dw) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    /* [B, L, E, K, bias]: test_cuda.c's case, a kernel longer than the
     * sequence (every output sees the causal zero padding), K = 1. */
    static const int64_t C[][5] = { { 3, 17, 37, 4, 1 }, { 2, 5, 40, 7, 0 }, { 2, 9, 33, 1, 1 } };
    for (size_t k = 0; k < sizeof C / sizeof *C; k++) {
        const int64_t xs[] = { C[k][0], C[k][1], C[k][2] }, ws[] = { C[k][2], 1, C[k][3] }, bs[] = { C[k][2] };
        gx_gpu_input in[3] = { { 3, xs, -1, 1, 1 }, { 3, ws, -1, 1, 1 }, { 1, bs, -1, 1, 1 } };
        int bias = (int)C[k][4];
        char label[96];
        snprintf(label, sizeof label, "conv1d_causal_dw L %lld K %lld%s", (long long)C[k][1], (long long)C[k][3],
                 bias ? "" : " (no bias)");
        gx_gpu_check(T, &g, label, build_conv1d, &bias, bias ? 3 : 2, in, TOL_R);
    }
    gx_gpu_close(&g);
}

/* =============================================================== norms */

static gx_tensor *build_layernorm(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const int *affine = arg;
    return gx_layernorm(ctx, in[0], *affine ? in[1] : NULL, *affine ? in[2] : NULL, 1e-5);
}

GX_TEST(dispatch_layernorm) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    /* D = 33 (one warp per row, a ragged last lane step), D = 300, 2-D x */
    static const int64_t x3[] = { 4, 6, 33 }, d3[] = { 33 }, x2[] = { 5, 300 }, d2[] = { 300 };
    for (int k = 0; k < 2; k++) {
        const int64_t *xs = k ? x2 : x3, *ds = k ? d2 : d3;
        gx_gpu_input in[3] = { { k ? 2 : 3, xs, -2, 3, 1 }, { 1, ds, 0.5, 1.5, 1 }, { 1, ds, -1, 1, 1 } };
        for (int affine = 1; affine >= 0; affine--) {
            char label[96];
            snprintf(label, sizeof label, "layernorm D %lld%s", (long long)ds[0], affine ? "" : " (no affine)");
            gx_gpu_check(T, &g, label, build_layernorm, &affine, affine ? 3 : 1, in, TOL_R);
        }
    }
    gx_gpu_close(&g);
}

/* in = x, running_mean, running_var[, gamma, beta]. */
typedef struct { int training, affine; } bn_arg;

static gx_tensor *build_batchnorm(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const bn_arg *a = arg;
    return gx_batchnorm(ctx, in[0], a->affine ? in[3] : NULL, a->affine ? in[4] : NULL, in[1], in[2], a->training,
                        0.1, 1e-5);
}

GX_TEST(dispatch_batchnorm) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    /* [B, C, H, W] (test_cuda.c's), [B, C] with C > 32, [B, C, L] */
    static const int64_t x4[] = { 4, 5, 3, 3 }, c4[] = { 5 }, x2[] = { 6, 40 }, c2[] = { 40 };
    static const int64_t x3[] = { 2, 33, 7 }, c3[] = { 33 };
    const struct { int nd; const int64_t *xs, *cs; } S[] = { { 4, x4, c4 }, { 2, x2, c2 }, { 3, x3, c3 } };
    for (size_t k = 0; k < sizeof S / sizeof *S; k++)
        for (int training = 1; training >= 0; training--)
            for (int affine = 1; affine >= 0; affine--) {
                /* The running statistics are no inputs of the gradient. */
                gx_gpu_input in[5] = { { S[k].nd, S[k].xs, -2, 3, 1 }, { 1, S[k].cs, -0.5, 0.5, 0 },
                                       { 1, S[k].cs, 0.5, 2, 0 }, { 1, S[k].cs, 0.5, 1.5, 1 },
                                       { 1, S[k].cs, -1, 1, 1 } };
                bn_arg a = { training, affine };
                char label[96];
                snprintf(label, sizeof label, "batchnorm %d-D C %lld %s%s", S[k].nd, (long long)S[k].cs[0],
                         training ? "train" : "eval", affine ? "" : " (no affine)");
                gx_gpu_check(T, &g, label, build_batchnorm, &a, affine ? 5 : 3, in, TOL_R);
            }
    gx_gpu_close(&g);
}

/* The same values in the parameters of two registries (one goes to the
 * device): affine around 1 / 0, running mean around 0, running var > 0. */
static void bn_fill(gx_params *pc, gx_params *pd, uint64_t seed) {
    gx_rng rng;
    gx_rng_init(&rng, seed);
    for (int i = 0; i < pc->n; i++) {
        gx_tensor *t = &pc->items[i]->t;
        const char *n = pc->items[i]->name;
        size_t len = strlen(n);
        int var = len >= 11 && strcmp(n + len - 11, "running_var") == 0;
        int weight = len >= 6 && strcmp(n + len - 6, "weight") == 0;
        gx_rng_fill_uniform(&rng, t->data, t->numel, var ? 0.5 : weight ? 0.5 : -0.5, var ? 2 : weight ? 1.5 : 0.5);
        memcpy(pd->items[i]->t.data, t->data, (size_t)t->numel * sizeof(gx_real));
    }
}

/* A two-set batch-norm layer whose parameters live on the device
 * (gx_params_to_cuda): a training step on set 1 moves set 1's running
 * statistics in place on the device and leaves set 0's alone; an eval
 * forward then reads the moved statistics. Everything against the same
 * calls on host parameters, the statistics and gradients downloaded with
 * gx_params_sync_host. */
GX_TEST(dispatch_bn_layer_running_stats) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    enum { C = 37 };
    const int64_t B = 4, H = 3, W = 5;
    gx_params pc, pd;
    gx_params_init(&pc);
    gx_params_init(&pd);
    gx_bn_layer bc, bd;
    gx_bn_layer_init(&bc, &pc, "enc.bn", C, 2, NULL);
    gx_bn_layer_init(&bd, &pd, "enc.bn", C, 2, NULL);
    bc.momentum = bd.momentum = 0.3;
    bn_fill(&pc, &pd, 11);
    gx_real rm1[37], rv1[37];                     /* set 1's statistics before the step */
    memcpy(rm1, bc.running_mean[1]->data, sizeof rm1);
    memcpy(rv1, bc.running_var[1]->data, sizeof rv1);
    gx_err err;
    CHECK_MSG(gx_params_to_cuda(&pd, &g.exec, &err) == GX_OK, "%s", err.msg);
    CHECK(bd.running_var[1]->device == GX_DEVICE_CUDA);

    gx_ctx c, d;
    gx_ctx_init(&c, 4 << 20);
    gx_ctx_init(&d, 4 << 20);
    d.cuda = &g.exec;
    c.grad_enabled = d.grad_enabled = 1;
    const int64_t *xs = GX_SHAPE(B, C, H, W);
    const int64_t n = B * C * H * W;
    gx_real *xv = gx_ctx_alloc(&c, (size_t)n * sizeof(gx_real)), *seed = gx_ctx_alloc(&c, (size_t)n * sizeof(gx_real));
    gx_rng rng;
    gx_rng_init(&rng, 12);
    gx_rng_fill_uniform(&rng, xv, n, -2, 3);
    gx_rng_fill_uniform(&rng, seed, n, -1, 1);
    gx_tensor *xc = gx_tensor_from(&c, 4, xs, xv), *xd = gx_tensor_from(&d, 4, xs, xv);
    xc->requires_grad = xd->requires_grad = 1;

    gx_tensor *yc = gx_bn_layer_forward(&c, &bc, 1, xc, 1), *yd = gx_bn_layer_forward(&d, &bd, 1, xd, 1);
    CHECK(yd->device == GX_DEVICE_CUDA);
    gx_backward(&c, yc, seed);
    gx_backward(&d, yd, seed);
    /* eval on set 1 reads the statistics the training step just moved */
    gx_tensor *ec = gx_bn_layer_forward(&c, &bc, 1, xc, 0), *ed = gx_bn_layer_forward(&d, &bd, 1, xd, 0);
    gx_tensor *yh = gx_to_host(&d, yd), *eh = gx_to_host(&d, ed);
    gx_real *gxd = gx_ctx_alloc(&c, (size_t)n * sizeof(gx_real));
    gx_cuda_exec_download(&g.exec, gxd, xd->grad, (size_t)n * sizeof(gx_real));
    CHECK_MSG(gx_cuda_exec_sync(&g.exec, &err) == GX_OK, "%s", err.msg);
    CHECK_MSG(gx_params_sync_host(&pd, &err) == GX_OK, "%s", err.msg);

    gx_test_allclose(T, "bn layer train forward", yh->data, yc->data, n, 1e-5, 1e-5);
    gx_test_allclose(T, "bn layer eval forward", eh->data, ec->data, n, 1e-5, 1e-5);
    gx_test_allclose(T, "bn layer d/dx", gxd, xc->grad, n, 1e-5, 1e-5);
    for (int i = 0; i < pc.n; i++) {
        const gx_param *qc = pc.items[i], *qd = pd.items[i];
        char what[200];
        snprintf(what, sizeof what, "bn layer %s", qc->name);
        gx_test_allclose(T, what, qd->host_data, qc->t.data, C, 1e-5, 1e-5);
        if (qc->t.grad) {
            snprintf(what, sizeof what, "bn layer grad %s", qc->name);
            gx_test_allclose(T, what, qd->host_grad, qc->t.grad, C, 1e-5, 1e-5);
        }
    }
    /* The step moved set 1's statistics on the CPU, so the comparison
     * above says the device moved them alike (and set 0's not at all). */
    CHECK(memcmp(bc.running_mean[1]->data, rm1, (size_t)C * sizeof(gx_real)) != 0);
    CHECK(memcmp(bc.running_var[1]->data, rv1, (size_t)C * sizeof(gx_real)) != 0);
    gx_ctx_free(&d);
    gx_ctx_free(&c);
    gx_params_free(&pd);
    gx_params_free(&pc);
    gx_gpu_close(&g);
}
