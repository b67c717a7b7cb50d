/*
 * test_conv.c — conv2d and the causal depthwise conv1d on hand-checked
 * cases, plus agreement between conv2d's code paths (shifted GEMM, 1x1
 * zero-copy, depthwise direct) on random data, every forward path (BLAS
 * and the packed-weight GEMM) against a direct loop, the fused
 * upsample + 3x3 conv against the unfused pair, and its LeakyReLU
 * epilogue against upconv + leaky_relu, and the packed weights a frozen
 * parameter keeps (gx_params_freeze) against packing per call.
 */
#include "gx_test.h"

#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

GX_TEST(conv2d_valid_2x2_ones) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    gx_tensor *x = gx_tensor_from(&ctx, 4, GX_SHAPE(1, 1, 3, 3), (gx_real[]){ 1, 2, 3, 4, 5, 6, 7, 8, 9 });
    gx_tensor *w = gx_tensor_from(&ctx, 4, GX_SHAPE(1, 1, 2, 2), (gx_real[]){ 1, 1, 1, 1 });
    gx_tensor *b = gx_tensor_from(&ctx, 1, GX_SHAPE(1), (gx_real[]){ 0.5 });
    gx_tensor *y = gx_conv2d(&ctx, x, w, b, 1, 0, 1);
    CHECK(y->shape[2] == 2 && y->shape[3] == 2);
    gx_test_allclose(T, "2x2 sums", y->data, (gx_real[]){ 12.5, 16.5, 24.5, 28.5 }, 4, 1e-6, 0);
    gx_ctx_free(&ctx);
}

GX_TEST(conv2d_padding_counts_neighbours) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    gx_real ones[9] = { 1, 1, 1, 1, 1, 1, 1, 1, 1 };
    gx_tensor *x = gx_tensor_from(&ctx, 4, GX_SHAPE(1, 1, 3, 3), ones);
    gx_tensor *w = gx_tensor_from(&ctx, 4, GX_SHAPE(1, 1, 3, 3), ones);
    /* A 3x3 box sum with zero padding counts each pixel's in-bounds neighbours. */
    gx_tensor *y = gx_conv2d(&ctx, x, w, NULL, 1, 1, 1);
    gx_test_allclose(T, "neighbour counts", y->data, (gx_real[]){ 4, 6, 4, 6, 9, 6, 4, 6, 4 }, 9, 1e-6, 0);
    gx_ctx_free(&ctx);
}

GX_TEST(conv2d_stride2_sums_blocks) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    gx_real v[16];
    for (int i = 0; i < 16; i++) v[i] = (gx_real)i;
    gx_tensor *x = gx_tensor_from(&ctx, 4, GX_SHAPE(1, 1, 4, 4), v);
    gx_tensor *w = gx_tensor_from(&ctx, 4, GX_SHAPE(1, 1, 2, 2), (gx_real[]){ 1, 1, 1, 1 });
    gx_tensor *y = gx_conv2d(&ctx, x, w, NULL, 2, 0, 1);
    gx_test_allclose(T, "2x2 blocks", y->data, (gx_real[]){ 10, 18, 42, 50 }, 4, 1e-6, 0);
    /* Stride 2, padding 1, 4x4 kernel (the encoder's downsampler): the
     * output is 2x2 and the top-left window covers x[0..2][0..2]. */
    gx_real w16[16];
    for (int i = 0; i < 16; i++) w16[i] = 1;
    gx_tensor *w4 = gx_tensor_from(&ctx, 4, GX_SHAPE(1, 1, 4, 4), w16);
    gx_tensor *y4 = gx_conv2d(&ctx, x, w4, NULL, 2, 1, 1);
    CHECK(y4->shape[2] == 2 && y4->shape[3] == 2);
    /* top-left: rows 0-2, cols 0-2 = 0+1+2+4+5+6+8+9+10 = 45 */
    CHECK_NEAR(y4->data[0], 45, 1e-5);
    /* bottom-right: rows 1-3, cols 1-3 = 5+6+7+9+10+11+13+14+15 = 90 */
    CHECK_NEAR(y4->data[3], 90, 1e-5);
    gx_ctx_free(&ctx);
}

GX_TEST(conv2d_grouped_pointwise_by_hand) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    /* Cin 2 -> Cout 4 with 2 groups, 1x1: out 0,1 see only channel 0,
     * out 2,3 only channel 1. */
    gx_tensor *x = gx_tensor_from(&ctx, 4, GX_SHAPE(1, 2, 1, 2), (gx_real[]){ 1, 2, 10, 20 });
    gx_tensor *w = gx_tensor_from(&ctx, 4, GX_SHAPE(4, 1, 1, 1), (gx_real[]){ 1, -1, 2, 0.5 });
    gx_tensor *b = gx_tensor_from(&ctx, 1, GX_SHAPE(4), (gx_real[]){ 0, 1, 0, 0 });
    gx_tensor *y = gx_conv2d(&ctx, x, w, b, 1, 0, 2);
    gx_test_allclose(T, "grouped 1x1", y->data, (gx_real[]){ 1, 2, 0, -1, 20, 40, 5, 10 }, 8, 1e-6, 0);
    gx_ctx_free(&ctx);
}

