/*
 * test_grad_matmul.c — finite-difference gradient checks (f64) for every op
 * of the matmul family, every differentiable input, two shapes each (odd
 * sizes included).
 */
#include "gx_test.h"

static gx_tensor *linear_fn(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    int with_bias = *(int *)arg;
    return gx_linear(ctx, in[0], in[1], with_bias ? in[2] : NULL);
}

static void check_linear(gx_test_state *T, int nd, const int64_t *xs, int64_t out, int with_bias) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    gx_rng rng;
    gx_rng_init(&rng, 21);
    int64_t in = xs[nd - 1];
    gx_tensor *t[3] = {
        gx_test_leaf(&ctx, &rng, nd, xs, -1, 1),
        gx_test_leaf(&ctx, &rng, 2, GX_SHAPE(out, in), -1, 1),
        gx_test_leaf(&ctx, &rng, 1, GX_SHAPE(out), -1, 1),
    };
    CHECK(gx_gradcheck(T, "linear", linear_fn, &with_bias, with_bias ? 3 : 2, t, GX_GC_DEFAULTS));
    gx_ctx_free(&ctx);
}

GX_TEST(grad_matmul_linear) {
    check_linear(T, 2, GX_SHAPE(4, 3), 5, 1);
    check_linear(T, 3, GX_SHAPE(2, 3, 7), 5, 1);
    check_linear(T, 2, GX_SHAPE(3, 5), 2, 0);
}

static gx_tensor *matmul_fn(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    (void)arg;
    return gx_matmul(ctx, in[0], in[1]);
}

static void check_matmul(gx_test_state *T, int na, const int64_t *as, int nb, const int64_t *bs) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    gx_rng rng;
    gx_rng_init(&rng, 22);
    gx_tensor *t[2] = { gx_test_leaf(&ctx, &rng, na, as, -1, 1), gx_test_leaf(&ctx, &rng, nb, bs, -1, 1) };
    CHECK(gx_gradcheck(T, "matmul", matmul_fn, NULL, 2, t, GX_GC_DEFAULTS));
    gx_ctx_free(&ctx);
}

GX_TEST(grad_matmul_batched_and_shared) {
    check_matmul(T, 2, GX_SHAPE(3, 4), 2, GX_SHAPE(4, 5));
    check_matmul(T, 3, GX_SHAPE(2, 3, 5), 3, GX_SHAPE(2, 5, 3));
    check_matmul(T, 4, GX_SHAPE(2, 1, 3, 2), 4, GX_SHAPE(2, 1, 2, 3));
    check_matmul(T, 3, GX_SHAPE(3, 2, 5), 2, GX_SHAPE(5, 4));   /* shared b */
}

static gx_tensor *gram_fn(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    int self = *(int *)arg;
    return gx_gram(ctx, in[0], self ? in[0] : in[1]);
}

static gx_tensor *sqdist_fn(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    int self = *(int *)arg;
    return gx_pairwise_sqdist(ctx, in[0], self ? in[0] : in[1]);
}

static void check_pair(gx_test_state *T, gx_gc_fn fn, const char *label, int64_t N, int64_t M, int64_t D) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    gx_rng rng;
    gx_rng_init(&rng, 23);
    gx_tensor *t[2] = { gx_test_leaf(&ctx, &rng, 2, GX_SHAPE(N, D), -1, 1),
                        gx_test_leaf(&ctx, &rng, 2, GX_SHAPE(M, D), -1, 1) };
    int self = 0;
    CHECK(gx_gradcheck(T, label, fn, &self, 2, t, GX_GC_DEFAULTS));
    /* a == b: both halves of the gradient land in the same buffer. The
     * sqdist diagonal is 0 (a kink: clamped, zero gradient), which is also
     * the true derivative of ||a_i - a_i||^2, so the check still holds. */
    self = 1;
    CHECK(gx_gradcheck(T, label, fn, &self, 1, t, GX_GC_DEFAULTS));
    gx_ctx_free(&ctx);
}

GX_TEST(grad_matmul_gram) {
    check_pair(T, gram_fn, "gram", 3, 4, 5);
    check_pair(T, gram_fn, "gram", 7, 1, 3);
}

GX_TEST(grad_matmul_pairwise_sqdist) {
    check_pair(T, sqdist_fn, "sqdist", 3, 4, 5);
    check_pair(T, sqdist_fn, "sqdist", 5, 7, 3);
}
