/*
 * test_parity_conv.c — conv family vs PyTorch (tests/fixtures/conv.safetensors,
 * written by tests/parity/gen_conv.py; the case table below mirrors the
 * script's). Runs each op in f32 with the fixture's upstream gradient and
 * checks the output and every input gradient.
 *
 * Tolerance: atol 1e-5 + rtol 1e-5. The reference is float64; our f32 GEMM
 * sums up to Cin*kh*kw = 147 products of O(1) values, so the expected error
 * is a few f32 ulps of the O(1..10) results (~1e-6).
 */
#include "gx_test.h"

#include <string.h>

#define PAR_ATOL 1e-5
#define PAR_RTOL 1e-5

typedef struct { const char *name; int stride, padding, groups, bias; } conv_case;

static const conv_case CASES[] = {
    { "enc_k4s2p1", 2, 1, 1, 1 },
    { "k3p1_odd", 1, 1, 1, 1 },
    { "groups2", 1, 1, 2, 1 },
    { "dw3", 1, 1, 4, 1 },
    { "dw3s2", 2, 1, 3, 0 },
    { "pw1x1", 1, 0, 1, 1 },
    { "k7s2p3", 2, 3, 1, 1 },
};

/* Loads <pfx>.<key> as a leaf that collects a gradient. */
static gx_tensor *fx_leaf(gx_test_state *T, gx_ctx *ctx, const gx_st_file *f, const char *pfx, const char *key) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", pfx, key);
    gx_tensor *t = gx_fixture_tensor(T, ctx, f, k);
    if (t) t->requires_grad = 1;
    return t;
}

static void fx_check(gx_test_state *T, const gx_st_file *f, const char *pfx, const char *key,
                     const gx_real *got, int64_t n) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", pfx, key);
    gx_fixture_check(T, f, k, got, n, PAR_ATOL, PAR_RTOL);
}

/* Backward with the fixture's gout, then compare y and the listed grads. */
static void fx_backward_check(gx_test_state *T, gx_ctx *ctx, const gx_st_file *f, const char *pfx,
                              gx_tensor *y, gx_tensor *const *in, const char *const *keys, int n_in) {
    fx_check(T, f, pfx, "y", y->data, y->numel);
    gx_tensor *gout = fx_leaf(T, ctx, f, pfx, "gout");
    if (!gout || gout->numel != y->numel) { CHECK(gout && gout->numel == y->numel); return; }
    gx_backward(ctx, y, gout->data);
    for (int i = 0; i < n_in; i++) {
        char k[32];
        snprintf(k, sizeof k, "grad.%s", keys[i]);
        CHECK(in[i]->grad != NULL);
        if (in[i]->grad) fx_check(T, f, pfx, k, in[i]->grad, in[i]->numel);
    }
}

GX_TEST(parity_conv2d_cases) {
    gx_st_file f;
    if (!gx_fixture_open(T, &f, "conv.safetensors")) return;
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++) {
        const conv_case *cc = &CASES[c];
        gx_ctx ctx;
        gx_ctx_init(&ctx, 1 << 20);
        ctx.grad_enabled = 1;
        gx_tensor *in[3] = { fx_leaf(T, &ctx, &f, cc->name, "x"), fx_leaf(T, &ctx, &f, cc->name, "w"),
                             cc->bias ? fx_leaf(T, &ctx, &f, cc->name, "b") : NULL };
        if (in[0] && in[1] && (!cc->bias || in[2])) {
            gx_tensor *y = gx_conv2d(&ctx, in[0], in[1], in[2], cc->stride, cc->padding, cc->groups);
            static const char *const keys[3] = { "x", "w", "b" };
            fx_backward_check(T, &ctx, &f, cc->name, y, in, keys, cc->bias ? 3 : 2);
        }
        gx_ctx_free(&ctx);
    }
    gx_st_close(&f);
}

GX_TEST(parity_conv1d_causal_dw) {
    gx_st_file f;
    if (!gx_fixture_open(T, &f, "conv.safetensors")) return;
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    ctx.grad_enabled = 1;
    gx_tensor *in[3] = { fx_leaf(T, &ctx, &f, "c1", "x"), fx_leaf(T, &ctx, &f, "c1", "w"),
                         fx_leaf(T, &ctx, &f, "c1", "b") };
    if (in[0] && in[1] && in[2]) {
        gx_tensor *y = gx_conv1d_causal_dw(&ctx, in[0], in[1], in[2]);
        static const char *const keys[3] = { "x", "w", "b" };
        fx_backward_check(T, &ctx, &f, "c1", y, in, keys, 3);
    }
    gx_ctx_free(&ctx);
    gx_st_close(&f);
}
