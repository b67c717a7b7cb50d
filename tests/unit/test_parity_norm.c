/*
 * test_parity_norm.c — the norm family against PyTorch
 * (tests/parity/gen_norm.py):
 *   - batch norm [3,4,5,3] through a gx_bn_layer with two statistic sets
 *     (set 1 used): three training calls, each checked for output, gradients
 *     of x, weight and bias, and the running statistics after the call
 *     (PyTorch's momentum rule, unbiased running variance); set 0 must stay
 *     untouched; then eval mode with the updated statistics, with gradients;
 *   - batch norm [7,3] in training without affine (momentum 0.2, eps 1e-3);
 *   - layer norm [2,3,7] with affine and [4,10] without (eps 1e-6).
 *
 * Tolerances: fixture in float64 (rounded to f32), engine in f32 with sums in
 * double. Values: atol 1e-5 + rtol 1e-5. Gradients through the batch
 * statistics subtract nearly equal terms, so atol 2e-5 + rtol 1e-4; a wrong
 * formula is off by >1e-2.
 */
#include "gx_test.h"

#include <string.h>

#define VAL_ATOL 1e-5
#define VAL_RTOL 1e-5
#define GRAD_ATOL 2e-5
#define GRAD_RTOL 1e-4

static gx_tensor *fx(gx_test_state *T, gx_ctx *ctx, const gx_st_file *f, const char *prefix,
                     const char *key, int grad) {
    char name[128];
    snprintf(name, sizeof name, "%s%s", prefix, key);
    gx_tensor *t = gx_fixture_tensor(T, ctx, f, name);
    if (t) t->requires_grad = (uint8_t)grad;
    return t;
}

static void check(gx_test_state *T, const gx_st_file *f, const char *prefix, const char *key,
                  const gx_real *got, int64_t n, int is_grad) {
    char name[128];
    snprintf(name, sizeof name, "%s%s", prefix, key);
    CHECK_MSG(got != NULL, "%s: nothing computed (no gradient?)", name);
    if (got) gx_fixture_check(T, f, name, got, n, is_grad ? GRAD_ATOL : VAL_ATOL,
                              is_grad ? GRAD_RTOL : VAL_RTOL);
}

/* One bn4d call on set 1 of the layer: forward, output, backward, grads. */
static void bn_layer_call(gx_test_state *T, const gx_st_file *f, gx_params *p,
                          const gx_bn_layer *bn, const char *prefix, int training) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    ctx.grad_enabled = 1;
    gx_params_zero_grad(p);
    gx_tensor *x = fx(T, &ctx, f, prefix, "x", 1);
    gx_tensor *gout = fx(T, &ctx, f, prefix, "gout", 0);
    if (x && gout) {
        gx_tensor *y = gx_bn_layer_forward(&ctx, bn, 1, x, training);
        check(T, f, prefix, "y", y->data, y->numel, 0);
        gx_backward(&ctx, y, gout->data);
        check(T, f, prefix, "grad.x", x->grad, x->numel, 1);
        check(T, f, prefix, "grad.gamma", bn->weight[1]->grad, bn->C, 1);
        check(T, f, prefix, "grad.beta", bn->bias[1]->grad, bn->C, 1);
    }
    gx_ctx_free(&ctx);
}

