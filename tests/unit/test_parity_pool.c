/*
 * test_parity_pool.c — the pool family against PyTorch
 * (tests/parity/gen_pool.py): adaptive average pooling 7->3, 64->8, 5->8 and
 * 7x5->3x4; bilinear resize (align_corners=False) up, down and mixed with odd
 * sizes; nearest x2; max pooling (k3 s2 p1 odd/even, k2 s2, k3 s1 p1,
 * k4 s3 p2, and ties: small integers, where the gradient must go to the first
 * maximum of each window as in PyTorch; a wrong tie rule moves whole upstream
 * gradients, errors of order 1). Forward and backward with the fixture's
 * upstream grad.
 *
 * Tolerances: the fixture is float64 rounded to f32; the engine averages or
 * interpolates in double and rounds once (forward), and the backward
 * accumulates at most a few dozen f32 terms per input, so 1e-6 absolute +
 * 1e-5 relative holds with a wide margin (a wrong bin or tap gives errors
 * of order 1e-1).
 */
#include "gx_test.h"

#define POOL_ATOL 1e-6
#define POOL_RTOL 1e-5

enum { ADAPT, BILINEAR, NEAREST, MAXPOOL };

/* For MAXPOOL, (oh, ow) carry (kernel, stride) and pad the padding. */
static void run_case_pad(gx_test_state *T, const gx_st_file *f, const char *name, int kind,
                         int64_t oh, int64_t ow, int pad) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    ctx.grad_enabled = 1;
    char key[96];
    snprintf(key, sizeof key, "%s.x", name);
    gx_tensor *x = gx_fixture_tensor(T, &ctx, f, key);
    if (!x) { gx_ctx_free(&ctx); return; }
    x->requires_grad = 1;
    gx_tensor *y = kind == ADAPT    ? gx_adaptive_avg_pool2d(&ctx, x, oh, ow)
                 : kind == BILINEAR ? gx_resize_bilinear(&ctx, x, oh, ow)
                 : kind == MAXPOOL  ? gx_max_pool2d(&ctx, x, (int)oh, (int)ow, pad)
                                    : gx_upsample_nearest2x(&ctx, x);
    snprintf(key, sizeof key, "%s.y", name);
    gx_fixture_check(T, f, key, y->data, y->numel, POOL_ATOL, POOL_RTOL);
    snprintf(key, sizeof key, "%s.gout", name);
    gx_tensor *gout = gx_fixture_tensor(T, &ctx, f, key);
    if (gout) gx_backward(&ctx, y, gout->data);
    snprintf(key, sizeof key, "%s.grad.x", name);
    CHECK_MSG(x->grad != NULL, "%s: no gradient", key);
    if (x->grad) gx_fixture_check(T, f, key, x->grad, x->numel, POOL_ATOL, POOL_RTOL);
    gx_ctx_free(&ctx);
}

static void run_case(gx_test_state *T, const gx_st_file *f, const char *name, int kind,
                     int64_t oh, int64_t ow) {
    run_case_pad(T, f, name, kind, oh, ow, 0);
}

GX_TEST(parity_pool_adaptive_avg) {
    gx_st_file f;
    if (!gx_fixture_open(T, &f, "pool.safetensors")) return;
    run_case(T, &f, "adapt_7to3", ADAPT, 3, 3);
    run_case(T, &f, "adapt_64to8", ADAPT, 8, 8);
    run_case(T, &f, "adapt_5to8", ADAPT, 8, 8);
    run_case(T, &f, "adapt_7x5to3x4", ADAPT, 3, 4);
    gx_st_close(&f);
}

GX_TEST(parity_pool_bilinear_and_nearest) {
    gx_st_file f;
    if (!gx_fixture_open(T, &f, "pool.safetensors")) return;
    run_case(T, &f, "bilinear_up", BILINEAR, 9, 13);
    run_case(T, &f, "bilinear_down", BILINEAR, 4, 5);
    run_case(T, &f, "bilinear_mixed", BILINEAR, 3, 9);
    run_case(T, &f, "nearest2x", NEAREST, 0, 0);
    gx_st_close(&f);
}

GX_TEST(parity_pool_max) {
    gx_st_file f;
    if (!gx_fixture_open(T, &f, "pool.safetensors")) return;
    run_case_pad(T, &f, "maxpool_k3s2p1_odd", MAXPOOL, 3, 2, 1);
    run_case_pad(T, &f, "maxpool_k3s2p1_even", MAXPOOL, 3, 2, 1);
    run_case_pad(T, &f, "maxpool_k2s2p0", MAXPOOL, 2, 2, 0);
    run_case_pad(T, &f, "maxpool_k3s1p1", MAXPOOL, 3, 1, 1);
    run_case_pad(T, &f, "maxpool_k4s3p2", MAXPOOL, 4, 3, 2);
    run_case_pad(T, &f, "maxpool_ties", MAXPOOL, 3, 2, 1);
    gx_st_close(&f);
}
