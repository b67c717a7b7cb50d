/*
 * test_reduce.c — reductions and the softmax family forward on hand-checked
 * values, output shapes (keepdim), numerical stability on huge logits, and
 * cross-entropy / gather / one-hot / L2 normalise by hand.
 */
#include "gx_test.h"

#include <string.h>

/* x = [[[0,1,2],[3,4,5]], [[6,7,8],[9,10,11]]] of shape [2,2,3]. */
static gx_tensor *iota223(gx_ctx *ctx) {
    gx_tensor *x = gx_tensor_new(ctx, 3, GX_SHAPE(2, 2, 3));
    for (int i = 0; i < 12; i++) x->data[i] = (gx_real)i;
    return x;
}


GX_TEST(reduce_sum_mean_max_hand_values_and_shapes) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    gx_tensor *x = iota223(&ctx);
    gx_tensor *s0 = gx_sum(&ctx, x, 0, 0);
    CHECK(s0->ndim == 2 && s0->shape[0] == 2 && s0->shape[1] == 3);
    gx_test_expect(T, "sum d0", s0, (double[]){ 6, 8, 10, 12, 14, 16 }, 6, 1e-6, 1e-6);
    gx_tensor *s1 = gx_sum(&ctx, x, 1, 1);
    CHECK(s1->ndim == 3 && s1->shape[0] == 2 && s1->shape[1] == 1 && s1->shape[2] == 3);
    gx_test_expect(T, "sum d1", s1, (double[]){ 3, 5, 7, 15, 17, 19 }, 6, 1e-6, 1e-6);
    gx_test_expect(T, "sum d-1", gx_sum(&ctx, x, -1, 0), (double[]){ 3, 12, 21, 30 }, 4, 1e-6, 1e-6);
    gx_test_expect(T, "mean d1", gx_mean(&ctx, x, 1, 0), (double[]){ 1.5, 2.5, 3.5, 7.5, 8.5, 9.5 }, 6, 1e-6, 1e-6);
    gx_test_expect(T, "mean d-1", gx_mean(&ctx, x, 2, 1), (double[]){ 1, 4, 7, 10 }, 4, 1e-6, 1e-6);
    gx_test_expect(T, "max d0", gx_max(&ctx, x, 0, 0), (double[]){ 6, 7, 8, 9, 10, 11 }, 6, 1e-6, 1e-6);
    gx_test_expect(T, "max d2", gx_max(&ctx, x, 2, 0), (double[]){ 2, 5, 8, 11 }, 4, 1e-6, 1e-6);
    gx_tensor *sa = gx_sum_all(&ctx, x), *ma = gx_mean_all(&ctx, x);
    CHECK(sa->ndim == 0 && sa->numel == 1 && ma->ndim == 0);
    CHECK_NEAR(sa->data[0], 66, 0);
    CHECK_NEAR(ma->data[0], 5.5, 0);
    gx_ctx_free(&ctx);
}

GX_TEST(reduce_max_gradient_goes_to_first_maximum) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    ctx.grad_enabled = 1;
    gx_tensor *x = gx_tensor_from(&ctx, 2, GX_SHAPE(2, 3), (gx_real[]){ 3, 1, 3, 0, 5, 5 });
    x->requires_grad = 1;
    gx_tensor *m = gx_max(&ctx, x, 1, 0);
    gx_test_expect(T, "max", m, (double[]){ 3, 5 }, 2, 1e-6, 1e-6);
    gx_backward(&ctx, m, (gx_real[]){ 2, -1 });
    gx_test_allclose(T, "max grad", x->grad, (gx_real[]){ 2, 0, 0, 0, -1, 0 }, 6, 0, 0);
    gx_ctx_free(&ctx);
}

GX_TEST(reduce_sum_all_large_is_exact_and_thread_independent) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 22);
    /* 300001 values of 0.1f: double accumulation keeps the f32 result at
     * the correctly rounded value; a float accumulator would drift by ~1e-3. */
    int64_t N = 300001;
    gx_tensor *x = gx_tensor_new(&ctx, 1, GX_SHAPE(N));
    for (int64_t i = 0; i < N; i++) x->data[i] = (gx_real)0.1;
    double want = (double)N * (double)(gx_real)0.1;
    gx_real a = gx_sum_all(&ctx, x)->data[0];
    CHECK_NEAR(a, want, fabs(want) * 1e-7);
    int th = gx_get_threads();
    gx_set_threads(1);
    gx_real b = gx_sum_all(&ctx, x)->data[0];
    gx_real c = gx_sum(&ctx, x, 0, 0)->data[0];
    gx_set_threads(th);
    CHECK(a == b);
    CHECK_NEAR(c, want, fabs(want) * 1e-7);
    gx_ctx_free(&ctx);
}