GX_TEST(conv2d_depthwise_identity_kernel_plus_bias) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    gx_rng rng;
    gx_rng_init(&rng, 3);
    gx_tensor *x = gx_test_const(&ctx, &rng, 4, GX_SHAPE(2, 3, 5, 4), -1, 1);
    gx_real wv[27] = { 0 };
    for (int c = 0; c < 3; c++) wv[c * 9 + 4] = (gx_real)(c + 1);   /* centre tap = c+1 */
    gx_tensor *w = gx_tensor_from(&ctx, 4, GX_SHAPE(3, 1, 3, 3), wv);
    gx_tensor *b = gx_tensor_from(&ctx, 1, GX_SHAPE(3), (gx_real[]){ 1, 2, 3 });
    gx_tensor *y = gx_conv2d(&ctx, x, w, b, 1, 1, 3);
    int bad = 0;
    for (int64_t i = 0; i < y->numel; i++) {
        int64_t c = (i / 20) % 3;
        if (fabs((double)y->data[i] - ((c + 1) * (double)x->data[i] + (c + 1))) > 1e-5) bad++;
    }
    CHECK(bad == 0);
    gx_ctx_free(&ctx);
}

/* Depthwise via the direct path vs per-channel groups=1 convs (GEMM path),
 * forward and backward, for a stride/padding combination. */
static void dw_vs_gemm(gx_test_state *T, int k, int s, int p) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    ctx.grad_enabled = 1;
    gx_rng rng;
    gx_rng_init(&rng, 11);
    int64_t B = 2, C = 3, H = 7, W = 9;
    gx_tensor *x = gx_test_leaf(&ctx, &rng, 4, GX_SHAPE(B, C, H, W), -1, 1);
    gx_tensor *w = gx_test_leaf(&ctx, &rng, 4, GX_SHAPE(C, 1, k, k), -1, 1);
    gx_tensor *y = gx_conv2d(&ctx, x, w, NULL, s, p, (int)C);
    gx_real *seed = gx_ctx_alloc(&ctx, (size_t)y->numel * sizeof(gx_real));
    gx_rng_fill_uniform(&rng, seed, y->numel, -1, 1);
    gx_backward(&ctx, y, seed);
    int64_t Ho = y->shape[2], Wo = y->shape[3];
    for (int64_t c = 0; c < C; c++) {
        gx_ctx c2;
        gx_ctx_init(&c2, 1 << 20);
        c2.grad_enabled = 1;
        gx_tensor *xc = gx_tensor_new(&c2, 4, GX_SHAPE(B, 1, H, W));
        gx_tensor *yc_seed = gx_tensor_new(&c2, 4, GX_SHAPE(B, 1, Ho, Wo));
        for (int64_t n = 0; n < B; n++) {
            memcpy(xc->data + n * H * W, x->data + (n * C + c) * H * W, (size_t)(H * W) * sizeof(gx_real));
            memcpy(yc_seed->data + n * Ho * Wo, seed + (n * C + c) * Ho * Wo, (size_t)(Ho * Wo) * sizeof(gx_real));
        }
        xc->requires_grad = 1;
        gx_tensor *wc = gx_tensor_from(&c2, 4, GX_SHAPE(1, 1, k, k), w->data + c * k * k);
        wc->requires_grad = 1;
        gx_tensor *yc = gx_conv2d(&c2, xc, wc, NULL, s, p, 1);
        gx_backward(&c2, yc, yc_seed->data);
        for (int64_t n = 0; n < B; n++) {
            gx_test_allclose(T, "dw y", y->data + (n * C + c) * Ho * Wo, yc->data + n * Ho * Wo, Ho * Wo, 1e-5, 1e-5);
            gx_test_allclose(T, "dw dx", x->grad + (n * C + c) * H * W, xc->grad + n * H * W, H * W, 1e-5, 1e-5);
        }
        gx_test_allclose(T, "dw dw", w->grad + c * k * k, wc->grad, k * k, 1e-5, 1e-5);
        gx_ctx_free(&c2);
    }
    gx_ctx_free(&ctx);
}

GX_TEST(conv2d_depthwise_matches_gemm_path) {
    dw_vs_gemm(T, 3, 1, 1);
    dw_vs_gemm(T, 3, 2, 1);
    dw_vs_gemm(T, 4, 2, 1);
    dw_vs_gemm(T, 5, 1, 0);
}

/* The 1x1 zero-copy path vs the same conv on a padded copy: padding 1 then
 * cropping the border of the output gives the unpadded result. */
GX_TEST(conv2d_pointwise_matches_padded_path) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    gx_rng rng;
    gx_rng_init(&rng, 5);
    int64_t B = 2, Ci = 5, Co = 3, H = 4, W = 3;
    gx_tensor *x = gx_test_const(&ctx, &rng, 4, GX_SHAPE(B, Ci, H, W), -1, 1);
    gx_tensor *w = gx_test_const(&ctx, &rng, 4, GX_SHAPE(Co, Ci, 1, 1), -1, 1);
    gx_tensor *b = gx_test_const(&ctx, &rng, 1, GX_SHAPE(Co), -1, 1);
    gx_tensor *y = gx_conv2d(&ctx, x, w, b, 1, 0, 1);
    gx_tensor *yp = gx_conv2d(&ctx, x, w, b, 1, 1, 1);   /* [B, Co, H+2, W+2] */
    int bad = 0;
    for (int64_t n = 0; n < B * Co; n++)
        for (int64_t i = 0; i < H; i++)
            for (int64_t j = 0; j < W; j++)
                bad += fabs((double)y->data[(n * H + i) * W + j] -
                            (double)yp->data[(n * (H + 2) + i + 1) * (W + 2) + j + 1]) > 1e-5;
    CHECK(bad == 0);
    gx_ctx_free(&ctx);
}

