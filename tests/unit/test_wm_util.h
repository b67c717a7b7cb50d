/*
 * test_wm_util.h — helpers shared by the WaveletMamba parity tests
 * (test_model_wm.c, test_model_rn18.c): tolerances, deterministic images,
 * and the comparison of parameter gradients with a PyTorch fixture.
 */
#ifndef TEST_WM_UTIL_H
#define TEST_WM_UTIL_H

#include <math.h>
#include <stdio.h>
#include "gx_test.h"

#define OUT_ATOL 1e-4
#define OUT_RTOL 1e-4
#define GRAD_REL 3e-3
#define GRAD_ABS 1e-5

static void fill_images(gx_tensor *x, uint64_t seed) {
    gx_rng r;
    gx_rng_init(&r, seed);
    gx_rng_fill_uniform(&r, x->data, x->numel, 0.05, 0.95);
}

/* Relative L2 check of a whole gradient: ||got - want|| <= GRAD_REL ||want||
 * + GRAD_ABS sqrt(n) (the absolute floor covers gradients that are zero in
 * exact arithmetic, e.g. conv biases feeding a batch norm). */
static void check_full(gx_test_state *T, const char *name, const gx_real *got, const gx_real *want,
                       int64_t n) {
    double d = 0, r = 0;
    for (int64_t i = 0; i < n; i++) {
        d += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
        r += (double)want[i] * want[i];
    }
    d = sqrt(d), r = sqrt(r);
    CHECK_MSG(d <= GRAD_REL * r + GRAD_ABS * sqrt((double)n),
              "%s: |grad - ref| = %.3g, |ref| = %.3g (rel %.2e)", name, d, r, d / (r + 1e-30));
}

/* Full gradient (g.NAME) or 64 sampled elements + L2 norm + sum. */
static void check_param_grad(gx_test_state *T, const gx_st_file *f, gx_ctx *ctx, gx_param *p) {
    const gx_real *g = p->t.grad;
    int64_t n = p->t.numel;
    CHECK_MSG(g != NULL, "%s: no gradient", p->name);
    if (!g) return;
    char key[256];
    snprintf(key, sizeof key, "g.%s", p->name);
    if (gx_st_find(f, key)) {
        gx_tensor *want = gx_fixture_tensor(T, ctx, f, key);
        if (want) check_full(T, p->name, g, want->data, n);
        return;
    }
    gx_tensor *idx = gx_fixture_tensorf(T, ctx, f, "gi.%s", p->name);
    gx_tensor *want = gx_fixture_tensorf(T, ctx, f, "gs.%s", p->name);
    gx_tensor *gn = gx_fixture_tensorf(T, ctx, f, "gn.%s", p->name);
    gx_tensor *gs = gx_fixture_tensorf(T, ctx, f, "gsum.%s", p->name);
    if (!idx || !want || !gn || !gs) return;
    double ss = 0, sum = 0, ref_norm = gn->data[0], rms = ref_norm / sqrt((double)n);
    for (int64_t i = 0; i < n; i++) { ss += (double)g[i] * g[i]; sum += g[i]; }
    gx_real *got = gx_ctx_alloc(ctx, (size_t)idx->numel * sizeof(gx_real));
    for (int64_t i = 0; i < idx->numel; i++) got[i] = g[(int64_t)idx->data[i]];
    gx_test_allclose(T, p->name, got, want->data, idx->numel, 2e-2 * rms + GRAD_ABS, GRAD_REL);
    CHECK_MSG(fabs(sqrt(ss) - ref_norm) <= GRAD_REL * ref_norm + GRAD_ABS * sqrt((double)n),
              "%s: grad norm %.9g, want %.9g", p->name, sqrt(ss), ref_norm);
    CHECK_MSG(fabs(sum - gs->data[0]) <= GRAD_REL * ref_norm * sqrt((double)n) + GRAD_ABS * n,
              "%s: grad sum %.9g, want %.9g", p->name, sum, (double)gs->data[0]);
}

static gx_tensor *dot(gx_ctx *ctx, gx_tensor *a, gx_tensor *r) {
    return gx_sum_all(ctx, gx_mul(ctx, a, gx_reshape(ctx, r, a->ndim, a->shape)));
}

#endif
