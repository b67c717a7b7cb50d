/*
 * test_grad_conv.c — finite-difference gradient checks (f64) for conv2d
 * (every path: shifted GEMM for stride 1 with and without padding, its
 * backward for a batch of one (per sample) and of several (the whole batch
 * in one GEMM per tap: outputs over 64 pixels), im2col GEMM for stride > 1
 * (per sample: one sample, or outputs over 64 pixels), the whole-batch
 * backward of small outputs (several samples, at most 64 output pixels:
 * most cases below), 1x1 pointwise, grouped, depthwise; odd sizes) and the
 * causal depthwise conv1d.
 */
#include "gx_test.h"

typedef struct { int s, p, g, bias; } conv_args;

static gx_tensor *conv2d_fn(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const conv_args *a = arg;
    return gx_conv2d(ctx, in[0], in[1], a->bias ? in[2] : NULL, a->s, a->p, a->g);
}

static void check_conv2d_on(gx_test_state *T, const char *label, int64_t B, int64_t Ci, int64_t H, int64_t W,
                            int64_t Co, int64_t k, conv_args a, int batch_invariant) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    gx_rng rng;
    gx_rng_init(&rng, 31);
    gx_tensor *t[3] = {
        gx_test_leaf(&ctx, &rng, 4, GX_SHAPE(B, Ci, H, W), -1, 1),
        gx_test_leaf(&ctx, &rng, 4, GX_SHAPE(Co, Ci / a.g, k, k), -1, 1),
        gx_test_leaf(&ctx, &rng, 1, GX_SHAPE(Co), -1, 1),
    };
    gx_gc_opts o = GX_GC_DEFAULTS;
    o.train = !batch_invariant;
    CHECK(gx_gradcheck(T, label, conv2d_fn, &a, a.bias ? 3 : 2, t, o));
    gx_ctx_free(&ctx);
}

static void check_conv2d(gx_test_state *T, const char *label, int64_t B, int64_t Ci, int64_t H, int64_t W,
                         int64_t Co, int64_t k, conv_args a) {
    check_conv2d_on(T, label, B, Ci, H, W, Co, k, a, 1);
}

/* A training step's ctx (batch_invariant 0): the forwards over the whole
 * batch (columns side by side up to 64 output pixels, the shifted GEMM over
 * all samples' planes above), against their backward. */
GX_TEST(grad_conv2d_training_forwards) {
    check_conv2d_on(T, "train 3x3 p1 4x5, 2 samples", 2, 3, 4, 5, 2, 3, (conv_args){ 1, 1, 1, 1 }, 0);
    check_conv2d_on(T, "train 3x3 s2 groups2, 3 samples", 3, 4, 7, 6, 4, 3, (conv_args){ 2, 1, 2, 0 }, 0);
    check_conv2d_on(T, "train 3x3 p1 9x10, 2 samples", 2, 2, 9, 10, 2, 3, (conv_args){ 1, 1, 1, 1 }, 0);
    check_conv2d_on(T, "train groups2 3x3 p0 9x9, 2 samples", 2, 4, 11, 11, 2, 3, (conv_args){ 1, 0, 2, 0 }, 0);
}

GX_TEST(grad_conv2d_general) {
    check_conv2d(T, "3x3 p1", 2, 3, 5, 4, 2, 3, (conv_args){ 1, 1, 1, 1 });
    check_conv2d(T, "4x4 s2 p1", 1, 2, 7, 9, 3, 4, (conv_args){ 2, 1, 1, 1 });
    check_conv2d(T, "7x7 s2 p3", 1, 2, 9, 7, 2, 7, (conv_args){ 2, 3, 1, 0 });
    check_conv2d(T, "3x3 s3 p0", 2, 1, 8, 7, 2, 3, (conv_args){ 3, 0, 1, 1 });
    check_conv2d(T, "3x3 s1 p0", 2, 3, 6, 5, 2, 3, (conv_args){ 1, 0, 1, 1 });
    check_conv2d(T, "5x5 s1 p1", 1, 2, 7, 8, 3, 5, (conv_args){ 1, 1, 1, 1 });
    check_conv2d(T, "5x5 s1 p2, 3 samples", 3, 2, 6, 7, 3, 5, (conv_args){ 1, 2, 1, 1 });
}

GX_TEST(grad_conv2d_groups_and_pointwise) {
    check_conv2d(T, "groups2 3x3", 2, 4, 5, 5, 6, 3, (conv_args){ 1, 1, 2, 1 });
    check_conv2d(T, "groups2 3x3, 3 samples", 3, 4, 4, 6, 4, 3, (conv_args){ 1, 1, 2, 0 });
    check_conv2d(T, "groups2 s2", 1, 4, 7, 6, 2, 3, (conv_args){ 2, 0, 2, 1 });
    check_conv2d(T, "1x1", 2, 3, 3, 5, 4, 1, (conv_args){ 1, 0, 1, 1 });
    check_conv2d(T, "1x1 groups3", 1, 3, 4, 3, 6, 1, (conv_args){ 1, 0, 3, 0 });
    check_conv2d(T, "1x1 s2", 1, 3, 5, 5, 2, 1, (conv_args){ 2, 0, 1, 1 });
    /* Outputs over 64 pixels in a batch: the shifted GEMM's whole-batch
     * backward (stride 1) and im2col's per-sample one (stride 2). */
    check_conv2d(T, "3x3 p1 9x10 out, 2 samples", 2, 2, 9, 10, 2, 3, (conv_args){ 1, 1, 1, 1 });
    check_conv2d(T, "groups2 3x3 p0 9x9 out, 2 samples", 2, 4, 11, 11, 2, 3, (conv_args){ 1, 0, 2, 0 });
    check_conv2d(T, "4x4 s2 p1 9x9 out, 2 samples", 2, 2, 18, 18, 2, 4, (conv_args){ 2, 1, 1, 1 });
}

GX_TEST(grad_conv2d_depthwise) {
    check_conv2d(T, "dw 3x3 p1", 2, 3, 5, 4, 3, 3, (conv_args){ 1, 1, 3, 1 });
    check_conv2d(T, "dw 3x3 s2 p1", 1, 4, 7, 9, 4, 3, (conv_args){ 2, 1, 4, 1 });
    check_conv2d(T, "dw 5x5 p2", 2, 2, 6, 5, 2, 5, (conv_args){ 1, 2, 2, 0 });
}

static gx_tensor *c1_fn(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    int bias = *(int *)arg;
    return gx_conv1d_causal_dw(ctx, in[0], in[1], bias ? in[2] : NULL);
}

static void check_c1(gx_test_state *T, int64_t B, int64_t L, int64_t E, int64_t K, int bias) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    gx_rng rng;
    gx_rng_init(&rng, 32);
    gx_tensor *t[3] = {
        gx_test_leaf(&ctx, &rng, 3, GX_SHAPE(B, L, E), -1, 1),
        gx_test_leaf(&ctx, &rng, 3, GX_SHAPE(E, 1, K), -1, 1),
        gx_test_leaf(&ctx, &rng, 1, GX_SHAPE(E), -1, 1),
    };
    CHECK(gx_gradcheck(T, "conv1d_causal_dw", c1_fn, &bias, bias ? 3 : 2, t, GX_GC_DEFAULTS));
    gx_ctx_free(&ctx);
}

GX_TEST(grad_conv1d_causal_dw) {
    check_c1(T, 2, 7, 5, 4, 1);
    check_c1(T, 1, 3, 67, 4, 1);   /* L < K, E spans two channel blocks */
    check_c1(T, 3, 5, 2, 1, 0);
}