GX_TEST(conv1d_causal_dw_by_hand) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    ctx.grad_enabled = 1;
    /* x [1, 4, 2]: channel 0 = 1,2,3,4; channel 1 = 10,20,30,40. */
    gx_tensor *x = gx_tensor_from(&ctx, 3, GX_SHAPE(1, 4, 2), (gx_real[]){ 1, 10, 2, 20, 3, 30, 4, 40 });
    x->requires_grad = 1;
    /* K = 2: channel 0 sums x[t-1] + x[t]; channel 1 takes 2*x[t-1]. */
    gx_tensor *w = gx_tensor_from(&ctx, 3, GX_SHAPE(2, 1, 2), (gx_real[]){ 1, 1, 2, 0 });
    w->requires_grad = 1;
    gx_tensor *b = gx_tensor_from(&ctx, 1, GX_SHAPE(2), (gx_real[]){ 0, 0.5 });
    gx_tensor *y = gx_conv1d_causal_dw(&ctx, x, w, b);
    gx_test_allclose(T, "causal y", y->data, (gx_real[]){ 1, 0.5, 3, 20.5, 5, 40.5, 7, 60.5 }, 8, 1e-6, 0);
    /* dY = ones: dx[s] = sum of taps that reach a future output; the last
     * step feeds only tap K-1. dw[e,k] = sum_t x[t-1+k]. */
    gx_backward(&ctx, y, NULL);
    gx_test_allclose(T, "causal dx", x->grad, (gx_real[]){ 2, 2, 2, 2, 2, 2, 1, 0 }, 8, 1e-6, 0);
    gx_test_allclose(T, "causal dw", w->grad, (gx_real[]){ 6, 10, 60, 100 }, 4, 1e-6, 0);
    gx_ctx_free(&ctx);
}

/* ------------------------------------------- fused upsample + 3x3 conv */

/* gx_upconv2x3 vs gx_upsample_nearest2x then gx_conv2d(pad 1): output and
 * all three gradients under the same random output seed. Tolerances are
 * float summation order (the fused op sums up to 4 weights first). */
static void upconv_vs_pair(gx_test_state *T, int64_t B, int64_t Ci, int64_t Co, int64_t H, int64_t W,
                           int bias) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 22);
    ctx.grad_enabled = 1;
    gx_rng rng;
    gx_rng_init(&rng, 61);
    gx_tensor *x = gx_test_leaf(&ctx, &rng, 4, GX_SHAPE(B, Ci, H, W), -1, 1);
    gx_tensor *w = gx_test_leaf(&ctx, &rng, 4, GX_SHAPE(Co, Ci, 3, 3), -1, 1);
    gx_tensor *b = bias ? gx_test_leaf(&ctx, &rng, 1, GX_SHAPE(Co), -1, 1) : NULL;
    gx_tensor *y = gx_upconv2x3(&ctx, x, w, b);
    CHECK(y->ndim == 4 && y->shape[0] == B && y->shape[1] == Co && y->shape[2] == 2 * H && y->shape[3] == 2 * W);
    gx_real *seed = gx_ctx_alloc(&ctx, (size_t)y->numel * sizeof(gx_real));
    gx_rng_fill_uniform(&rng, seed, y->numel, -1, 1);
    gx_backward(&ctx, y, seed);
    /* The pair in its own context (one backward walks the whole tape). */
    gx_ctx c2;
    gx_ctx_init(&c2, 1 << 22);
    c2.grad_enabled = 1;
    gx_tensor *x2 = gx_tensor_from(&c2, 4, x->shape, x->data), *w2 = gx_tensor_from(&c2, 4, w->shape, w->data);
    gx_tensor *b2 = b ? gx_tensor_from(&c2, 1, b->shape, b->data) : NULL;
    x2->requires_grad = w2->requires_grad = 1;
    if (b2) b2->requires_grad = 1;
    gx_tensor *y2 = gx_conv2d(&c2, gx_upsample_nearest2x(&c2, x2), w2, b2, 1, 1, 1);
    gx_backward(&c2, y2, seed);
    /* |y| ~ sqrt(9 Ci)/3; float order differences stay near 1e-6 of that. */
    double tol = 2e-6 * (double)(9 * Ci);
    char lab[96];
    snprintf(lab, sizeof lab, "upconv y B%lld Ci%lld Co%lld %lldx%lld", (long long)B, (long long)Ci,
             (long long)Co, (long long)H, (long long)W);
    gx_test_allclose(T, lab, y->data, y2->data, y->numel, tol, 1e-5);
    gx_test_allclose(T, "upconv dx", x->grad, x2->grad, x->numel, 2e-6 * (double)(36 * Co), 1e-5);
    gx_test_allclose(T, "upconv dw", w->grad, w2->grad, w->numel, 2e-6 * (double)(4 * B * H * W), 1e-5);
    if (b) gx_test_allclose(T, "upconv db", b->grad, b2->grad, Co, 2e-6 * (double)(4 * B * H * W), 1e-5);
    gx_ctx_free(&c2);
    gx_ctx_free(&ctx);
}

