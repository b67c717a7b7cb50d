/*
 * test_parity_sinkhorn.c — gx_sinkhorn_hk (f32 engine) against PyTorch
 * float64 (tests/parity/gen_sinkhorn.py): the spec's 40-bin soft histograms
 * of five (zhat, z) pairs, cost (c_i - c_j)^2 + 1, lambda 0.5 and 0.1,
 * 50 iterations, eps 1e-4; HK values and gradients with respect to a and b.
 *
 * Tolerances: the engine iterates in double from the same f32 inputs, so
 * only the final rounding to f32 differs: atol 1e-6 + rtol 1e-5 on HK and on
 * the gradients (whose largest entries are O(10); gradients of bins with
 * a = 0 are compared with the same absolute floor).
 */
#include "gx_test.h"

#define ATOL 1e-6
#define RTOL 1e-5

static void sk_case(gx_test_state *T, const gx_st_file *f, const char *lam_key, double lambda) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 22);
    gx_tensor *a = gx_fixture_tensor(T, &ctx, f, "sk.a");
    gx_tensor *b = gx_fixture_tensor(T, &ctx, f, "sk.b");
    gx_tensor *C = gx_fixture_tensor(T, &ctx, f, "sk.C");
    char key[64];
    snprintf(key, sizeof key, "sk.%s.gout", lam_key);
    gx_tensor *gout = gx_fixture_tensor(T, &ctx, f, key);
    if (!a || !b || !C || !gout) { gx_ctx_free(&ctx); return; }
    a->requires_grad = b->requires_grad = 1;
    ctx.grad_enabled = 1;
    gx_tensor *o = gx_sinkhorn_hk(&ctx, a, b, C, lambda, 50, 1e-4);
    snprintf(key, sizeof key, "sk.%s.out", lam_key);
    gx_fixture_check(T, f, key, o->data, o->numel, ATOL, RTOL);
    gx_backward(&ctx, o, gout->data);
    CHECK(a->grad != NULL && b->grad != NULL);
    snprintf(key, sizeof key, "sk.%s.grad.a", lam_key);
    if (a->grad) gx_fixture_check(T, f, key, a->grad, a->numel, ATOL, RTOL);
    snprintf(key, sizeof key, "sk.%s.grad.b", lam_key);
    if (b->grad) gx_fixture_check(T, f, key, b->grad, b->numel, ATOL, RTOL);
    gx_ctx_free(&ctx);
}

GX_TEST(parity_sinkhorn_lambda_half_and_tenth) {
    gx_st_file f;
    if (!gx_fixture_open(T, &f, "sinkhorn.safetensors")) return;
    sk_case(T, &f, "l05", 0.5);
    sk_case(T, &f, "l01", 0.1);
    gx_st_close(&f);
}
