/*
 * test_parity_composite.c — composite blocks written with the engine's ops,
 * compared with PyTorch (tests/parity/gen_composite.py): a conv-BN-ReLU stack
 * in training (outputs, every gradient, updated running statistics) and in
 * eval, and the WaveletMamba SSM block in both delta modes.
 *
 * Tolerances: the fixture is computed in float64; the engine runs in f32.
 * Errors grow with depth (two convs and two batch norms; BN divides by a
 * batch std), so the checks use atol 2e-5 + rtol 1e-4 on values and
 * atol 5e-5 + rtol 5e-4 on gradients — still three orders of magnitude below
 * what a wrong formula gives.
 */
#include "gx_test.h"

#define VAL_ATOL 2e-5
#define VAL_RTOL 1e-4
#define GRAD_ATOL 5e-5
#define GRAD_RTOL 5e-4

/* Loads "<prefix><key>" from the fixture as a leaf that collects gradients. */
static gx_tensor *leaf_from(gx_test_state *T, gx_ctx *ctx, const gx_st_file *f,
                            const char *prefix, const char *key) {
    char name[128];
    snprintf(name, sizeof name, "%s%s", prefix, key);
    gx_tensor *t = gx_fixture_tensor(T, ctx, f, name);
    if (t) t->requires_grad = 1;
    return t;
}

static void check_grads(gx_test_state *T, const gx_st_file *f, const char *prefix,
                        const char *const *names, gx_tensor *const *ts, int n) {
    for (int i = 0; i < n; i++) {
        char key[128];
        snprintf(key, sizeof key, "%sgrad.%s", prefix, names[i]);
        CHECK_MSG(ts[i]->grad != NULL, "%s: no gradient reached it", key);
        if (ts[i]->grad) gx_fixture_check(T, f, key, ts[i]->grad, ts[i]->numel, GRAD_ATOL, GRAD_RTOL);
    }
}

/* ------------------------------------------------------------ conv-BN-ReLU */

enum { CBR_X, CBR_W1, CBR_B1, CBR_G1, CBR_BE1, CBR_W2, CBR_B2, CBR_G2, CBR_BE2, CBR_N };
static const char *const cbr_names[CBR_N] = { "x", "w1", "b1", "g1", "be1", "w2", "b2", "g2", "be2" };

static gx_tensor *cbr_forward(gx_ctx *ctx, gx_tensor *const *p, gx_tensor *const *stats, int training) {
    gx_tensor *h = gx_conv2d(ctx, p[CBR_X], p[CBR_W1], p[CBR_B1], 1, 1, 1);
    h = gx_relu(ctx, gx_batchnorm(ctx, h, p[CBR_G1], p[CBR_BE1], stats[0], stats[1], training, 0.1, 1e-5));
    h = gx_conv2d(ctx, h, p[CBR_W2], p[CBR_B2], 2, 1, 1);
    return gx_relu(ctx, gx_batchnorm(ctx, h, p[CBR_G2], p[CBR_BE2], stats[2], stats[3], training, 0.1, 1e-5));
}

GX_TEST(parity_composite_conv_bn_relu_stack) {
    gx_st_file f;
    if (!gx_fixture_open(T, &f, "composite.safetensors")) return;
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    gx_tensor *p[CBR_N];
    for (int i = 0; i < CBR_N; i++) p[i] = leaf_from(T, &ctx, &f, "cbr.", cbr_names[i]);
    gx_tensor *stats[4];
    for (int i = 0; i < 4; i++) {
        stats[i] = gx_tensor_new(&ctx, 1, GX_SHAPE(8));
        for (int c = 0; c < 8; c++) stats[i]->data[c] = (gx_real)(i % 2);   /* mean 0, var 1 */
    }
    ctx.grad_enabled = 1;
    gx_tensor *y = cbr_forward(&ctx, p, stats, 1);
    gx_fixture_check(T, &f, "cbr.train.y", y->data, y->numel, VAL_ATOL, VAL_RTOL);
    gx_tensor *gout = gx_fixture_tensor(T, &ctx, &f, "cbr.train.gout");
    if (gout) gx_backward(&ctx, y, gout->data);
    check_grads(T, &f, "cbr.train.", cbr_names, p, CBR_N);
    const char *stat_keys[4] = { "cbr.train.rm1", "cbr.train.rv1", "cbr.train.rm2", "cbr.train.rv2" };
    for (int i = 0; i < 4; i++)
        gx_fixture_check(T, &f, stat_keys[i], stats[i]->data, 8, VAL_ATOL, VAL_RTOL);
    /* Eval mode uses the running statistics just updated. */
    ctx.grad_enabled = 0;
    gx_tensor *ye = cbr_forward(&ctx, p, stats, 0);
    gx_fixture_check(T, &f, "cbr.eval.y", ye->data, ye->numel, VAL_ATOL, VAL_RTOL);
    gx_ctx_free(&ctx);
    gx_st_close(&f);
}

