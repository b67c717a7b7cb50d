/*
 * test_grad_upconv.c — finite-difference gradient checks (f64) for the
 * fused nearest x2 upsample + 3x3 conv (gx_upconv2x3): x, w and b, on odd
 * and non-square sizes, a single pixel (every tap reaches the padding), and
 * without bias; and gx_upconv2x3_leaky, which with grad on must be the
 * differentiable upconv + LeakyReLU pair.
 */
#include "gx_test.h"

static gx_tensor *upconv_fn(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    int bias = *(const int *)arg;
    return gx_upconv2x3(ctx, in[0], in[1], bias ? in[2] : NULL);
}

static gx_tensor *upconv_leaky_fn(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    int bias = *(const int *)arg;
    return gx_upconv2x3_leaky(ctx, in[0], in[1], bias ? in[2] : NULL, 0.2);
}

static void check_upconv_fn(gx_test_state *T, const char *label, gx_gc_fn fn,
                            int64_t B, int64_t Ci, int64_t H, int64_t W, int64_t Co, int bias) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 18);
    gx_rng rng;
    gx_rng_init(&rng, 33);
    gx_tensor *t[3] = {
        gx_test_leaf(&ctx, &rng, 4, GX_SHAPE(B, Ci, H, W), -1, 1),
        gx_test_leaf(&ctx, &rng, 4, GX_SHAPE(Co, Ci, 3, 3), -1, 1),
        gx_test_leaf(&ctx, &rng, 1, GX_SHAPE(Co), -1, 1),
    };
    CHECK(gx_gradcheck(T, label, fn, &bias, bias ? 3 : 2, t, GX_GC_DEFAULTS));
    gx_ctx_free(&ctx);
}

static void check_upconv(gx_test_state *T, const char *label, int64_t B, int64_t Ci, int64_t H,
                         int64_t W, int64_t Co, int bias) {
    check_upconv_fn(T, label, upconv_fn, B, Ci, H, W, Co, bias);
}

GX_TEST(grad_upconv2x3) {
    check_upconv(T, "upconv 3x4", 2, 3, 3, 4, 2, 1);
    check_upconv(T, "upconv 1x1", 1, 2, 1, 1, 3, 1);
    check_upconv(T, "upconv 5x2 no bias", 2, 2, 5, 2, 2, 0);
}

/* Finite differences cross LeakyReLU's kink only for a pre-activation
 * within eps (1e-6) of 0, which these seeded inputs do not produce. */
GX_TEST(grad_upconv2x3_leaky) {
    check_upconv_fn(T, "upconv+leaky 3x4", upconv_leaky_fn, 2, 3, 3, 4, 2, 1);
    check_upconv_fn(T, "upconv+leaky 2x3 no bias", upconv_leaky_fn, 1, 4, 2, 3, 3, 0);
}
