/*
 * test_sinkhorn.c — forward of gx_sinkhorn_hk (f32 engine): a one-bin case
 * iterated by hand, a small case against a naive double loop written here
 * from the spec, the exp clamp, and independence of rows.
 */
#include "gx_test.h"

/* Naive Sinkhorn-HK in double for one row (spec "Training losses"). */
static double sk_ref(const gx_real *a, const gx_real *b, const gx_real *C, int n, double lam,
                     int iters, double eps) {
    double K[64 * 64], u[64], v[64];
    for (int i = 0; i < n * n; i++) {
        double z = -C[i] / lam;
        K[i] = exp(z < -100 ? -100 : z > 100 ? 100 : z);
    }
    for (int j = 0; j < n; j++) v[j] = 1;
    for (int k = 0; k < iters; k++) {
        for (int i = 0; i < n; i++) {
            double s = 0;
            for (int j = 0; j < n; j++) s += K[i * n + j] * v[j];
            u[i] = a[i] / (s + eps);
        }
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int i = 0; i < n; i++) s += K[i * n + j] * u[i];
            v[j] = b[j] / (s + eps);
        }
    }
    double S = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) S += u[i] * K[i * n + j] * v[j] * C[i * n + j];
    return sqrt((S > 0 ? S : 0) + 1e-8);
}

GX_TEST(sinkhorn_single_bin_by_hand) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    /* n = 1, C = 1, lambda = 0.5: K = e^-2. One iteration:
     * u = 0.3/(K+eps), v = 0.6/(K u + eps); S = u K v; out = sqrt(S + 1e-8). */
    gx_tensor *a = gx_tensor_from(&ctx, 2, GX_SHAPE(1, 1), (gx_real[]){ 0.3 });
    gx_tensor *b = gx_tensor_from(&ctx, 2, GX_SHAPE(1, 1), (gx_real[]){ 0.6 });
    gx_tensor *C = gx_tensor_from(&ctx, 2, GX_SHAPE(1, 1), (gx_real[]){ 1 });
    gx_tensor *o = gx_sinkhorn_hk(&ctx, a, b, C, 0.5, 1, 1e-4);
    double K = exp(-2.0), u = 0.3 / (K + 1e-4), v = 0.6 / (K * u + 1e-4);
    CHECK(o->ndim == 1 && o->shape[0] == 1);
    CHECK_NEAR(o->data[0], sqrt(u * K * v + 1e-8), 1e-6);
    /* With eps -> 0 the plan mass is min-ish: u K v = b K u/(K u + eps) ~ 0.6*(1 - eps/(Ku)). */
    CHECK_NEAR(o->data[0], sqrt(0.6 * (K * u) / (K * u + 1e-4) + 1e-8), 1e-6);
    gx_ctx_free(&ctx);
}

GX_TEST(sinkhorn_matches_naive_loop) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    gx_rng rng;
    gx_rng_init(&rng, 9);
    const int B = 3, n = 7;
    gx_tensor *a = gx_test_const(&ctx, &rng, 2, GX_SHAPE(B, n), 0.01, 1);
    gx_tensor *b = gx_test_const(&ctx, &rng, 2, GX_SHAPE(B, n), 0.01, 1);
    gx_tensor *C = gx_tensor_new(&ctx, 2, GX_SHAPE(n, n));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) C->data[i * n + j] = (gx_real)((i - j) * (i - j) * 0.04 + 1.0);
    double lams[2] = { 0.5, 0.1 };
    for (int l = 0; l < 2; l++) {
        gx_tensor *o = gx_sinkhorn_hk(&ctx, a, b, C, lams[l], 50, 1e-4);
        for (int r = 0; r < B; r++)
            CHECK_NEAR(o->data[r], sk_ref(a->data + r * n, b->data + r * n, C->data, n, lams[l], 50, 1e-4),
                       2e-6 * o->data[r]);
    }
    gx_ctx_free(&ctx);
}

GX_TEST(sinkhorn_clamps_the_kernel_exponent) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    /* C/lambda = 1000 and -1000 clamp to exp(-100) and exp(100); the naive
     * loop with the same clamp agrees, and the result is finite. */
    const int n = 2;
    gx_tensor *a = gx_tensor_from(&ctx, 2, GX_SHAPE(1, 2), (gx_real[]){ 0.4, 0.6 });
    gx_tensor *b = gx_tensor_from(&ctx, 2, GX_SHAPE(1, 2), (gx_real[]){ 0.5, 0.5 });
    gx_tensor *C = gx_tensor_from(&ctx, 2, GX_SHAPE(2, 2), (gx_real[]){ 100, 1, 1, 100 });
    gx_tensor *o = gx_sinkhorn_hk(&ctx, a, b, C, 0.1, 20, 1e-4);
    double want = sk_ref(a->data, b->data, C->data, n, 0.1, 20, 1e-4);
    CHECK(isfinite(o->data[0]));
    CHECK_NEAR(o->data[0], want, 1e-6 * want);
    gx_ctx_free(&ctx);
}

GX_TEST(sinkhorn_rows_are_independent) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 22);
    gx_rng rng;
    gx_rng_init(&rng, 4);
    const int B = 64, n = 40;
    gx_tensor *a = gx_test_const(&ctx, &rng, 2, GX_SHAPE(B, n), 0.0, 1);
    gx_tensor *b = gx_test_const(&ctx, &rng, 2, GX_SHAPE(B, n), 0.0, 1);
    gx_tensor *C = gx_tensor_new(&ctx, 2, GX_SHAPE(n, n));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) C->data[i * n + j] = (gx_real)((i - j) * (i - j) * 0.005 + 1.0);
    gx_tensor *all = gx_sinkhorn_hk(&ctx, a, b, C, 0.5, 50, 1e-4);
    gx_tensor *a5 = gx_tensor_from(&ctx, 2, GX_SHAPE(1, n), a->data + 5 * n);
    gx_tensor *b5 = gx_tensor_from(&ctx, 2, GX_SHAPE(1, n), b->data + 5 * n);
    gx_tensor *one = gx_sinkhorn_hk(&ctx, a5, b5, C, 0.5, 50, 1e-4);
    CHECK(all->data[5] == one->data[0]);
    gx_ctx_free(&ctx);
}
