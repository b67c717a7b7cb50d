/*
 * test_grad_core.c — sanity of the gradient checker itself (f64 build): it
 * must accept a correct backward and reject a wrong one.
 */
#include "gx_test.h"

static void sq_backward(gx_ctx *ctx, gx_node *n) {
    gx_real *g = gx_grad(ctx, n->in[0]);
    double k = n->f[0];   /* 2 = correct derivative of x^2, else deliberately wrong */
    for (int64_t i = 0; i < n->out->numel; i++) g[i] += k * n->in[0]->data[i] * n->out->grad[i];
}
static gx_tensor *sq_fn(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    gx_tensor *y = gx_tensor_like(ctx, in[0]);
    for (int64_t i = 0; i < y->numel; i++) y->data[i] = in[0]->data[i] * in[0]->data[i];
    gx_node *n = gx_tape_record(ctx, "sq", sq_backward, y, 1, in);
    if (n) n->f[0] = *(double *)arg;
    return y;
}

GX_TEST(gradcheck_accepts_correct_and_rejects_wrong_backward) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    gx_rng rng;
    gx_rng_init(&rng, 1);
    gx_tensor *x = gx_test_leaf(&ctx, &rng, 2, GX_SHAPE(3, 5), -2, 2);
    double k = 2.0;
    CHECK(gx_gradcheck(T, "x^2", sq_fn, &k, 1, &x, GX_GC_DEFAULTS));
    /* Run the wrong one against a scratch state so its failure is not ours. */
    gx_test_state S = { "scratch", 0, 0, 1 };
    double wrong = 2.001;
    CHECK(!gx_gradcheck(&S, "x^2 wrong", sq_fn, &wrong, 1, &x, GX_GC_DEFAULTS));
    CHECK(S.failures > 0);
    gx_ctx_free(&ctx);
}
