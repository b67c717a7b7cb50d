/*
 * test_norm.c — hand-checked batch norm (training, eval, 4-D channels),
 * layer norm, and the batch-norm layer's naming, flags, initial values and
 * separate statistic sets.
 */
#include "gx_test.h"

#include <string.h>

GX_TEST(norm_batchnorm_training_values_and_running_update) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    ctx.grad_enabled = 1;
    /* x = [1,2,3,4] as [4,1]: mean 2.5, biased var 1.25, unbiased 5/3. */
    gx_tensor *x = gx_tensor_from(&ctx, 2, GX_SHAPE(4, 1), (const gx_real[]){ 1, 2, 3, 4 });
    gx_tensor *g = gx_tensor_from(&ctx, 1, GX_SHAPE(1), (const gx_real[]){ 2 });
    gx_tensor *b = gx_tensor_from(&ctx, 1, GX_SHAPE(1), (const gx_real[]){ 1 });
    gx_tensor *rm = gx_tensor_from(&ctx, 1, GX_SHAPE(1), (const gx_real[]){ 0 });
    gx_tensor *rv = gx_tensor_from(&ctx, 1, GX_SHAPE(1), (const gx_real[]){ 1 });
    x->requires_grad = g->requires_grad = b->requires_grad = 1;
    gx_tensor *y = gx_batchnorm(&ctx, x, g, b, rm, rv, 1, 0.1, 0.0);
    const double sd = sqrt(1.25);
    for (int i = 0; i < 4; i++) CHECK_NEAR(y->data[i], 2 * (i + 1 - 2.5) / sd + 1, 1e-5);
    /* running = 0.9 * old + 0.1 * batch (unbiased var for the variance). */
    CHECK_NEAR(rm->data[0], 0.25, 1e-6);
    CHECK_NEAR(rv->data[0], 0.9 + 0.1 * 5.0 / 3.0, 1e-6);
    /* Backward through the batch statistics: dx sums to zero and is
     * orthogonal to xhat (the mean and scale are normalised away). */
    const gx_real seed[4] = { 0.3f, -1.0f, 0.5f, 2.0f };
    gx_backward(&ctx, y, seed);
    double s0 = 0, s1 = 0, sg = 0;
    for (int i = 0; i < 4; i++) {
        double xhat = (i + 1 - 2.5) / sd;
        s0 += x->grad[i];
        s1 += x->grad[i] * xhat;
        sg += seed[i] * xhat;
    }
    CHECK_NEAR(s0, 0, 1e-5);
    CHECK_NEAR(s1, 0, 1e-5);
    CHECK_NEAR(b->grad[0], 1.8, 1e-6);        /* sum of dy */
    CHECK_NEAR(g->grad[0], sg, 1e-5);         /* sum of dy * xhat */
    gx_ctx_free(&ctx);
}

GX_TEST(norm_batchnorm_4d_channels_are_independent) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    /* x [2,2,1,2]: channel 0 = {0,2,4,6} (mean 3, var 5), channel 1 = all 7
     * (var 0). With eps 4 channel 0 has std 3 and channel 1 normalises to 0. */
    gx_tensor *x = gx_tensor_from(&ctx, 4, GX_SHAPE(2, 2, 1, 2),
                                  (const gx_real[]){ 0, 2, 7, 7, 4, 6, 7, 7 });
    gx_tensor *y = gx_batchnorm(&ctx, x, NULL, NULL, NULL, NULL, 1, 0.1, 4.0);
    const gx_real want[8] = { -1, -1.0f / 3, 0, 0, 1.0f / 3, 1, 0, 0 };
    gx_test_allclose(T, "bn 4d", y->data, want, 8, 1e-6, 0);
    gx_ctx_free(&ctx);
}

GX_TEST(norm_batchnorm_eval_uses_running_stats) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    ctx.grad_enabled = 1;
    /* Eval with mean 1, var 4, eps 0, gamma 3, beta -1: y = 1.5 (x - 1) - 1;
     * dx = 1.5 dy whatever the batch, and the running stats stay put. */
    gx_tensor *x = gx_tensor_from(&ctx, 2, GX_SHAPE(3, 1), (const gx_real[]){ 1, 3, -2 });
    gx_tensor *g = gx_tensor_from(&ctx, 1, GX_SHAPE(1), (const gx_real[]){ 3 });
    gx_tensor *b = gx_tensor_from(&ctx, 1, GX_SHAPE(1), (const gx_real[]){ -1 });
    gx_tensor *rm = gx_tensor_from(&ctx, 1, GX_SHAPE(1), (const gx_real[]){ 1 });
    gx_tensor *rv = gx_tensor_from(&ctx, 1, GX_SHAPE(1), (const gx_real[]){ 4 });
    x->requires_grad = 1;
    gx_tensor *y = gx_batchnorm(&ctx, x, g, b, rm, rv, 0, 0.1, 0.0);
    const gx_real want[3] = { -1, 2, -5.5 };
    gx_test_allclose(T, "bn eval", y->data, want, 3, 1e-6, 0);
    CHECK(rm->data[0] == 1 && rv->data[0] == 4);
    gx_backward(&ctx, y, (const gx_real[]){ 1, -2, 4 });
    const gx_real gw[3] = { 1.5, -3, 6 };
    gx_test_allclose(T, "bn eval grad", x->grad, gw, 3, 1e-6, 0);
    gx_ctx_free(&ctx);
}

