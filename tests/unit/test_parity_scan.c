/*
 * test_parity_scan.c — gx_ssm_scan (f32 engine) against PyTorch float64
 * (tests/parity/gen_scan.py): token and mean delta modes, B=2 L=7 E=5 N=3,
 * with deltas in the |delta*A| < 1e-6 limit branch; output and gradients of
 * all five inputs under a fixed upstream gradient.
 *
 * Tolerances: the engine computes in double from f32 inputs and rounds the
 * outputs and gradients to f32, so errors are a few f32 ulps: atol 1e-6 +
 * rtol 1e-5 on y, atol 2e-6 + rtol 2e-5 on gradients (sums over b and t of
 * up to 14 terms). A wrong formula is off by orders of magnitude more.
 */
#include "gx_test.h"

#define VAL_ATOL 1e-6
#define VAL_RTOL 1e-5
#define GRAD_ATOL 2e-6
#define GRAD_RTOL 2e-5

static void scan_case(gx_test_state *T, const gx_st_file *f, const char *mode) {
    static const char *const names[5] = { "xs", "delta", "A", "Bm", "Cm" };
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    gx_tensor *in[5];
    char key[96];
    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof key, "scan.%s.%s", mode, names[i]);
        in[i] = gx_fixture_tensor(T, &ctx, f, key);
        if (!in[i]) { gx_ctx_free(&ctx); return; }
        in[i]->requires_grad = 1;
    }
    ctx.grad_enabled = 1;
    gx_tensor *y = gx_ssm_scan(&ctx, in[0], in[1], in[2], in[3], in[4]);
    snprintf(key, sizeof key, "scan.%s.y", mode);
    gx_fixture_check(T, f, key, y->data, y->numel, VAL_ATOL, VAL_RTOL);
    snprintf(key, sizeof key, "scan.%s.gout", mode);
    gx_tensor *gout = gx_fixture_tensor(T, &ctx, f, key);
    if (gout) gx_backward(&ctx, y, gout->data);
    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof key, "scan.%s.grad.%s", mode, names[i]);
        CHECK_MSG(in[i]->grad != NULL, "%s: no gradient reached it", key);
        if (in[i]->grad) gx_fixture_check(T, f, key, in[i]->grad, in[i]->numel, GRAD_ATOL, GRAD_RTOL);
    }
    gx_ctx_free(&ctx);
}

GX_TEST(parity_scan_token_and_mean_modes) {
    gx_st_file f;
    if (!gx_fixture_open(T, &f, "scan.safetensors")) return;
    scan_case(T, &f, "token");
    scan_case(T, &f, "mean");
    gx_st_close(&f);
}