GX_TEST(upconv2x3_equals_upsample_then_conv) {
    upconv_vs_pair(T, 2, 3, 4, 5, 4, 1);     /* odd, non-square */
    upconv_vs_pair(T, 1, 1, 1, 1, 1, 1);     /* a single pixel: every tap reaches padding */
    upconv_vs_pair(T, 3, 8, 5, 2, 7, 0);     /* no bias */
    upconv_vs_pair(T, 2, 32, 16, 8, 8, 1);   /* decoder-like widths */
}

/* ------------------------------- the fused op with a LeakyReLU epilogue */

/* Bitwise equality of two tensors' values (same shape). */
static int same_bits(const gx_tensor *a, const gx_tensor *b) {
    return a->numel == b->numel && memcmp(a->data, b->data, (size_t)a->numel * sizeof(gx_real)) == 0;
}

/* Grad off: gx_upconv2x3_leaky applies the activation in its scatter and
 * must give the bits of gx_leaky_relu(gx_upconv2x3(...)) (the epilogue
 * computes LeakyReLU as gx_leaky_relu does); inputs of at most 16 pixels
 * may take the per-parity path (AVX2), equal up to float summation order.
 * Both signs must occur, or the comparison would not see an epilogue that
 * did nothing. */
static void upconv_leaky_off(gx_test_state *T, int64_t B, int64_t Ci, int64_t Co, int64_t H, int64_t W, int bias,
                             double slope) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 22);
    gx_rng rng;
    gx_rng_init(&rng, 67);
    gx_tensor *x = gx_test_const(&ctx, &rng, 4, GX_SHAPE(B, Ci, H, W), -1, 1);
    gx_tensor *w = gx_test_const(&ctx, &rng, 4, GX_SHAPE(Co, Ci, 3, 3), -1, 1);
    gx_tensor *b = bias ? gx_test_const(&ctx, &rng, 1, GX_SHAPE(Co), -1, 1) : NULL;
    gx_tensor *pre = gx_upconv2x3(&ctx, x, w, b);
    gx_tensor *want = gx_leaky_relu(&ctx, pre, slope);
    gx_tensor *y = gx_upconv2x3_leaky(&ctx, x, w, b, slope);
    int64_t neg = 0, pos = 0;
    for (int64_t i = 0; i < pre->numel; i++) { neg += pre->data[i] < 0; pos += pre->data[i] > 0; }
    CHECK(neg > 0 && pos > 0);
    CHECK(y->ndim == 4 && y->shape[0] == B && y->shape[1] == Co && y->shape[2] == 2 * H && y->shape[3] == 2 * W);
    char lab[96];
    snprintf(lab, sizeof lab, "upconv_leaky B%lld Ci%lld Co%lld %lldx%lld bias %d slope %g", (long long)B,
             (long long)Ci, (long long)Co, (long long)H, (long long)W, bias, slope);
    if (H * W > 16)
        CHECK_MSG(same_bits(y, want), "%s: not the pair's bits", lab);
    else
        gx_test_allclose(T, lab, y->data, want->data, y->numel, 2e-6 * (double)(9 * Ci), 1e-5);
    CHECK(ctx.tape == NULL);
    /* Per-sample: the last sample alone gives its bits in the batch. */
    gx_tensor *x1 = gx_slice(&ctx, x, 0, B - 1, B);
    gx_tensor *y1 = gx_upconv2x3_leaky(&ctx, x1, w, b, slope);
    int64_t per = y->numel / B;
    CHECK(y1->numel == per &&
          memcmp(y1->data, y->data + (B - 1) * per, (size_t)per * sizeof(gx_real)) == 0);
    gx_ctx_free(&ctx);
}

GX_TEST(upconv2x3_leaky_equals_upconv_then_leaky_relu) {
    upconv_leaky_off(T, 2, 3, 4, 5, 4, 1, 0.2);    /* odd, non-square */
    upconv_leaky_off(T, 3, 8, 5, 2, 7, 0, 0.2);    /* no bias */
    upconv_leaky_off(T, 2, 32, 16, 8, 8, 1, 0.01); /* decoder-like widths, another slope */
    upconv_leaky_off(T, 1, 4, 3, 1, 1, 1, 0.2);    /* one input pixel */
    upconv_leaky_off(T, 3, 64, 13, 4, 4, 1, 0.2);  /* the decoder's first layer's 4x4, row tail 13 = 2*6+1 */
    upconv_leaky_off(T, 2, 5, 7, 3, 5, 0, 0.2);    /* 15 pixels: a column tail */
}

/* Grad on with inputs that require grad: the op is the unfused pair on
 * the tape (leaky_relu over upconv2x3), with the pair's output and
 * gradients, bit for bit. */
