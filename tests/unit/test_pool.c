/*
 * test_pool.c — hand-checked cases for adaptive average pooling, bilinear
 * resize and nearest x2 upsampling. Expected values follow from the bin and
 * interpolation rules quoted in kernels/gx_pool.c, worked out in comments.
 */
#include "gx_test.h"

#include <string.h>

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

/* x for the max-pool comparison: small integers (ties in most windows),
 * +0 and -0 side by side, -inf, and NaNs with different payloads and
 * signs, so that a fold that took the first maximum or the last NaN in
 * another order than the scan would give other bits. */
static gx_tensor *maxpool_input(gx_ctx *ctx, gx_rng *r, int64_t H, int64_t W) {
    gx_tensor *x = gx_tensor_new(ctx, 4, GX_SHAPE(2, 3, H, W));
    for (int64_t i = 0; i < x->numel; i++) {
        const uint32_t u = gx_rng_u32(r) % 64;
        gx_real v = (gx_real)(u % 4);
        if (u < 8) v = u % 2 ? -0.0f : 0.0f;
        else if (u == 8) v = -INFINITY;
        else if (u == 9 || u == 10) {
            uint32_t bits = 0x7fc00000u | (gx_rng_u32(r) & 0xffffu) | (u == 10 ? 0x80000000u : 0);
            float f;
            memcpy(&f, &bits, sizeof f);
            v = (gx_real)f;
        }
        x->data[i] = v;
    }
    return x;
}

/* Inference (nothing taped) takes gx_max_pool2d's values-only path: row
 * folds over window columns, then over rows. It must give the taped scan's
 * bits exactly, in every window shape, at the frame's edges, and across
 * its 512-column chunks (W 1100 at stride 1). */
GX_TEST(pool_max_inference_values_match_taped_scan) {
    static const int cfg[][5] = {   /* k, s, pad, H, W */
        { 3, 2, 1, 32, 32 }, { 3, 2, 1, 7, 9 }, { 2, 2, 0, 8, 6 }, { 3, 1, 1, 5, 11 },
        { 4, 3, 2, 10, 13 }, { 2, 3, 1, 9, 8 }, { 1, 1, 0, 3, 4 }, { 3, 1, 1, 3, 1100 },
    };
    gx_rng r;
    gx_rng_init(&r, 7);
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        gx_ctx ctx;
        gx_ctx_init(&ctx, 1 << 20);
        gx_tensor *x = maxpool_input(&ctx, &r, cfg[c][3], cfg[c][4]);
        ctx.grad_enabled = 1;
        x->requires_grad = 1;
        gx_tensor *taped = gx_max_pool2d(&ctx, x, cfg[c][0], cfg[c][1], cfg[c][2]);
        CHECK_MSG(ctx.tape != NULL, "cfg %zu: the reference pass did not tape", c);
        ctx.grad_enabled = 0;
        gx_tensor *inf = gx_max_pool2d(&ctx, x, cfg[c][0], cfg[c][1], cfg[c][2]);
        CHECK(inf->numel == taped->numel);
        int64_t diff = 0, nans = 0;
        for (int64_t i = 0; i < inf->numel; i++) {
            diff += memcmp(&inf->data[i], &taped->data[i], sizeof(gx_real)) != 0;
            nans += inf->data[i] != inf->data[i];
        }
        CHECK_MSG(diff == 0, "cfg %zu (k %d s %d pad %d): %lld of %lld outputs differ in their bits", c,
                  cfg[c][0], cfg[c][1], cfg[c][2], (long long)diff, (long long)inf->numel);
        CHECK_MSG(c == 6 || nans > 0, "cfg %zu: no NaN reached the output", c);
        gx_ctx_free(&ctx);
    }
}
