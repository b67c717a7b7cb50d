/*
 * test_parity_shape.c — the shape family against PyTorch
 * (tests/parity/gen_shape.py): reshape, permute (4-D, 6-D), concat (middle
 * and last dim), split (re-joined in another order), slice and flip, each
 * forward and backward with the fixture's upstream gradient.
 *
 * Tolerances: these ops only move values (backward adds each upstream value
 * into exactly one place), so f32 results equal the fixture exactly; the
 * checks allow 1e-7 absolute as a formality.
 */
#include "gx_test.h"

#define SHAPE_ATOL 1e-7
#define SHAPE_RTOL 0.0

typedef gx_tensor *(*shape_case_fn)(gx_ctx *ctx, gx_tensor *const *x);

/* Loads <name>.x0..x{n-1} as leaves, runs fn, checks <name>.y, runs backward
 * with <name>.gout and checks every <name>.grad.xi. */
static void run_case(gx_test_state *T, const gx_st_file *f, const char *name, int n,
                     shape_case_fn fn) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    ctx.grad_enabled = 1;
    gx_tensor *x[GX_NODE_MAX_IN];
    char key[96];
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof key, "%s.x%d", name, i);
        x[i] = gx_fixture_tensor(T, &ctx, f, key);
        if (!x[i]) { gx_ctx_free(&ctx); return; }
        x[i]->requires_grad = 1;
    }
    gx_tensor *y = fn(&ctx, x);
    snprintf(key, sizeof key, "%s.y", name);
    gx_fixture_check(T, f, key, y->data, y->numel, SHAPE_ATOL, SHAPE_RTOL);
    snprintf(key, sizeof key, "%s.gout", name);
    gx_tensor *gout = gx_fixture_tensor(T, &ctx, f, key);
    if (gout) gx_backward(&ctx, y, gout->data);
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof key, "%s.grad.x%d", name, i);
        CHECK_MSG(x[i]->grad != NULL, "%s: no gradient", key);
        if (x[i]->grad) gx_fixture_check(T, f, key, x[i]->grad, x[i]->numel, SHAPE_ATOL, SHAPE_RTOL);
    }
    gx_ctx_free(&ctx);
}

static gx_tensor *c_reshape(gx_ctx *ctx, gx_tensor *const *x) {
    return gx_reshape(ctx, x[0], 3, GX_SHAPE(5, -1, 3));
}
static gx_tensor *c_permute4(gx_ctx *ctx, gx_tensor *const *x) {
    return gx_permute(ctx, x[0], (const int[]){ 2, 0, 3, 1 });
}
static gx_tensor *c_permute6(gx_ctx *ctx, gx_tensor *const *x) {
    return gx_permute(ctx, x[0], (const int[]){ 5, 3, 0, 4, 1, 2 });
}
static gx_tensor *c_concat1(gx_ctx *ctx, gx_tensor *const *x) { return gx_concat(ctx, 3, x, 1); }
static gx_tensor *c_concat_last(gx_ctx *ctx, gx_tensor *const *x) { return gx_concat(ctx, 3, x, -1); }
static gx_tensor *c_split(gx_ctx *ctx, gx_tensor *const *x) {
    gx_tensor *p[3];
    gx_split(ctx, x[0], 2, 3, GX_SHAPE(2, 3, 4), p);
    return gx_concat(ctx, 3, (gx_tensor *const[]){ p[2], p[0], p[1] }, 2);
}
static gx_tensor *c_slice(gx_ctx *ctx, gx_tensor *const *x) { return gx_slice(ctx, x[0], 1, 2, 5); }
static gx_tensor *c_flip0(gx_ctx *ctx, gx_tensor *const *x) { return gx_flip(ctx, x[0], 0); }
static gx_tensor *c_flip2(gx_ctx *ctx, gx_tensor *const *x) { return gx_flip(ctx, x[0], 2); }

GX_TEST(parity_shape_all_ops) {
    gx_st_file f;
    if (!gx_fixture_open(T, &f, "shape.safetensors")) return;
    run_case(T, &f, "reshape", 1, c_reshape);
    run_case(T, &f, "permute4", 1, c_permute4);
    run_case(T, &f, "permute6", 1, c_permute6);
    run_case(T, &f, "concat1", 3, c_concat1);
    run_case(T, &f, "concat_last", 3, c_concat_last);
    run_case(T, &f, "split", 1, c_split);
    run_case(T, &f, "slice", 1, c_slice);
    run_case(T, &f, "flip0", 1, c_flip0);
    run_case(T, &f, "flip2", 1, c_flip2);
    gx_st_close(&f);
}