GX_TEST(upconv2x3_leaky_taped_is_the_pair) {
    gx_ctx ctx, c2;
    gx_ctx_init(&ctx, 1 << 22);
    gx_ctx_init(&c2, 1 << 22);
    ctx.grad_enabled = c2.grad_enabled = 1;
    gx_rng rng;
    gx_rng_init(&rng, 73);
    gx_tensor *x = gx_test_leaf(&ctx, &rng, 4, GX_SHAPE(2, 6, 3, 5), -1, 1);
    gx_tensor *w = gx_test_leaf(&ctx, &rng, 4, GX_SHAPE(7, 6, 3, 3), -1, 1);
    gx_tensor *b = gx_test_leaf(&ctx, &rng, 1, GX_SHAPE(7), -1, 1);
    gx_tensor *y = gx_upconv2x3_leaky(&ctx, x, w, b, 0.2);
    CHECK(y->requires_grad);
    CHECK(ctx.tape && strcmp(ctx.tape->op, "leaky_relu") == 0 && ctx.tape->prev &&
          strcmp(ctx.tape->prev->op, "upconv2x3") == 0);
    gx_real *seed = gx_ctx_alloc(&ctx, (size_t)y->numel * sizeof(gx_real));
    gx_rng_fill_uniform(&rng, seed, y->numel, -1, 1);
    gx_backward(&ctx, y, seed);
    gx_tensor *x2 = gx_tensor_from(&c2, 4, x->shape, x->data), *w2 = gx_tensor_from(&c2, 4, w->shape, w->data);
    gx_tensor *b2 = gx_tensor_from(&c2, 1, b->shape, b->data);
    x2->requires_grad = w2->requires_grad = b2->requires_grad = 1;
    gx_tensor *y2 = gx_leaky_relu(&c2, gx_upconv2x3(&c2, x2, w2, b2), 0.2);
    gx_backward(&c2, y2, seed);
    CHECK(same_bits(y, y2));
    CHECK(memcmp(x->grad, x2->grad, (size_t)x->numel * sizeof(gx_real)) == 0);
    CHECK(memcmp(w->grad, w2->grad, (size_t)w->numel * sizeof(gx_real)) == 0);
    CHECK(memcmp(b->grad, b2->grad, (size_t)b->numel * sizeof(gx_real)) == 0);
    gx_ctx_free(&c2);
    gx_ctx_free(&ctx);
}

/* Hand-built: one input pixel of value 1, a kernel whose taps are
 * distinct powers of two, so each output pixel's value names exactly the
 * taps that reached it. Output (Y, X) of upsample+conv sums w[r][c] over
 * the taps with (Y + r - 1, X + c - 1) inside the 2x2 block of the pixel. */
GX_TEST(upconv2x3_single_pixel_by_hand) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    gx_real wv[9];
    for (int k = 0; k < 9; k++) wv[k] = (gx_real)(1 << k);
    gx_tensor *x = gx_tensor_from(&ctx, 4, GX_SHAPE(1, 1, 1, 1), (gx_real[]){ 1 });
    gx_tensor *w = gx_tensor_from(&ctx, 4, GX_SHAPE(1, 1, 3, 3), wv);
    gx_tensor *y = gx_upconv2x3(&ctx, x, w, NULL);
    CHECK(y->shape[2] == 2 && y->shape[3] == 2);
    /* (0,0): taps r,c in {1,2}: 16+32+128+256 = 432; (0,1): r in {1,2}, c in {0,1}:
     * 8+16+64+128 = 216; (1,0): r in {0,1}, c in {1,2}: 2+4+16+32 = 54;
     * (1,1): r,c in {0,1}: 1+2+8+16 = 27. */
    gx_test_allclose(T, "single pixel", y->data, (gx_real[]){ 432, 216, 54, 27 }, 4, 0, 0);
    gx_ctx_free(&ctx);
}

/* ------------------------------------------ conv2d vs a direct loop */

/* y[n,co,oh,ow] = b[co] + sum over the group's ci and the taps, in double. */
static void conv_naive(const gx_real *x, const gx_real *w, const gx_real *b, int64_t B, int64_t Ci, int64_t H,
                       int64_t W, int64_t Co, int64_t k, int s, int p, int g, double *y, int64_t Ho, int64_t Wo) {
    int64_t cig = Ci / g, cog = Co / g;
    for (int64_t n = 0; n < B; n++)
        for (int64_t co = 0; co < Co; co++)
            for (int64_t oh = 0; oh < Ho; oh++)
                for (int64_t ow = 0; ow < Wo; ow++) {
                    double acc = b ? (double)b[co] : 0;
                    for (int64_t c = 0; c < cig; c++)
                        for (int64_t i = 0; i < k; i++)
                            for (int64_t j = 0; j < k; j++) {
                                int64_t ih = oh * s - p + i, iw = ow * s - p + j;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                acc += (double)w[((co * cig) + c) * k * k + i * k + j] *
                                       (double)x[((n * Ci + (co / cog) * cig + c) * H + ih) * W + iw];
                            }
                    y[((n * Co + co) * Ho + oh) * Wo + ow] = acc;
                }
}

typedef struct { int64_t B, Ci, H, W, Co, k; int s, p, g, nobias; } cv_case;

/* Each case's gx_conv2d against conv_naive within 1e-5, on a ctx with the
 * given batch invariance (0: a training step's, where whole-batch forwards
 * may run). */