GX_TEST(norm_layernorm_rows_hand_checked) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    /* Rows [1,2,3] and [-3,0,3] both normalise to [-k, 0, k] with
     * k = 1/sqrt(2/3) = sqrt(1.5) (eps 0); gamma [1,2,3], beta [0,0,1]. */
    gx_tensor *x = gx_tensor_from(&ctx, 2, GX_SHAPE(2, 3), (const gx_real[]){ 1, 2, 3, -3, 0, 3 });
    gx_tensor *g = gx_tensor_from(&ctx, 1, GX_SHAPE(3), (const gx_real[]){ 1, 2, 3 });
    gx_tensor *b = gx_tensor_from(&ctx, 1, GX_SHAPE(3), (const gx_real[]){ 0, 0, 1 });
    gx_tensor *y = gx_layernorm(&ctx, x, g, b, 0.0);
    const double k = sqrt(1.5);
    const gx_real want[6] = { (gx_real)-k, 0, (gx_real)(3 * k + 1), (gx_real)-k, 0, (gx_real)(3 * k + 1) };
    gx_test_allclose(T, "layernorm", y->data, want, 6, 1e-5, 1e-6);
    gx_tensor *y2 = gx_layernorm(&ctx, x, NULL, NULL, 0.0);
    CHECK_NEAR(y2->data[2], k, 1e-5);
    CHECK_NEAR(y2->data[4], 0, 1e-6);
    gx_ctx_free(&ctx);
}

GX_TEST(norm_bn_layer_single_set_names_flags_init) {
    gx_params p;
    gx_params_init(&p);
    gx_bn_layer bn;
    gx_bn_layer_init(&bn, &p, "bn1", 3, 1, NULL);
    CHECK(p.n == 4);
    const char *names[4] = { "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var" };
    const unsigned flags[4] = { 0, 0, GX_PARAM_BUFFER, GX_PARAM_BUFFER };
    const double init[4] = { 1, 0, 0, 1 };
    for (int i = 0; i < 4; i++) {
        gx_param *q = gx_params_find(&p, names[i]);
        CHECK_MSG(q != NULL, "%s not registered", names[i]);
        if (!q) continue;
        CHECK(q->flags == flags[i]);
        CHECK(q->t.numel == 3);
        CHECK(q->t.requires_grad == (flags[i] == 0));
        for (int c = 0; c < 3; c++) CHECK_NEAR(q->t.data[c], init[i], 0);
    }
    CHECK(strcmp(p.items[0]->name, "bn1.weight") == 0);   /* PyTorch order */
    CHECK(gx_params_count(&p, 0) == 6);
    CHECK(gx_params_count(&p, GX_PARAM_BUFFER) == 6);
    CHECK(bn.eps == 1e-5 && bn.momentum == 0.1);
    gx_params_free(&p);
}

GX_TEST(norm_bn_layer_sets_keep_separate_running_stats) {
    gx_params p;
    gx_params_init(&p);
    gx_bn_layer bn;
    const char *const sets[2] = { "d0", "d1" };
    gx_bn_layer_init(&bn, &p, "layer1.0.bn1", 2, 2, sets);
    CHECK(p.n == 8);
    CHECK(gx_params_find(&p, "layer1.0.bn1.d0.weight") != NULL);
    CHECK(gx_params_find(&p, "layer1.0.bn1.d1.running_var") != NULL);
    CHECK(gx_params_find(&p, "layer1.0.bn1.weight") == NULL);
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    /* x [2,2]: channel means 2 and 3 -> set 0 running mean 0.2, 0.3. */
    gx_tensor *x = gx_tensor_from(&ctx, 2, GX_SHAPE(2, 2), (const gx_real[]){ 1, 2, 3, 4 });
    gx_bn_layer_forward(&ctx, &bn, 0, x, 1);
    CHECK_NEAR(bn.running_mean[0]->data[0], 0.2, 1e-6);
    CHECK_NEAR(bn.running_mean[0]->data[1], 0.3, 1e-6);
    CHECK(bn.running_mean[1]->data[0] == 0 && bn.running_var[1]->data[1] == 1);
    /* Set 1 on other data: only set 1 moves (means 10, 20 -> 1, 2). */
    gx_tensor *z = gx_tensor_from(&ctx, 2, GX_SHAPE(2, 2), (const gx_real[]){ 9, 19, 11, 21 });
    gx_bn_layer_forward(&ctx, &bn, 1, z, 1);
    CHECK_NEAR(bn.running_mean[1]->data[0], 1.0, 1e-6);
    CHECK_NEAR(bn.running_mean[1]->data[1], 2.0, 1e-6);
    CHECK_NEAR(bn.running_mean[0]->data[0], 0.2, 1e-6);
    /* Unbiased var of {9, 11} is 2 -> 0.9 + 0.2; set 0's var of {1,3} also 2. */
    CHECK_NEAR(bn.running_var[1]->data[0], 1.1, 1e-6);
    CHECK_NEAR(bn.running_var[0]->data[0], 1.1, 1e-6);
    /* Eval on set 0 uses set 0's statistics: (1 - 0.2)/sqrt(1.1 + 1e-5). */
    gx_tensor *ye = gx_bn_layer_forward(&ctx, &bn, 0, x, 0);
    CHECK_NEAR(ye->data[0], 0.8 / sqrt(1.1 + 1e-5), 1e-5);
    gx_ctx_free(&ctx);
    /* Without names, several sets are called d0, d1, ... */
    gx_bn_layer bn3;
    gx_bn_layer_init(&bn3, &p, "bn2", 4, 3, NULL);
    CHECK(gx_params_find(&p, "bn2.d2.running_var") != NULL);
    CHECK(p.n == 8 + 12);
    gx_params_free(&p);
}
