/*
 * test_pool.c — hand-checked cases for adaptive average pooling, bilinear
 * resize and nearest x2 upsampling. Expected values follow from the bin and
 * interpolation rules quoted in kernels/gx_pool.c, worked out in comments.
 */
#include "gx_test.h"

static gx_tensor *arange4(gx_ctx *ctx, int64_t B, int64_t C, int64_t H, int64_t W, int grad) {
    gx_tensor *t = gx_tensor_new(ctx, 4, GX_SHAPE(B, C, H, W));
    for (int64_t i = 0; i < t->numel; i++) t->data[i] = (gx_real)i;
    t->requires_grad = (uint8_t)grad;
    return t;
}

GX_TEST(pool_adaptive_overlapping_bins_7_to_3) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    /* x[y][x] = 7y + x. Bins of 7 -> 3: rows/cols {0..2}, {2..4}, {4..6},
     * means 1, 3, 5; so out[i][j] = 7*(1+2i) + (1+2j). */
    gx_tensor *x = arange4(&ctx, 1, 1, 7, 7, 0);
    gx_tensor *y = gx_adaptive_avg_pool2d(&ctx, x, 3, 3);
    CHECK(y->shape[2] == 3 && y->shape[3] == 3);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) CHECK_NEAR(y->data[i * 3 + j], 7 * (1 + 2 * i) + 1 + 2 * j, 1e-5);
    gx_ctx_free(&ctx);
}

GX_TEST(pool_adaptive_upsampling_5_to_8_and_divisible_grad) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    ctx.grad_enabled = 1;
    /* 5 -> 8 along W: bins [0,1) [0,2) [1,2) [1,3) [2,4) [3,4) [3,5) [4,5). */
    gx_tensor *x = arange4(&ctx, 1, 1, 1, 5, 1);
    gx_tensor *y = gx_adaptive_avg_pool2d(&ctx, x, 1, 8);
    const gx_real want[8] = { 0, 0.5, 1, 1.5, 2.5, 3, 3.5, 4 };
    gx_test_allclose(T, "5->8", y->data, want, 8, 1e-6, 0);
    /* Seed ones: each input gets sum over bins containing it of 1/size:
     * x0: 1 + 1/2; x1: 1/2 + 1 + 1/2; x2: 1/2 + 1/2 (+0); x3: 1/2+1+1/2; x4: 1/2 + 1. */
    gx_backward(&ctx, y, NULL);
    const gx_real gw[5] = { 1.5, 2, 1, 2, 1.5 };
    gx_test_allclose(T, "5->8 grad", x->grad, gw, 5, 1e-6, 0);
    /* 4x4 -> 2x2 on two planes: plain 2x2 block means. */
    gx_tensor *z = arange4(&ctx, 1, 2, 4, 4, 0);
    gx_tensor *zy = gx_adaptive_avg_pool2d(&ctx, z, 2, 2);
    const gx_real zw[8] = { 2.5, 4.5, 10.5, 12.5, 18.5, 20.5, 26.5, 28.5 };
    gx_test_allclose(T, "4->2", zy->data, zw, 8, 1e-5, 0);
    gx_ctx_free(&ctx);
}

GX_TEST(pool_bilinear_up_and_down_half_pixel_rule) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    /* 1-D up 2 -> 4, x = [0, 4]: src = (d+0.5)/2 - 0.5 = -0.25 (clamped to
     * 0), 0.25, 0.75, 1.25 (i0 = i1 = 1) -> [0, 1, 3, 4]. The function
     * 8y + 4x is separable, so the 2x2 [[0,4],[8,12]] -> out = 2r[i] + r[j]. */
    gx_tensor *x = gx_tensor_from(&ctx, 4, GX_SHAPE(1, 1, 2, 2), (const gx_real[]){ 0, 4, 8, 12 });
    gx_tensor *y = gx_resize_bilinear(&ctx, x, 4, 4);
    const double r[4] = { 0, 1, 3, 4 };
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) CHECK_NEAR(y->data[i * 4 + j], 2 * r[i] + r[j], 1e-5);
    /* Down 4 -> 2: src = (d+0.5)*2 - 0.5 = 0.5, 2.5 -> midpoints [0.5, 2.5]. */
    gx_tensor *v = arange4(&ctx, 1, 1, 1, 4, 0);
    gx_tensor *vd = gx_resize_bilinear(&ctx, v, 1, 2);
    CHECK_NEAR(vd->data[0], 0.5, 1e-6);
    CHECK_NEAR(vd->data[1], 2.5, 1e-6);
    /* Same size is the identity. */
    gx_tensor *w = arange4(&ctx, 2, 1, 3, 5, 0);
    gx_tensor *wi = gx_resize_bilinear(&ctx, w, 3, 5);
    gx_test_allclose(T, "identity", wi->data, w->data, w->numel, 0, 0);
    gx_ctx_free(&ctx);
}

GX_TEST(pool_nearest2x_blocks_and_grad_sums) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    ctx.grad_enabled = 1;
    gx_tensor *x = gx_tensor_from(&ctx, 4, GX_SHAPE(1, 1, 2, 2), (const gx_real[]){ 1, 2, 3, 4 });
    x->requires_grad = 1;
    gx_tensor *y = gx_upsample_nearest2x(&ctx, x);
    CHECK(y->shape[2] == 4 && y->shape[3] == 4);
    const gx_real want[16] = { 1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4 };
    gx_test_allclose(T, "nearest x2", y->data, want, 16, 0, 0);
    /* Seed = output index: input (0,0) collects 0+1+4+5 = 10, (0,1) 2+3+6+7
     * = 18, (1,0) 8+9+12+13 = 42, (1,1) 50. */
    gx_real seed[16];
    for (int i = 0; i < 16; i++) seed[i] = (gx_real)i;
    gx_backward(&ctx, y, seed);
    const gx_real gw[4] = { 10, 18, 42, 50 };
    gx_test_allclose(T, "nearest x2 grad", x->grad, gw, 4, 0, 0);
    gx_ctx_free(&ctx);
}