static void conv_cases_match_direct_loop(gx_test_state *T, const cv_case *cs, size_t n, int batch_invariant) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 22);
    ctx.batch_invariant = batch_invariant;
    gx_rng rng;
    gx_rng_init(&rng, 71);
    for (size_t c = 0; c < n; c++) {
        gx_tensor *x = gx_test_const(&ctx, &rng, 4, GX_SHAPE(cs[c].B, cs[c].Ci, cs[c].H, cs[c].W), -1, 1);
        gx_tensor *w = gx_test_const(&ctx, &rng, 4, GX_SHAPE(cs[c].Co, cs[c].Ci / cs[c].g, cs[c].k, cs[c].k), -1, 1);
        gx_tensor *b = gx_test_const(&ctx, &rng, 1, GX_SHAPE(cs[c].Co), -1, 1);
        if (cs[c].nobias) b = NULL;
        gx_tensor *y = gx_conv2d(&ctx, x, w, b, cs[c].s, cs[c].p, cs[c].g);
        int64_t Ho = y->shape[2], Wo = y->shape[3];
        double *want = malloc((size_t)y->numel * sizeof *want);
        gx_real *wr = gx_ctx_alloc(&ctx, (size_t)y->numel * sizeof(gx_real));
        CHECK(want != NULL);
        if (!want) break;
        conv_naive(x->data, w->data, b ? b->data : NULL, cs[c].B, cs[c].Ci, cs[c].H, cs[c].W, cs[c].Co, cs[c].k,
                   cs[c].s, cs[c].p, cs[c].g, want, Ho, Wo);
        for (int64_t i = 0; i < y->numel; i++) wr[i] = (gx_real)want[i];
        char lab[64];
        snprintf(lab, sizeof lab, "conv2d case %zu (batch invariant %d)", c, batch_invariant);
        gx_test_allclose(T, lab, y->data, wr, y->numel, 1e-5, 1e-5);
        free(want);
        gx_ctx_reset(&ctx);
    }
    gx_ctx_free(&ctx);
}

/* Shapes chosen to take every forward path: few output channels (the
 * packed-weight GEMM, with a row tail: 7 = 6 + 1, and grouped), small
 * outputs (at most 32 pixels: the packed-weight GEMM with the samples side
 * by side, in units of 32 columns and a rest, stride 1 and 2, with and
 * without bias), stride-1 outputs of up to 256 pixels (the packed-weight
 * GEMM over output rows, runs of 8 or 16 columns), and the BLAS paths;
 * widths that leave column tails of 1..15. */
static const cv_case cv_paths[] = {
    { 2, 5, 9, 13, 3, 3, 1, 1, 1, 0 },   /* Cout 3: packed-weight, shifted */
    { 3, 4, 7, 6, 7, 3, 1, 1, 1, 0 },    /* Cout 7: two row panels */
    { 2, 6, 5, 17, 8, 3, 1, 0, 2, 0 },   /* grouped, no padding */
    { 2, 9, 8, 8, 20, 4, 2, 1, 1, 0 },   /* 4x4 output at stride 2: one unit */
    { 2, 3, 11, 9, 24, 3, 2, 1, 1, 0 },  /* 6x5 output (30): a unit and a rest of 28 */
    { 5, 6, 4, 4, 9, 3, 1, 1, 1, 0 },    /* 4x4 at stride 1: 80 columns, 2 units + 16 */
    { 7, 8, 2, 2, 14, 3, 1, 1, 2, 1 },   /* 2x2, grouped, no bias: a rest of 28 */
    { 3, 5, 3, 3, 6, 3, 1, 0, 1, 1 },    /* 1x1 output: 3 columns */
    { 1, 6, 17, 17, 20, 3, 1, 1, 1, 0 }, /* 17x17 (over GX_SK_SHIFT_HW): shifted BLAS */
    { 2, 6, 12, 12, 20, 3, 1, 1, 1, 0 }, /* 12x12, Cout 20: packed-weight, shifted */
    { 2, 16, 16, 16, 24, 3, 1, 1, 1, 1 },/* ResNet-18's layer1 shape (16x16): packed-weight, shifted */
    { 2, 4, 20, 20, 18, 4, 2, 1, 1, 0 }, /* 10x10 output: im2col BLAS */
    { 2, 3, 23, 17, 8, 7, 2, 3, 1, 0 },  /* a 7x7 stride-2 stem, 12x9: im2col, packed-weight */
    { 2, 4, 31, 26, 20, 3, 3, 0, 1, 1 }, /* stride 3, no padding, 10x9: im2col BLAS */
};

GX_TEST(conv2d_forward_paths_match_direct_loop) {
    conv_cases_match_direct_loop(T, cv_paths, sizeof cv_paths / sizeof *cv_paths, 1);
}

/* A training step's ctx (batch_invariant 0): with 16 or more output
 * channels per group, several samples and outputs of at most 64 pixels (any
 * stride) the forward runs on im2col columns of the whole batch; larger
 * stride-1 outputs as the shifted GEMM over all samples' padded planes.
 * With grouped convs, bias or none, padding or none; then the shapes that
 * keep their per-sample or packed-weight paths (one sample, few channels,
 * a large strided output). */
