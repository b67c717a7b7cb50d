/*
 * test_grad_reduce.c — finite-difference gradient checks (f64) of every
 * reduction and softmax-family op, on at least two shapes with odd sizes and
 * on first, middle and last dims, keepdim on and off.
 *
 * max: random inputs have no ties, so the argmax is stable under the 1e-6
 * step. l2_normalize is checked on both sides of its eps clamp.
 */
#include "gx_test.h"

typedef struct { int op, dim, keepdim; double p; } red_arg;

enum { R_SUM, R_MEAN, R_MAX, R_SUM_ALL, R_MEAN_ALL, R_SOFTMAX, R_LOG_SOFTMAX, R_LSE, R_L2 };

static gx_tensor *red_fn(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const red_arg *r = arg;
    gx_tensor *x = in[0];
    switch (r->op) {
    case R_SUM: return gx_sum(ctx, x, r->dim, r->keepdim);
    case R_MEAN: return gx_mean(ctx, x, r->dim, r->keepdim);
    case R_MAX: return gx_max(ctx, x, r->dim, r->keepdim);
    case R_SUM_ALL: return gx_sum_all(ctx, x);
    case R_MEAN_ALL: return gx_mean_all(ctx, x);
    case R_SOFTMAX: return gx_softmax(ctx, x, r->dim);
    case R_LOG_SOFTMAX: return gx_log_softmax(ctx, x, r->dim);
    case R_LSE: return gx_logsumexp(ctx, x, r->dim, r->keepdim);
    default: return gx_l2_normalize(ctx, x, r->dim, r->p);
    }
}

static const char *NAMES[] = { "sum", "mean", "max", "sum_all", "mean_all", "softmax",
                               "log_softmax", "logsumexp", "l2_normalize" };

GX_TEST(reduce_grad_every_dim_op_first_middle_last_dim) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    gx_rng rng;
    gx_rng_init(&rng, 5);
    static const int ops[] = { R_SUM, R_MEAN, R_MAX, R_SOFTMAX, R_LOG_SOFTMAX, R_LSE, R_L2 };
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++)
        for (int dim = -1; dim < 3; dim++) {
            /* Shape [3,5,7] over dims -1, 0, 1, 2 and [4,9] over the last. */
            red_arg r = { ops[k], dim, dim & 1, 1e-12 };
            gx_tensor *x = gx_test_leaf(&ctx, &rng, 3, GX_SHAPE(3, 5, 7), -2, 2);
            char label[64];
            snprintf(label, sizeof label, "%s dim %d keep %d", NAMES[ops[k]], dim, dim & 1);
            CHECK(gx_gradcheck(T, label, red_fn, &r, 1, &x, GX_GC_DEFAULTS));
            gx_tensor *y = gx_test_leaf(&ctx, &rng, 2, GX_SHAPE(4, 9), -2, 2);
            r.dim = dim < 0 ? -1 : dim % 2;
            CHECK(gx_gradcheck(T, label, red_fn, &r, 1, &y, GX_GC_DEFAULTS));
        }
    gx_ctx_free(&ctx);
}

GX_TEST(reduce_grad_sum_all_mean_all) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    gx_rng rng;
    gx_rng_init(&rng, 6);
    for (int op = R_SUM_ALL; op <= R_MEAN_ALL; op++) {
        red_arg r = { op, 0, 0, 0 };
        gx_tensor *a = gx_test_leaf(&ctx, &rng, 1, GX_SHAPE(11), -2, 2);
        gx_tensor *b = gx_test_leaf(&ctx, &rng, 3, GX_SHAPE(3, 5, 7), -2, 2);
        CHECK(gx_gradcheck(T, NAMES[op], red_fn, &r, 1, &a, GX_GC_DEFAULTS));
        CHECK(gx_gradcheck(T, NAMES[op], red_fn, &r, 1, &b, GX_GC_DEFAULTS));
    }
    gx_ctx_free(&ctx);
}

GX_TEST(reduce_grad_l2_normalize_below_eps) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    gx_rng rng;
    gx_rng_init(&rng, 8);
    /* Norms of ~0.1 under eps = 1: y = x / eps, a linear map. */
    red_arg r = { R_L2, 1, 0, 1.0 };
    gx_tensor *x = gx_test_leaf(&ctx, &rng, 2, GX_SHAPE(3, 5), -0.05, 0.05);
    CHECK(gx_gradcheck(T, "l2 clamped", red_fn, &r, 1, &x, GX_GC_DEFAULTS));
    /* Mixed: one row far above eps, others below. */
    for (int j = 0; j < 5; j++) x->data[j] = (gx_real)(1 + j);
    CHECK(gx_gradcheck(T, "l2 mixed", red_fn, &r, 1, &x, GX_GC_DEFAULTS));
    gx_ctx_free(&ctx);
}

/* ---- cross-entropy and gather ------------------------------------------------ */

typedef struct { const int32_t *t; double ls; int gather; } ce_arg;

static gx_tensor *ce_fn(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const ce_arg *c = arg;
    return c->gather ? gx_gather(ctx, in[0], c->t) : gx_cross_entropy(ctx, in[0], c->t, c->ls);
}

GX_TEST(reduce_grad_cross_entropy_and_gather) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    gx_rng rng;
    gx_rng_init(&rng, 7);
    static const int32_t t[5] = { 2, 0, 6, 3, 1 };
    static const int64_t shapes[2][2] = { { 5, 7 }, { 3, 4 } };
    for (int s = 0; s < 2; s++)
        for (int mode = 0; mode < 3; mode++) {
            ce_arg c = { t, mode == 1 ? 0.1 : 0.0, mode == 2 };
            if (s == 1 && mode < 2) c.ls = mode ? 0.35 : 0.0;
            const int32_t t2[3] = { 3, 0, 1 };
            if (s == 1) c.t = t2;
            gx_tensor *x = gx_test_leaf(&ctx, &rng, 2, shapes[s], -3, 3);
            char label[64];
            snprintf(label, sizeof label, "%s shape %d ls %g", mode == 2 ? "gather" : "ce", s, c.ls);
            CHECK(gx_gradcheck(T, label, ce_fn, &c, 1, &x, GX_GC_DEFAULTS));
        }
    gx_ctx_free(&ctx);
}
