/*
 * test_grad_sinkhorn.c — finite-difference checks (f64 engine) of
 * gx_sinkhorn_hk's backward through all iterations, with respect to a and b,
 * on two shapes and both lambdas the spec uses (0.5 and 0.1), 50 iterations.
 */
#include "gx_test.h"

typedef struct { const gx_tensor *C; double lambda; int iters; } sk_arg;

static gx_tensor *sk_fn(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const sk_arg *s = arg;
    return gx_sinkhorn_hk(ctx, in[0], in[1], s->C, s->lambda, s->iters, 1e-4);
}

/* C_ij = (c_i - c_j)^2 + 1 on n centres spread over [0, 2] (spec's cost). */
static gx_tensor *cost(gx_ctx *ctx, int n) {
    gx_tensor *C = gx_tensor_new(ctx, 2, GX_SHAPE(n, n));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double d = 2.0 * (i - j) / (n - 1);
            C->data[i * n + j] = d * d + 1.0;
        }
    return C;
}

static void check_case(gx_test_state *T, int B, int n, double lambda, int iters) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    gx_rng rng;
    gx_rng_init(&rng, (uint64_t)(B * 100 + n));
    gx_tensor *in[2] = { gx_test_leaf(&ctx, &rng, 2, GX_SHAPE(B, n), 0.02, 0.4),
                         gx_test_leaf(&ctx, &rng, 2, GX_SHAPE(B, n), 0.02, 0.4) };
    sk_arg s = { cost(&ctx, n), lambda, iters };
    char label[64];
    snprintf(label, sizeof label, "sinkhorn B=%d n=%d lambda=%g", B, n, lambda);
    CHECK(gx_gradcheck(T, label, sk_fn, &s, 2, in, GX_GC_DEFAULTS));
    gx_ctx_free(&ctx);
}

GX_TEST(grad_sinkhorn_lambda_half) {
    check_case(T, 3, 5, 0.5, 50);
    check_case(T, 2, 9, 0.5, 50);
}

GX_TEST(grad_sinkhorn_lambda_tenth) {
    check_case(T, 3, 5, 0.1, 50);
    check_case(T, 1, 8, 0.1, 50);
}

GX_TEST(grad_sinkhorn_few_iterations) {
    check_case(T, 2, 4, 0.5, 1);
    check_case(T, 2, 6, 0.5, 3);
}