static const cv_case cv_train[] = {
    { 3, 5, 8, 8, 16, 3, 1, 1, 1, 0 },    /* 8x8 (64 px), stride 1: columns side by side */
    { 2, 6, 14, 12, 32, 3, 2, 1, 2, 1 },  /* 7x6 (42 px), stride 2, grouped, no bias */
    { 4, 3, 9, 9, 17, 3, 1, 0, 1, 0 },    /* 7x7 (49 px), no padding */
    { 5, 6, 4, 4, 20, 3, 1, 1, 1, 0 },    /* 4x4 (16 px): not the packed-weight GEMM here */
    { 3, 8, 4, 4, 32, 3, 2, 1, 2, 1 },    /* 2x2 at stride 2, grouped, no bias */
    { 3, 5, 11, 10, 16, 3, 1, 1, 1, 0 },  /* 11x10: shifted GEMM over the batch */
    { 2, 8, 12, 9, 32, 3, 1, 1, 2, 1 },   /* the same, grouped, no bias */
    { 2, 4, 10, 13, 18, 3, 1, 0, 1, 0 },  /* no padding: 8x11 */
    { 3, 4, 9, 9, 20, 1, 1, 0, 1, 0 },    /* 1x1 on 81 px */
    { 1, 6, 12, 12, 20, 3, 1, 1, 1, 0 },  /* one sample: per-sample path */
    { 3, 5, 9, 13, 3, 3, 1, 1, 1, 0 },    /* Cout 3: packed-weight */
    { 2, 4, 20, 20, 18, 4, 2, 1, 1, 0 },  /* 10x10 at stride 2: im2col per sample */
};

GX_TEST(conv2d_training_forwards_match_direct_loop) {
    conv_cases_match_direct_loop(T, cv_train, sizeof cv_train / sizeof *cv_train, 0);
}

/* ------------------------- the packed-weight GEMM's AVX-512 and AVX2 blocks */

/* On an AVX-512 CPU the packed-weight GEMM runs 6x32 blocks; each output
 * element's FMA chain is the 6x16 AVX2 block's, so every forward path
 * that uses it with samples of 32 columns or more (gx_sk_run keeps the
 * AVX2 block for narrower ones: cv_paths' shifted, im2col and side-by-side
 * cases, and the wide shapes below, whose column tails pair two samples
 * (<= 16) or not) gives the same bits with
 * ctx->sk_avx2_only set and not. Elsewhere: a visible skip. */
GX_TEST(conv2d_avx512_block_same_bits_as_avx2) {
#if !defined(GX_F64) && defined(__x86_64__) && defined(__GNUC__)
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
        printf("%s: skipped: no AVX-512 on this CPU (the AVX2 block is the one in use)\n", T->name);
        return;
    }
#else
    printf("%s: skipped: not an f32 x86-64 build\n", T->name);
    return;
#endif
    static const cv_case wide[] = {
        { 3, 4, 20, 20, 5, 3, 1, 1, 1, 0 },  /* Cout 5, shifted, 20x22 columns */
        { 3, 4, 17, 17, 5, 3, 2, 1, 1, 0 },  /* Cout 5 at stride 2: 81 columns, tail 17 */
        { 4, 4, 11, 11, 5, 3, 2, 1, 1, 1 },  /* 36 columns: tails of 4 paired */
        { 33, 8, 2, 2, 40, 3, 1, 1, 1, 0 },  /* 2x2 side by side: 132 columns */
    };
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 22);
    gx_rng rng;
    gx_rng_init(&rng, 97);
    const size_t np = sizeof cv_paths / sizeof *cv_paths, nw = sizeof wide / sizeof *wide;
    for (size_t c = 0; c < np + nw; c++) {
        const cv_case *k = c < np ? &cv_paths[c] : &wide[c - np];
        gx_tensor *x = gx_test_const(&ctx, &rng, 4, GX_SHAPE(k->B, k->Ci, k->H, k->W), -1, 1);
        gx_tensor *w = gx_test_const(&ctx, &rng, 4, GX_SHAPE(k->Co, k->Ci / k->g, k->k, k->k), -1, 1);
        gx_tensor *b = k->nobias ? NULL : gx_test_const(&ctx, &rng, 1, GX_SHAPE(k->Co), -1, 1);
        ctx.sk_avx2_only = 1;
        gx_tensor *y2 = gx_conv2d(&ctx, x, w, b, k->s, k->p, k->g);
        ctx.sk_avx2_only = 0;
        gx_tensor *y5 = gx_conv2d(&ctx, x, w, b, k->s, k->p, k->g);
        CHECK_MSG(same_bits(y2, y5), "conv case %zu: the AVX-512 block gives other bits", c);
        gx_ctx_reset(&ctx);
    }
    gx_ctx_free(&ctx);
}

/* ------------------------------------ frozen weights: packed once, same bits */

typedef struct { int64_t B, Ci, H, Co, k; int s, p, g; } fz_case;

/* 1 where the packed-weight GEMM runs (and so keeps caches): f32 on a CPU
 * with AVX2 and FMA. */
