/*
 * test_grad_norm.c — finite-difference checks (f64) of batch norm (training
 * through the batch statistics, with and without affine, and eval) and
 * layer norm (with and without affine), on [B,C] and [B,C,H,W] with odd
 * sizes, and of the BN layer wrapper. Inputs x, gamma and beta are all
 * checked wherever they are given.
 */
#include "gx_test.h"

typedef struct { int training; gx_tensor *rm, *rv; double eps; } bn_arg;

/* in = {x, gamma, beta}; gamma/beta may be NULL-free leaves or constants. */
static gx_tensor *fn_bn(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const bn_arg *a = arg;
    return gx_batchnorm(ctx, in[0], in[1], in[2], a->rm, a->rv, a->training, 0.1, a->eps);
}
static gx_tensor *fn_bn_noaffine(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const bn_arg *a = arg;
    return gx_batchnorm(ctx, in[0], NULL, NULL, a->rm, a->rv, a->training, 0.1, a->eps);
}
static gx_tensor *fn_ln(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    (void)arg;
    return gx_layernorm(ctx, in[0], in[1], in[2], 1e-5);
}
static gx_tensor *fn_ln_noaffine(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    (void)arg;
    return gx_layernorm(ctx, in[0], NULL, NULL, 1e-5);
}

GX_TEST(grad_norm_batchnorm_training) {
    gx_ctx ctx; gx_ctx_init(&ctx, 1 << 16);
    gx_rng rng; gx_rng_init(&rng, 31);
    /* [B,C] = [5,3] with running stats updated on every evaluation (they do
     * not feed the training output). */
    gx_tensor *rm = gx_tensor_zeros(&ctx, 1, GX_SHAPE(3)), *rv = gx_tensor_zeros(&ctx, 1, GX_SHAPE(3));
    bn_arg a = { 1, rm, rv, 1e-5 };
    gx_tensor *in2[3] = { gx_test_leaf(&ctx, &rng, 2, GX_SHAPE(5, 3), -2, 2),
                          gx_test_leaf(&ctx, &rng, 1, GX_SHAPE(3), 0.5, 1.5),
                          gx_test_leaf(&ctx, &rng, 1, GX_SHAPE(3), -0.5, 0.5) };
    CHECK(gx_gradcheck(T, "bn train [5,3]", fn_bn, &a, 3, in2, GX_GC_DEFAULTS));
    /* [2,3,3,5], no running stats. */
    bn_arg b = { 1, NULL, NULL, 1e-5 };
    gx_tensor *in4[3] = { gx_test_leaf(&ctx, &rng, 4, GX_SHAPE(2, 3, 3, 5), -1, 2),
                          gx_test_leaf(&ctx, &rng, 1, GX_SHAPE(3), 0.5, 1.5),
                          gx_test_leaf(&ctx, &rng, 1, GX_SHAPE(3), -0.5, 0.5) };
    CHECK(gx_gradcheck(T, "bn train [2,3,3,5]", fn_bn, &b, 3, in4, GX_GC_DEFAULTS));
    CHECK(gx_gradcheck(T, "bn train no affine [2,3,3,5]", fn_bn_noaffine, &b, 1, in4, GX_GC_DEFAULTS));
    gx_ctx_free(&ctx);
}

GX_TEST(grad_norm_batchnorm_eval) {
    gx_ctx ctx; gx_ctx_init(&ctx, 1 << 16);
    gx_rng rng; gx_rng_init(&rng, 32);
    gx_tensor *rm = gx_test_const(&ctx, &rng, 1, GX_SHAPE(3), -0.5, 0.5);
    gx_tensor *rv = gx_test_const(&ctx, &rng, 1, GX_SHAPE(3), 0.5, 2.0);
    bn_arg a = { 0, rm, rv, 1e-5 };
    gx_tensor *in4[3] = { gx_test_leaf(&ctx, &rng, 4, GX_SHAPE(3, 3, 2, 5), -1, 2),
                          gx_test_leaf(&ctx, &rng, 1, GX_SHAPE(3), 0.5, 1.5),
                          gx_test_leaf(&ctx, &rng, 1, GX_SHAPE(3), -0.5, 0.5) };
    CHECK(gx_gradcheck(T, "bn eval [3,3,2,5]", fn_bn, &a, 3, in4, GX_GC_DEFAULTS));
    gx_tensor *in2[3] = { gx_test_leaf(&ctx, &rng, 2, GX_SHAPE(1, 3), -1, 2),
                          gx_test_leaf(&ctx, &rng, 1, GX_SHAPE(3), 0.5, 1.5),
                          gx_test_const(&ctx, &rng, 1, GX_SHAPE(3), -0.5, 0.5) };
    CHECK(gx_gradcheck(T, "bn eval [1,3], beta constant", fn_bn, &a, 3, in2, GX_GC_DEFAULTS));
    gx_ctx_free(&ctx);
}