GX_TEST(reduce_softmax_family_hand_values) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    /* Row [0, ln 2, ln 3] has softmax [1/6, 2/6, 3/6] and logsumexp ln 6. */
    gx_tensor *x = gx_tensor_from(&ctx, 2, GX_SHAPE(2, 3),
                                  (gx_real[]){ 0, (gx_real)log(2.0), (gx_real)log(3.0), 1, 1, 1 });
    gx_test_expect(T, "softmax", gx_softmax(&ctx, x, -1), (double[]){ 1. / 6, 2. / 6, 3. / 6, 1. / 3, 1. / 3, 1. / 3 }, 6, 1e-6, 1e-6);
    gx_test_expect(T, "log_softmax", gx_log_softmax(&ctx, x, 1),
           (double[]){ -log(6.0), log(2.0) - log(6.0), log(3.0) - log(6.0), -log(3.0), -log(3.0), -log(3.0) }, 6, 1e-6, 1e-6);
    gx_tensor *l = gx_logsumexp(&ctx, x, 1, 1);
    CHECK(l->ndim == 2 && l->shape[0] == 2 && l->shape[1] == 1);
    gx_test_expect(T, "logsumexp", l, (double[]){ log(6.0), 1 + log(3.0) }, 2, 1e-6, 1e-6);
    /* Over dim 0 (a middle-dim style panel): columns [0,1], [ln2,1], [ln3,1]. */
    gx_tensor *s0 = gx_softmax(&ctx, x, 0);
    CHECK_NEAR(s0->data[0], 1 / (1 + exp(1.0)), 1e-7);
    CHECK_NEAR(s0->data[0] + s0->data[3], 1.0, 1e-7);
    CHECK_NEAR(s0->data[2] + s0->data[5], 1.0, 1e-7);
    gx_ctx_free(&ctx);
}

GX_TEST(reduce_softmax_stable_on_huge_and_infinite_logits) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    gx_tensor *x = gx_tensor_from(&ctx, 2, GX_SHAPE(2, 2),
                                  (gx_real[]){ 1000, 1001, -INFINITY, 0 });
    gx_tensor *s = gx_softmax(&ctx, x, 1);
    gx_test_expect(T, "softmax huge", s, (double[]){ 1 / (1 + exp(1.0)), 1 / (1 + exp(-1.0)), 0, 1 }, 4, 1e-6, 1e-6);
    gx_tensor *l = gx_logsumexp(&ctx, x, 1, 0);
    CHECK_NEAR(l->data[0], 1001 + log(1 + exp(-1.0)), 1e-4);
    CHECK_NEAR(l->data[1], 0, 1e-7);
    /* A row of only -inf: logsumexp is -inf (not NaN), as in PyTorch. */
    gx_tensor *m = gx_tensor_from(&ctx, 1, GX_SHAPE(2), (gx_real[]){ -INFINITY, -INFINITY });
    CHECK(isinf(gx_logsumexp(&ctx, m, 0, 0)->data[0]) && gx_logsumexp(&ctx, m, 0, 0)->data[0] < 0);
    gx_ctx_free(&ctx);
}

GX_TEST(reduce_cross_entropy_hand_values_and_gradient) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    ctx.grad_enabled = 1;
    /* Row 0 = [0, ln2, ln3]: p = [1/6, 1/3, 1/2]. Target 2: loss = ln 2.
     * With ls = 0.3: loss = 0.7 ln2 + 0.1 (ln6 + ln3 + ln2) = 0.7 ln2 + 0.1 ln36.
     * Row 1 = [1,1,1], target 0: loss = ln 3 whatever ls. */
    gx_tensor *x = gx_tensor_from(&ctx, 2, GX_SHAPE(2, 3),
                                  (gx_real[]){ 0, (gx_real)log(2.0), (gx_real)log(3.0), 1, 1, 1 });
    x->requires_grad = 1;
    int32_t t[2] = { 2, 0 };
    gx_tensor *l0 = gx_cross_entropy(&ctx, x, t, 0.0);
    CHECK(l0->ndim == 1 && l0->shape[0] == 2);
    gx_test_expect(T, "ce ls0", l0, (double[]){ log(2.0), log(3.0) }, 2, 1e-6, 1e-6);
    gx_tensor *l3 = gx_cross_entropy(&ctx, x, t, 0.3);
    gx_test_expect(T, "ce ls0.3", l3, (double[]){ 0.7 * log(2.0) + 0.1 * log(36.0), log(3.0) }, 2, 1e-6, 1e-6);
    /* Gradient of row 0 with ls 0.3: p - q, q = 0.7 onehot(2) + 0.1. */
    gx_backward(&ctx, l3, (gx_real[]){ 1, 0 });
    gx_test_allclose(T, "ce grad", x->grad,
                     (gx_real[]){ 1.f / 6 - 0.1f, 1.f / 3 - 0.1f, 0.5f - 0.8f, 0, 0, 0 }, 6, 1e-7, 1e-6);
    gx_ctx_free(&ctx);
}