/* ------------------------------------------------------------ SSM block */

enum { S_U, S_LN_W, S_LN_B, S_IN_W, S_IN_B, S_CONV_W, S_CONV_B, S_GCONV_W, S_GCONV_B, S_A_LOG,
       S_APROJ_W, S_DT_W, S_DT_B, S_BM, S_CM, S_DP, S_OUT_W, S_OUT_B, S_N };
static const char *const ssm_names[S_N] = {
    "u", "ln_w", "ln_b", "in_w", "in_b", "conv_w", "conv_b", "gconv_w", "gconv_b", "A_log",
    "Aproj_w", "dt_w", "dt_b", "Bm", "Cm", "Dp", "out_w", "out_b" };

/* spec/wavelet-mamba.md, SSM block steps 1-6, with the engine's ops. */
static gx_tensor *ssm_block(gx_ctx *ctx, gx_tensor *const *p, int mean_mode) {
    int64_t E = p[S_A_LOG]->shape[0];
    gx_tensor *h = gx_layernorm(ctx, p[S_U], p[S_LN_W], p[S_LN_B], 1e-5);
    h = gx_linear(ctx, h, p[S_IN_W], p[S_IN_B]);
    gx_tensor *xs = gx_slice(ctx, h, -1, 0, E);
    gx_tensor *zs = gx_slice(ctx, h, -1, E, 2 * E);
    xs = gx_silu(ctx, gx_conv1d_causal_dw(ctx, xs, p[S_CONV_W], p[S_CONV_B]));
    zs = gx_silu(ctx, gx_conv1d_causal_dw(ctx, zs, p[S_GCONV_W], p[S_GCONV_B]));
    gx_tensor *A = gx_neg(ctx, gx_exp(ctx, p[S_A_LOG]));
    gx_tensor *delta = gx_softplus(ctx, gx_linear(ctx, gx_linear(ctx, xs, p[S_APROJ_W], NULL),
                                                  p[S_DT_W], p[S_DT_B]));
    if (mean_mode) delta = gx_mean(ctx, delta, 1, 1);          /* [B,1,E] */
    gx_tensor *y = gx_ssm_scan(ctx, xs, delta, A, p[S_BM], p[S_CM]);
    gx_tensor *gate = gx_mul(ctx, gx_mul(ctx, y, zs), gx_add_scalar(ctx, p[S_DP], 1.0));
    return gx_linear(ctx, gate, p[S_OUT_W], p[S_OUT_B]);
}

static void ssm_case(gx_test_state *T, const gx_st_file *f, int mean_mode) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    gx_tensor *p[S_N];
    for (int i = 0; i < S_N; i++) p[i] = leaf_from(T, &ctx, f, "ssm.", ssm_names[i]);
    const char *mode = mean_mode ? "mean" : "token";
    char key[128], prefix[64];
    snprintf(prefix, sizeof prefix, "ssm.%s.", mode);
    ctx.grad_enabled = 1;
    gx_tensor *y = ssm_block(&ctx, p, mean_mode);
    snprintf(key, sizeof key, "%sy", prefix);
    gx_fixture_check(T, f, key, y->data, y->numel, VAL_ATOL, VAL_RTOL);
    snprintf(key, sizeof key, "%sgout", prefix);
    gx_tensor *gout = gx_fixture_tensor(T, &ctx, f, key);
    if (gout) gx_backward(&ctx, y, gout->data);
    check_grads(T, f, prefix, ssm_names, p, S_N);
    gx_ctx_free(&ctx);
}

GX_TEST(parity_composite_ssm_block_mean_and_token) {
    gx_st_file f;
    if (!gx_fixture_open(T, &f, "composite.safetensors")) return;
    ssm_case(T, &f, 1);
    ssm_case(T, &f, 0);
    gx_st_close(&f);
}
