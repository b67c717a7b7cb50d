/*
 * test_parity_reduce.c — reductions, the softmax family, cross-entropy,
 * gather, one-hot and L2 normalise (f32) against PyTorch float64 results in
 * tests/fixtures/reduce.safetensors (written by tests/parity/gen_reduce.py;
 * the case table below mirrors that script's CASES).
 *
 * Tolerances: atol 1e-5 + rtol 1e-5 for outputs and gradients. Statistics
 * accumulate in double and each value is rounded to f32 once, so errors are
 * a few f32 ulps; inputs lie in [-3, 3] so exp() stays well conditioned.
 * one_hot must match exactly.
 */
#include "gx_test.h"

#include <string.h>

#define ATOL 1e-5
#define RTOL 1e-5

enum { R_SUM, R_MEAN, R_MAX, R_SUM_ALL, R_MEAN_ALL, R_SOFTMAX, R_LOG_SOFTMAX, R_LSE, R_L2 };

typedef struct { const char *name; int op, dim, keepdim; double eps; } red_case;

static const red_case CASES[] = {
    { "sum_d1", R_SUM, 1, 0, 0 },
    { "sum_dlast_keep", R_SUM, -1, 1, 0 },
    { "mean_d0", R_MEAN, 0, 0, 0 },
    { "mean_d1_keep", R_MEAN, 1, 1, 0 },
    { "max_d1", R_MAX, 1, 0, 0 },
    { "max_dlast_keep", R_MAX, -1, 1, 0 },
    { "sum_all", R_SUM_ALL, 0, 0, 0 },
    { "mean_all", R_MEAN_ALL, 0, 0, 0 },
    { "softmax_d1", R_SOFTMAX, 1, 0, 0 },
    { "softmax_dlast", R_SOFTMAX, -1, 0, 0 },
    { "log_softmax_d1", R_LOG_SOFTMAX, 1, 0, 0 },
    { "log_softmax_dlast", R_LOG_SOFTMAX, -1, 0, 0 },
    { "logsumexp_d1_keep", R_LSE, 1, 1, 0 },
    { "logsumexp_dlast", R_LSE, -1, 0, 0 },
    { "l2_d1", R_L2, 1, 0, 1e-12 },
    { "l2_dlast", R_L2, -1, 0, 1e-12 },
    { "l2_eps", R_L2, 1, 0, 0.01 },
};

static gx_tensor *run_case(gx_ctx *ctx, const red_case *c, gx_tensor *x) {
    switch (c->op) {
    case R_SUM: return gx_sum(ctx, x, c->dim, c->keepdim);
    case R_MEAN: return gx_mean(ctx, x, c->dim, c->keepdim);
    case R_MAX: return gx_max(ctx, x, c->dim, c->keepdim);
    case R_SUM_ALL: return gx_sum_all(ctx, x);
    case R_MEAN_ALL: return gx_mean_all(ctx, x);
    case R_SOFTMAX: return gx_softmax(ctx, x, c->dim);
    case R_LOG_SOFTMAX: return gx_log_softmax(ctx, x, c->dim);
    case R_LSE: return gx_logsumexp(ctx, x, c->dim, c->keepdim);
    default: return gx_l2_normalize(ctx, x, c->dim, c->eps);
    }
}



/* Copies the int32 class indices "<base>.target" into idx (at most cap). */
static int64_t fx_target(gx_test_state *T, const gx_st_file *f, const char *base, int32_t *idx, int64_t cap) {
    char key[128];
    snprintf(key, sizeof key, "%s.target", base);
    const gx_st_tensor *st = gx_st_find(f, key);
    CHECK_MSG(st && st->dtype == GX_ST_I32 && st->ndim == 1 && st->shape[0] <= cap,
              "%s: missing or not a short I32 vector", key);
    if (!st || st->dtype != GX_ST_I32 || st->ndim != 1 || st->shape[0] > cap) return 0;
    memcpy(idx, st->data, (size_t)st->shape[0] * sizeof(int32_t));
    return st->shape[0];
}

GX_TEST(reduce_parity_reductions_softmax_l2_vs_pytorch) {
    gx_st_file f;
    if (!gx_fixture_open(T, &f, "reduce.safetensors")) return;
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    ctx.grad_enabled = 1;
    for (size_t k = 0; k < sizeof CASES / sizeof CASES[0]; k++) {
        const red_case *c = &CASES[k];
        gx_tensor *x = gx_fixture_tensorf(T, &ctx, &f, "%s.x", c->name);
        gx_tensor *gout = gx_fixture_tensorf(T, &ctx, &f, "%s.gout", c->name);
        if (!x || !gout) continue;
        x->requires_grad = 1;
        gx_tensor *y = run_case(&ctx, c, x);
        /* Shape, not only size: keepdim must keep the size-1 dim. */
        CHECK_MSG(y->ndim == gout->ndim && y->numel == gout->numel, "%s: output is %d-D with %lld values, want %d-D with %lld",
                  c->name, y->ndim, (long long)y->numel, gout->ndim, (long long)gout->numel);
        gx_fixture_checkf(T, &f, y->data, y->numel, ATOL, RTOL, "%s.out", c->name);
        gx_backward(&ctx, y, gout->data);
        gx_fixture_checkf(T, &f, x->grad, x->numel, ATOL, RTOL, "%s.gx", c->name);
        gx_ctx_reset(&ctx);
    }
    gx_ctx_free(&ctx);
    gx_st_close(&f);
}

GX_TEST(reduce_parity_cross_entropy_gather_one_hot_vs_pytorch) {
    gx_st_file f;
    if (!gx_fixture_open(T, &f, "reduce.safetensors")) return;
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    ctx.grad_enabled = 1;
    int32_t t[64];
    static const struct { const char *name; double ls; } CE[] = { { "ce_ls0", 0.0 }, { "ce_ls01", 0.1 }, { "gather", -1 } };
    for (int k = 0; k < 3; k++) {
        const char *n = CE[k].name;
        gx_tensor *x = gx_fixture_tensorf(T, &ctx, &f, "%s.x", n);
        gx_tensor *gout = gx_fixture_tensorf(T, &ctx, &f, "%s.gout", n);
        int64_t B = fx_target(T, &f, n, t, 64);
        if (!x || !gout || B != x->shape[0]) continue;
        x->requires_grad = 1;
        gx_tensor *y = CE[k].ls >= 0 ? gx_cross_entropy(&ctx, x, t, CE[k].ls) : gx_gather(&ctx, x, t);
        gx_fixture_checkf(T, &f, y->data, y->numel, ATOL, RTOL, "%s.out", n);
        gx_backward(&ctx, y, gout->data);
        gx_fixture_checkf(T, &f, x->grad, x->numel, ATOL, RTOL, "%s.gx", n);
        gx_ctx_reset(&ctx);
    }
    int64_t B = fx_target(T, &f, "one_hot", t, 64);
    gx_tensor *want = gx_fixture_tensor(T, &ctx, &f, "one_hot.out");
    if (B > 0 && want) {
        gx_tensor *oh = gx_one_hot(&ctx, t, B, want->shape[1]);
        CHECK(!oh->requires_grad);
        gx_fixture_checkf(T, &f, oh->data, oh->numel, 0, 0, "%s.out", "one_hot");
    }
    gx_ctx_free(&ctx);
    gx_st_close(&f);
}