static int fz_packs(void) {
#if !defined(GX_F64) && defined(__x86_64__) && defined(__GNUC__)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

/* conv2d of x with weight w (frozen or not). */
static gx_tensor *fz_conv(gx_ctx *ctx, gx_tensor *x, gx_tensor *w, gx_tensor *b, const fz_case *c) {
    return gx_conv2d(ctx, x, w, b, c->s, c->p, c->g);
}

/* The packed-weight paths (shifted at stride 1, small outputs at both
 * strides, im2col at stride 2, grouped) and the shifted BLAS path (its
 * tap-major copy): a frozen weight's first call makes its cache, later
 * calls read it; every call's bits equal those of the same weight not
 * frozen (its copy made per call). The same frozen tensor
 * read by a conv of another geometry packs per call (its cache is for the
 * first) and is still right. gx_params_free frees the caches (ASan's leak
 * check in make test-asan). */
GX_TEST(conv2d_frozen_weights_same_bits) {
    static const fz_case cs[] = {
        { 3, 6, 9, 3, 3, 1, 1, 1 },     /* Cout 3: shifted, 9x9 output */
        { 5, 16, 4, 24, 3, 1, 1, 1 },   /* 4x4 output: small, stride 1 */
        { 4, 8, 8, 20, 4, 2, 1, 2 },    /* 4x4 at stride 2, grouped: small */
        { 2, 3, 11, 7, 3, 2, 1, 1 },    /* Cout 7 at stride 2, 6x6: im2col */
        { 2, 8, 17, 16, 3, 1, 1, 1 },   /* Cout 16, 17x17: the shifted BLAS path's tap-major copy */
    };
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 22);
    gx_rng rng;
    gx_rng_init(&rng, 83);
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        gx_params fp, pp;
        gx_params_init(&fp);
        gx_params_init(&pp);
        const int64_t wshape[4] = { cs[c].Co, cs[c].Ci / cs[c].g, cs[c].k, cs[c].k };
        gx_tensor *wf = gx_params_add(&fp, "w", 4, wshape, 0), *wp = gx_params_add(&pp, "w", 4, wshape, 0);
        gx_rng_fill_uniform(&rng, wf->data, wf->numel, -1, 1);
        memcpy(wp->data, wf->data, (size_t)wf->numel * sizeof(gx_real));
        gx_params_drop_grads(&fp);
        gx_params_drop_grads(&pp);
        gx_params_freeze(&fp);
        gx_tensor *b = gx_test_const(&ctx, &rng, 1, GX_SHAPE(cs[c].Co), -1, 1);
        gx_tensor *x = gx_test_const(&ctx, &rng, 4, GX_SHAPE(cs[c].B, cs[c].Ci, cs[c].H, cs[c].H), -1, 1);
        gx_tensor *want = fz_conv(&ctx, x, wp, b, &cs[c]);
        CHECK_MSG(wp->cache == NULL, "case %zu: a weight not frozen got a cache", c);
        for (int call = 0; call < 2; call++) {
            gx_tensor *got = fz_conv(&ctx, x, wf, b, &cs[c]);
            CHECK_MSG(!memcmp(got->data, want->data, (size_t)want->numel * sizeof(gx_real)),
                      "case %zu call %d: frozen weights give other bits", c, call);
            CHECK_MSG(!fz_packs() || wf->cache != NULL, "case %zu: no cache after call %d", c, call);
        }
        /* The same frozen weight at stride 1 and padding 0 (another geometry
         * for cases 2-3, the same for 0-1: either way the right result). */
        fz_case other = cs[c];
        other.s = other.s == 1 ? 2 : 1;
        other.p = 0;
        gx_tensor *o_want = fz_conv(&ctx, x, wp, b, &other), *o_got = fz_conv(&ctx, x, wf, b, &other);
        CHECK_MSG(!memcmp(o_got->data, o_want->data, (size_t)o_want->numel * sizeof(gx_real)),
                  "case %zu: the frozen weight in another geometry gives other bits", c);
        gx_ctx_reset(&ctx);
        gx_params_free(&fp);
        gx_params_free(&pp);
    }
    gx_ctx_free(&ctx);
}

/* Threads serving one model reach a frozen weight's first call together:
 * each gets the right bits, and one cache is kept (ASan: no leak of the
 * others'). */
GX_TEST(conv2d_frozen_weights_first_use_from_threads) {
    enum { NT = 4 };
    const fz_case c = { 2, 32, 4, 48, 3, 1, 1, 1 };
    gx_params fp, pp;
    gx_params_init(&fp);
    gx_params_init(&pp);
    const int64_t wshape[4] = { c.Co, c.Ci, c.k, c.k };
    gx_tensor *wf = gx_params_add(&fp, "w", 4, wshape, 0), *wp = gx_params_add(&pp, "w", 4, wshape, 0);
    gx_rng rng;
    gx_rng_init(&rng, 84);
    gx_rng_fill_uniform(&rng, wf->data, wf->numel, -1, 1);
    memcpy(wp->data, wf->data, (size_t)wf->numel * sizeof(gx_real));
    gx_params_freeze(&fp);
    gx_ctx ctx[NT + 1];
    for (int t = 0; t <= NT; t++) gx_ctx_init(&ctx[t], 1 << 20);
    gx_tensor *x = gx_test_const(&ctx[NT], &rng, 4, GX_SHAPE(c.B, c.Ci, c.H, c.H), -1, 1);
    gx_tensor *want = fz_conv(&ctx[NT], x, wp, NULL, &c);
    int same[NT] = { 0 };
    #pragma omp parallel for num_threads(NT) schedule(static, 1)
    for (int t = 0; t < NT; t++) {
        gx_tensor *got = fz_conv(&ctx[t], x, wf, NULL, &c);
        same[t] = !memcmp(got->data, want->data, (size_t)want->numel * sizeof(gx_real));
    }
    for (int t = 0; t < NT; t++) CHECK_MSG(same[t], "thread %d: other bits", t);
    CHECK(!fz_packs() || wf->cache != NULL);
    for (int t = 0; t <= NT; t++) gx_ctx_free(&ctx[t]);
    gx_params_free(&fp);
    gx_params_free(&pp);
}