GX_TEST(parity_norm_bn_layer_three_training_calls_then_eval) {
    gx_st_file f;
    if (!gx_fixture_open(T, &f, "norm.safetensors")) return;
    gx_params p;
    gx_params_init(&p);
    gx_bn_layer bn;
    const char *const sets[2] = { "src", "tgt" };
    gx_bn_layer_init(&bn, &p, "bn", 4, 2, sets);
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    gx_tensor *g = fx(T, &ctx, &f, "bn4d.", "gamma", 0), *b = fx(T, &ctx, &f, "bn4d.", "beta", 0);
    if (g && b) {
        memcpy(bn.weight[1]->data, g->data, 4 * sizeof(gx_real));
        memcpy(bn.bias[1]->data, b->data, 4 * sizeof(gx_real));
        for (int k = 0; k < 3; k++) {
            char prefix[32];
            snprintf(prefix, sizeof prefix, "bn4d.train%d.", k);
            bn_layer_call(T, &f, &p, &bn, prefix, 1);
            check(T, &f, prefix, "running_mean", bn.running_mean[1]->data, 4, 0);
            check(T, &f, prefix, "running_var", bn.running_var[1]->data, 4, 0);
        }
        for (int c = 0; c < 4; c++)
            CHECK(bn.running_mean[0]->data[c] == 0 && bn.running_var[0]->data[c] == 1);
        bn_layer_call(T, &f, &p, &bn, "bn4d.eval.", 0);
    }
    gx_ctx_free(&ctx);
    gx_params_free(&p);
    gx_st_close(&f);
}

GX_TEST(parity_norm_bn_no_affine_and_layernorm) {
    gx_st_file f;
    if (!gx_fixture_open(T, &f, "norm.safetensors")) return;
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    ctx.grad_enabled = 1;
    /* bn2d: [7,3], training, no affine, momentum 0.2, eps 1e-3. */
    gx_tensor *x = fx(T, &ctx, &f, "bn2d.", "x", 1), *gout = fx(T, &ctx, &f, "bn2d.", "gout", 0);
    gx_tensor *rm = gx_tensor_zeros(&ctx, 1, GX_SHAPE(3)), *rv = gx_tensor_new(&ctx, 1, GX_SHAPE(3));
    for (int c = 0; c < 3; c++) rv->data[c] = 1;
    if (x && gout) {
        gx_tensor *y = gx_batchnorm(&ctx, x, NULL, NULL, rm, rv, 1, 0.2, 1e-3);
        check(T, &f, "bn2d.", "y", y->data, y->numel, 0);
        gx_backward(&ctx, y, gout->data);
        check(T, &f, "bn2d.", "grad.x", x->grad, x->numel, 1);
        check(T, &f, "bn2d.", "running_mean", rm->data, 3, 0);
        check(T, &f, "bn2d.", "running_var", rv->data, 3, 0);
    }
    /* ln3d: [2,3,7] with gamma/beta, eps 1e-5. */
    gx_tensor *lx = fx(T, &ctx, &f, "ln3d.", "x", 1), *lg = fx(T, &ctx, &f, "ln3d.", "gamma", 1);
    gx_tensor *lb = fx(T, &ctx, &f, "ln3d.", "beta", 1), *lo = fx(T, &ctx, &f, "ln3d.", "gout", 0);
    if (lx && lg && lb && lo) {
        gx_tensor *y = gx_layernorm(&ctx, lx, lg, lb, 1e-5);
        check(T, &f, "ln3d.", "y", y->data, y->numel, 0);
        gx_backward(&ctx, y, lo->data);
        check(T, &f, "ln3d.", "grad.x", lx->grad, lx->numel, 1);
        check(T, &f, "ln3d.", "grad.gamma", lg->grad, lg->numel, 1);
        check(T, &f, "ln3d.", "grad.beta", lb->grad, lb->numel, 1);
    }
    /* ln2d: [4,10], no affine, eps 1e-6. */
    gx_tensor *mx = fx(T, &ctx, &f, "ln2d.", "x", 1), *mo = fx(T, &ctx, &f, "ln2d.", "gout", 0);
    if (mx && mo) {
        gx_tensor *y = gx_layernorm(&ctx, mx, NULL, NULL, 1e-6);
        check(T, &f, "ln2d.", "y", y->data, y->numel, 0);
        gx_backward(&ctx, y, mo->data);
        check(T, &f, "ln2d.", "grad.x", mx->grad, mx->numel, 1);
    }
    gx_ctx_free(&ctx);
    gx_st_close(&f);
}
