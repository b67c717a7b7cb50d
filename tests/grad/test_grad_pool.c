/*
 * test_grad_pool.c — finite-difference checks (f64) of adaptive average
 * pooling, bilinear resize and nearest x2, on odd and non-divisible sizes,
 * down- and up-sampling. All three are linear in x, so there are no kinks.
 */
#include "gx_test.h"

typedef struct { int64_t oh, ow; } pool_arg;

static gx_tensor *fn_adaptive(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const pool_arg *a = arg;
    return gx_adaptive_avg_pool2d(ctx, in[0], a->oh, a->ow);
}
static gx_tensor *fn_bilinear(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const pool_arg *a = arg;
    return gx_resize_bilinear(ctx, in[0], a->oh, a->ow);
}
static gx_tensor *fn_nearest(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    (void)arg;
    return gx_upsample_nearest2x(ctx, in[0]);
}

GX_TEST(grad_pool_adaptive_avg) {
    gx_ctx ctx; gx_ctx_init(&ctx, 1 << 16);
    gx_rng rng; gx_rng_init(&rng, 21);
    gx_tensor *x = gx_test_leaf(&ctx, &rng, 4, GX_SHAPE(2, 3, 7, 7), -1, 1);
    pool_arg a = { 3, 3 };
    CHECK(gx_gradcheck(T, "adaptive 7->3", fn_adaptive, &a, 1, &x, GX_GC_DEFAULTS));
    gx_tensor *y = gx_test_leaf(&ctx, &rng, 4, GX_SHAPE(1, 2, 5, 6), -1, 1);
    pool_arg b = { 8, 4 };                       /* 5->8 up, 6->4 down */
    CHECK(gx_gradcheck(T, "adaptive 5x6->8x4", fn_adaptive, &b, 1, &y, GX_GC_DEFAULTS));
    gx_ctx_free(&ctx);
}

GX_TEST(grad_pool_bilinear) {
    gx_ctx ctx; gx_ctx_init(&ctx, 1 << 16);
    gx_rng rng; gx_rng_init(&rng, 22);
    gx_tensor *x = gx_test_leaf(&ctx, &rng, 4, GX_SHAPE(2, 2, 3, 5), -1, 1);
    pool_arg up = { 7, 11 }, mixed = { 2, 9 };
    CHECK(gx_gradcheck(T, "bilinear 3x5->7x11", fn_bilinear, &up, 1, &x, GX_GC_DEFAULTS));
    CHECK(gx_gradcheck(T, "bilinear 3x5->2x9", fn_bilinear, &mixed, 1, &x, GX_GC_DEFAULTS));
    gx_tensor *y = gx_test_leaf(&ctx, &rng, 4, GX_SHAPE(1, 3, 9, 8), -1, 1);
    pool_arg down = { 4, 3 };
    CHECK(gx_gradcheck(T, "bilinear 9x8->4x3", fn_bilinear, &down, 1, &y, GX_GC_DEFAULTS));
    gx_ctx_free(&ctx);
}

GX_TEST(grad_pool_nearest2x) {
    gx_ctx ctx; gx_ctx_init(&ctx, 1 << 16);
    gx_rng rng; gx_rng_init(&rng, 23);
    gx_tensor *x = gx_test_leaf(&ctx, &rng, 4, GX_SHAPE(2, 3, 3, 5), -1, 1);
    CHECK(gx_gradcheck(T, "nearest2x [2,3,3,5]", fn_nearest, NULL, 1, &x, GX_GC_DEFAULTS));
    gx_tensor *y = gx_test_leaf(&ctx, &rng, 4, GX_SHAPE(1, 1, 1, 1), -1, 1);
    CHECK(gx_gradcheck(T, "nearest2x [1,1,1,1]", fn_nearest, NULL, 1, &y, GX_GC_DEFAULTS));
    gx_ctx_free(&ctx);
}

/* Max pooling is piecewise linear: the check holds while every window's
 * maximum leads the runner-up by far more than h = 1e-6, which random
 * uniform inputs give (overlapping windows, s < k, included). */
typedef struct { int k, s, p; } maxpool_arg;

static gx_tensor *fn_maxpool(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const maxpool_arg *a = arg;
    return gx_max_pool2d(ctx, in[0], a->k, a->s, a->p);
}

GX_TEST(grad_pool_max) {
    gx_ctx ctx; gx_ctx_init(&ctx, 1 << 16);
    gx_rng rng; gx_rng_init(&rng, 24);
    gx_tensor *x = gx_test_leaf(&ctx, &rng, 4, GX_SHAPE(2, 3, 7, 9), -1, 1);
    maxpool_arg resnet = { 3, 2, 1 }, plain = { 2, 2, 0 }, dense = { 3, 1, 1 };
    CHECK(gx_gradcheck(T, "maxpool k3 s2 p1 7x9", fn_maxpool, &resnet, 1, &x, GX_GC_DEFAULTS));
    CHECK(gx_gradcheck(T, "maxpool k2 s2 p0 7x9", fn_maxpool, &plain, 1, &x, GX_GC_DEFAULTS));
    CHECK(gx_gradcheck(T, "maxpool k3 s1 p1 7x9", fn_maxpool, &dense, 1, &x, GX_GC_DEFAULTS));
    gx_tensor *y = gx_test_leaf(&ctx, &rng, 4, GX_SHAPE(1, 2, 5, 4), -1, 1);
    maxpool_arg wide = { 4, 3, 2 };
    CHECK(gx_gradcheck(T, "maxpool k4 s3 p2 5x4", fn_maxpool, &wide, 1, &y, GX_GC_DEFAULTS));
    gx_ctx_free(&ctx);
}