GX_TEST(reduce_gather_one_hot_hand_values) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    ctx.grad_enabled = 1;
    gx_tensor *x = gx_tensor_from(&ctx, 2, GX_SHAPE(2, 3), (gx_real[]){ 1, 2, 3, 4, 5, 6 });
    x->requires_grad = 1;
    int32_t idx[2] = { 1, 2 };
    gx_tensor *g = gx_gather(&ctx, x, idx);
    gx_test_expect(T, "gather", g, (double[]){ 2, 6 }, 2, 1e-6, 1e-6);
    gx_backward(&ctx, g, (gx_real[]){ 3, -1 });
    gx_test_allclose(T, "gather grad", x->grad, (gx_real[]){ 0, 3, 0, 0, 0, -1 }, 6, 0, 0);
    gx_tensor *oh = gx_one_hot(&ctx, idx, 2, 4);
    CHECK(oh->ndim == 2 && oh->shape[1] == 4 && !oh->requires_grad);
    gx_test_expect(T, "one_hot", oh, (double[]){ 0, 1, 0, 0, 0, 0, 1, 0 }, 8, 1e-6, 1e-6);
    gx_ctx_free(&ctx);
}

GX_TEST(reduce_l2_normalize_hand_values) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    /* Rows [3,4] -> [0.6, 0.8]; [0,0] stays 0; [1e-13, 0] is below eps so
     * it is divided by eps = 1e-12, giving [0.1, 0]. */
    gx_tensor *x = gx_tensor_from(&ctx, 2, GX_SHAPE(3, 2), (gx_real[]){ 3, 4, 0, 0, (gx_real)1e-13, 0 });
    gx_test_expect(T, "l2 rows", gx_l2_normalize(&ctx, x, 1, 1e-12), (double[]){ 0.6, 0.8, 0, 0, 0.1, 0 }, 6, 1e-6, 1e-6);
    /* Along dim 0 (columns [3,0,1e-13], [4,0,0]). */
    gx_tensor *c = gx_l2_normalize(&ctx, x, 0, 1e-12);
    CHECK_NEAR(c->data[0], 1.0, 1e-6);
    CHECK_NEAR(c->data[1], 1.0, 1e-6);
    gx_ctx_free(&ctx);
}

GX_TEST(reduce_softmax_and_sum_do_not_depend_on_thread_count) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 24);
    gx_rng rng;
    gx_rng_init(&rng, 12);
    gx_tensor *x = gx_test_const(&ctx, &rng, 3, GX_SHAPE(16, 37, 301), -4, 4);
    gx_real *r[2][3];
    int th = gx_get_threads();
    for (int k = 0; k < 2; k++) {
        gx_set_threads(k ? 2 : 1);
        r[k][0] = gx_softmax(&ctx, x, 1)->data;       /* middle dim: panels */
        r[k][1] = gx_log_softmax(&ctx, x, -1)->data;  /* last dim: rows */
        r[k][2] = gx_sum(&ctx, x, 1, 0)->data;
    }
    gx_set_threads(th);
    gx_test_allclose(T, "softmax d1", r[0][0], r[1][0], x->numel, 0, 0);
    gx_test_allclose(T, "log_softmax d-1", r[0][1], r[1][1], x->numel, 0, 0);
    gx_test_allclose(T, "sum d1", r[0][2], r[1][2], 16 * 301, 0, 0);
    /* Softmax over dim 1 sums to 1 in every (outer, inner) column. */
    double worst = 0;
    for (int64_t o = 0; o < 16; o++)
        for (int64_t i = 0; i < 301; i++) {
            double s = 0;
            for (int64_t j = 0; j < 37; j++) s += r[0][0][(o * 37 + j) * 301 + i];
            worst = fmax(worst, fabs(s - 1));
        }
    CHECK_NEAR(worst, 0, 1e-6);
    gx_ctx_free(&ctx);
}