GX_TEST(grad_norm_layernorm) {
    gx_ctx ctx; gx_ctx_init(&ctx, 1 << 16);
    gx_rng rng; gx_rng_init(&rng, 33);
    gx_tensor *a[3] = { gx_test_leaf(&ctx, &rng, 2, GX_SHAPE(3, 7), -2, 1),
                        gx_test_leaf(&ctx, &rng, 1, GX_SHAPE(7), 0.5, 1.5),
                        gx_test_leaf(&ctx, &rng, 1, GX_SHAPE(7), -0.5, 0.5) };
    CHECK(gx_gradcheck(T, "layernorm [3,7]", fn_ln, NULL, 3, a, GX_GC_DEFAULTS));
    /* D = 131 > one column block of the dgamma/dbeta reduction. */
    gx_tensor *b[3] = { gx_test_leaf(&ctx, &rng, 3, GX_SHAPE(2, 3, 131), -1, 1),
                        gx_test_leaf(&ctx, &rng, 1, GX_SHAPE(131), 0.5, 1.5),
                        gx_test_leaf(&ctx, &rng, 1, GX_SHAPE(131), -0.5, 0.5) };
    gx_gc_opts o = GX_GC_DEFAULTS;
    o.max_elems = 200;
    CHECK(gx_gradcheck(T, "layernorm [2,3,131]", fn_ln, NULL, 3, b, o));
    gx_tensor *c = gx_test_leaf(&ctx, &rng, 3, GX_SHAPE(2, 1, 5), -1, 1);
    CHECK(gx_gradcheck(T, "layernorm no affine [2,1,5]", fn_ln_noaffine, NULL, 1, &c, GX_GC_DEFAULTS));
    gx_ctx_free(&ctx);
}

/* The layer wrapper on set 1 of two: gradients reach that set's weight and
 * bias (registry tensors) as well as x. */
typedef struct { gx_bn_layer *bn; int training; } layer_arg;
static gx_tensor *fn_layer(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const layer_arg *a = arg;
    return gx_bn_layer_forward(ctx, a->bn, 1, in[0], a->training);
}

GX_TEST(grad_norm_bn_layer_set) {
    gx_params p; gx_params_init(&p);
    gx_bn_layer bn;
    gx_bn_layer_init(&bn, &p, "bn", 3, 2, NULL);
    gx_ctx ctx; gx_ctx_init(&ctx, 1 << 16);
    gx_rng rng; gx_rng_init(&rng, 34);
    gx_rng_fill_uniform(&rng, bn.weight[1]->data, 3, 0.5, 1.5);
    gx_rng_fill_uniform(&rng, bn.bias[1]->data, 3, -0.5, 0.5);
    /* The registry owns weight/bias grads; gradcheck swaps in its own. */
    gx_real *wg = bn.weight[1]->grad, *bg = bn.bias[1]->grad;
    gx_tensor *in[3] = { gx_test_leaf(&ctx, &rng, 4, GX_SHAPE(3, 3, 1, 3), -1, 2), bn.weight[1], bn.bias[1] };
    layer_arg a = { &bn, 1 };
    CHECK(gx_gradcheck(T, "bn layer set 1 train", fn_layer, &a, 3, in, GX_GC_DEFAULTS));
    bn.weight[1]->grad = wg; bn.bias[1]->grad = bg;
    gx_ctx_free(&ctx);
    gx_params_free(&p);
}
