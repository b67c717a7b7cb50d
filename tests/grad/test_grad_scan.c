/*
 * test_grad_scan.c — finite-difference checks (f64 engine) of gx_ssm_scan's
 * backward with respect to all five inputs: token and mean delta modes, odd
 * sizes, and a case whose small deltas sit in the |delta*A| < 1e-6 limit
 * branch (kept inside it under the +-1e-6 perturbation: |A| <= 0.9 and
 * delta = 1e-7, so |dA| <= 1.1e-6 * 0.9 < 1e-6).
 */
#include "gx_test.h"

static gx_tensor *scan_fn(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    (void)arg;
    return gx_ssm_scan(ctx, in[0], in[1], in[2], in[3], in[4]);
}

/* Leaves xs, delta, A, Bm, Cm for [B, L, E] with delta [B, Ld, E], state N. */
static void make_inputs(gx_ctx *ctx, gx_rng *rng, int64_t B, int64_t L, int64_t Ld, int64_t E,
                        int64_t N, double Alo, double Ahi, gx_tensor **in) {
    in[0] = gx_test_leaf(ctx, rng, 3, GX_SHAPE(B, L, E), -1, 1);
    in[1] = gx_test_leaf(ctx, rng, 3, GX_SHAPE(B, Ld, E), 0.05, 1.0);
    in[2] = gx_test_leaf(ctx, rng, 2, GX_SHAPE(E, N), Alo, Ahi);
    in[3] = gx_test_leaf(ctx, rng, 2, GX_SHAPE(E, N), -1, 1);
    in[4] = gx_test_leaf(ctx, rng, 2, GX_SHAPE(E, N), -1, 1);
}

GX_TEST(grad_scan_token_mode_two_shapes) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    gx_rng rng;
    gx_rng_init(&rng, 21);
    gx_tensor *in[5];
    make_inputs(&ctx, &rng, 2, 5, 5, 3, 4, -2.0, -0.2, in);
    CHECK(gx_gradcheck(T, "scan token [2,5,3] N=4", scan_fn, NULL, 5, in, GX_GC_DEFAULTS));
    make_inputs(&ctx, &rng, 1, 7, 7, 5, 3, -1.5, -0.1, in);
    CHECK(gx_gradcheck(T, "scan token [1,7,5] N=3", scan_fn, NULL, 5, in, GX_GC_DEFAULTS));
    gx_ctx_free(&ctx);
}

GX_TEST(grad_scan_mean_mode_two_shapes) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    gx_rng rng;
    gx_rng_init(&rng, 22);
    gx_tensor *in[5];
    make_inputs(&ctx, &rng, 2, 6, 1, 3, 5, -2.0, -0.2, in);
    CHECK(gx_gradcheck(T, "scan mean [2,6,3] N=5", scan_fn, NULL, 5, in, GX_GC_DEFAULTS));
    make_inputs(&ctx, &rng, 3, 9, 1, 2, 1, -1.0, -0.3, in);
    CHECK(gx_gradcheck(T, "scan mean [3,9,2] N=1", scan_fn, NULL, 5, in, GX_GC_DEFAULTS));
    gx_ctx_free(&ctx);
}

GX_TEST(grad_scan_limit_branch) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    gx_rng rng;
    gx_rng_init(&rng, 23);
    gx_tensor *in[5];
    /* Token mode: every third delta in the limit branch. */
    make_inputs(&ctx, &rng, 2, 5, 5, 3, 4, -0.9, -0.1, in);
    for (int64_t i = 0; i < in[1]->numel; i += 3) in[1]->data[i] = 1e-7;
    CHECK(gx_gradcheck(T, "scan token limit", scan_fn, NULL, 5, in, GX_GC_DEFAULTS));
    /* Mean mode: one (b, e) entirely in the limit branch. */
    make_inputs(&ctx, &rng, 2, 4, 1, 3, 2, -0.9, -0.1, in);
    in[1]->data[1] = 1e-7;
    CHECK(gx_gradcheck(T, "scan mean limit", scan_fn, NULL, 5, in, GX_GC_DEFAULTS));
    gx_ctx_free(&ctx);
}
