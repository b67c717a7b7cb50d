/*
 * test_matmul.c — forward (and a few backward) values of the matmul family
 * on cases small enough to work out by hand.
 */
#include "gx_test.h"

#include <string.h>

static gx_tensor *leaf_from(gx_ctx *ctx, int nd, const int64_t *shape, const gx_real *v) {
    gx_tensor *t = gx_tensor_from(ctx, nd, shape, v);
    t->requires_grad = 1;
    return t;
}

GX_TEST(matmul_linear_forward_and_backward_by_hand) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    ctx.grad_enabled = 1;
    /* x [2,1,3] exercises the flattening of leading dims. */
    gx_tensor *x = leaf_from(&ctx, 3, GX_SHAPE(2, 1, 3), (gx_real[]){ 1, 2, 3, 4, 5, 6 });
    gx_tensor *w = leaf_from(&ctx, 2, GX_SHAPE(2, 3), (gx_real[]){ 1, 0, -1, 0.5, 0.5, 0.5 });
    gx_tensor *b = leaf_from(&ctx, 1, GX_SHAPE(2), (gx_real[]){ 1, -1 });
    gx_tensor *y = gx_linear(&ctx, x, w, b);
    CHECK(y->ndim == 3 && y->shape[0] == 2 && y->shape[1] == 1 && y->shape[2] == 2);
    /* row0: 1-3+1 = -1, 3-1 = 2; row1: 4-6+1 = -1, 7.5-1 = 6.5 */
    gx_real want[4] = { -1, 2, -1, 6.5 };
    gx_test_allclose(T, "linear y", y->data, want, 4, 1e-6, 0);
    /* dY = [[1,0],[0,2]]: dX = dY W, dW = dY^T X, db = column sums. */
    gx_backward(&ctx, y, (gx_real[]){ 1, 0, 0, 2 });
    gx_test_allclose(T, "linear dx", x->grad, (gx_real[]){ 1, 0, -1, 1, 1, 1 }, 6, 1e-6, 0);
    gx_test_allclose(T, "linear dw", w->grad, (gx_real[]){ 1, 2, 3, 8, 10, 12 }, 6, 1e-6, 0);
    gx_test_allclose(T, "linear db", b->grad, (gx_real[]){ 1, 2 }, 2, 1e-6, 0);
    /* Without bias the output is just x W^T. */
    gx_tensor *y2 = gx_linear(&ctx, x, w, NULL);
    gx_test_allclose(T, "linear no bias", y2->data, (gx_real[]){ -2, 3, -2, 7.5 }, 4, 1e-6, 0);
    gx_ctx_free(&ctx);
}

GX_TEST(matmul_batched_and_shared_rhs) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    /* a [2,2,2]: batch 0 = identity, batch 1 = [[0,1],[1,0]] (row swap). */
    gx_tensor *a = gx_tensor_from(&ctx, 3, GX_SHAPE(2, 2, 2), (gx_real[]){ 1, 0, 0, 1, 0, 1, 1, 0 });
    gx_tensor *b = gx_tensor_from(&ctx, 3, GX_SHAPE(2, 2, 3),
                                  (gx_real[]){ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 });
    gx_tensor *c = gx_matmul(&ctx, a, b);
    CHECK(c->ndim == 3 && c->shape[0] == 2 && c->shape[1] == 2 && c->shape[2] == 3);
    gx_test_allclose(T, "bmm", c->data, (gx_real[]){ 1, 2, 3, 4, 5, 6, 10, 11, 12, 7, 8, 9 }, 12, 1e-6, 0);
    /* Shared 2-D b applies to every batch. */
    gx_tensor *b2 = gx_tensor_from(&ctx, 2, GX_SHAPE(2, 1), (gx_real[]){ 10, 1 });
    gx_tensor *c2 = gx_matmul(&ctx, a, b2);
    CHECK(c2->shape[0] == 2 && c2->shape[1] == 2 && c2->shape[2] == 1);
    gx_test_allclose(T, "shared b", c2->data, (gx_real[]){ 10, 1, 1, 10 }, 4, 1e-6, 0);
    gx_ctx_free(&ctx);
}

GX_TEST(matmul_gram_of_itself_is_symmetric) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    ctx.grad_enabled = 1;
    gx_tensor *a = leaf_from(&ctx, 2, GX_SHAPE(2, 2), (gx_real[]){ 1, 2, 3, 4 });
    gx_tensor *g = gx_gram(&ctx, a, a);
    gx_test_allclose(T, "gram", g->data, (gx_real[]){ 5, 11, 11, 25 }, 4, 1e-6, 0);
    /* G = A A^T with dG = ones: dA = (dG + dG^T) A = 2 * column sums broadcast. */
    gx_backward(&ctx, g, NULL);
    gx_test_allclose(T, "gram dA (a is b)", a->grad, (gx_real[]){ 8, 12, 8, 12 }, 4, 1e-6, 0);
    gx_ctx_free(&ctx);
}

GX_TEST(matmul_pairwise_sqdist_values_and_clamp) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    ctx.grad_enabled = 1;
    gx_tensor *a = gx_tensor_from(&ctx, 2, GX_SHAPE(2, 2), (gx_real[]){ 0, 0, 1, 1 });
    gx_tensor *b = gx_tensor_from(&ctx, 2, GX_SHAPE(3, 2), (gx_real[]){ 1, 0, 0, 0, 1, 1 });
    gx_tensor *d = gx_pairwise_sqdist(&ctx, a, b);
    gx_test_allclose(T, "sqdist", d->data, (gx_real[]){ 1, 0, 2, 1, 2, 0 }, 6, 1e-6, 0);
    /* Large, nearly equal rows: |a|^2 + |b|^2 - 2ab cancels and rounds in
     * f32; the clamp must keep every entry >= 0. */
    gx_rng rng;
    gx_rng_init(&rng, 7);
    gx_tensor *p = gx_test_leaf(&ctx, &rng, 2, GX_SHAPE(16, 9), 100, 101);
    gx_tensor *dp = gx_pairwise_sqdist(&ctx, p, p);
    int neg = 0;
    for (int64_t i = 0; i < dp->numel; i++) neg += dp->data[i] < 0;
    CHECK(neg == 0);
    /* A seed only on clamped (zero) diagonal entries gives zero gradient. */
    gx_real *seed = gx_ctx_alloc(&ctx, (size_t)dp->numel * sizeof(gx_real));
    memset(seed, 0, (size_t)dp->numel * sizeof(gx_real));
    int zeros = 0;
    for (int64_t i = 0; i < 16; i++)
        if (dp->data[i * 16 + i] == 0) { seed[i * 16 + i] = 1; zeros++; }
    CHECK(zeros > 0);   /* f32 cancellation at |x|~100 rounds the diagonal to <= 0 */
    gx_backward(&ctx, dp, seed);
    double s = 0;
    for (int64_t i = 0; i < p->numel; i++) s += fabs((double)p->grad[i]);
    CHECK(s == 0);
    gx_ctx_free(&ctx);
}
