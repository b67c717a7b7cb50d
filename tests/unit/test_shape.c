/*
 * test_shape.c — hand-checked forward (and simple backward) cases for the
 * shape family: reshape, permute, concat, split, slice, flip. Inputs are
 * arange-style so the expected values follow from index arithmetic.
 */
#include "gx_test.h"

/* Arena tensor holding 0, 1, 2, ... (as a leaf when grad is set). */
static gx_tensor *arange(gx_ctx *ctx, int ndim, const int64_t *shape, int grad) {
    gx_tensor *t = gx_tensor_new(ctx, ndim, shape);
    for (int64_t i = 0; i < t->numel; i++) t->data[i] = (gx_real)i;
    t->requires_grad = (uint8_t)grad;
    return t;
}

GX_TEST(shape_reshape_shares_data_infers_and_adds_grad) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    ctx.grad_enabled = 1;
    gx_tensor *x = arange(&ctx, 2, GX_SHAPE(2, 6), 1);
    gx_tensor *y = gx_reshape(&ctx, x, 3, GX_SHAPE(3, -1, 2));
    CHECK(y->ndim == 3 && y->shape[0] == 3 && y->shape[1] == 2 && y->shape[2] == 2);
    CHECK(y->data == x->data);                 /* a view, not a copy */
    CHECK(y->numel == 12);
    gx_real seed[12];
    for (int i = 0; i < 12; i++) seed[i] = (gx_real)(i * 0.5);
    gx_backward(&ctx, y, seed);
    CHECK(y->grad != NULL && x->grad != NULL && y->grad != x->grad);
    for (int i = 0; i < 12; i++) CHECK_NEAR(x->grad[i], i * 0.5, 0);
    gx_ctx_free(&ctx);
}

GX_TEST(shape_permute_3d_and_6d_index_rule) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    /* x[i][j][k] = 12i + 4j + k, out = permute(x, {2,0,1}): out[k][i][j] = x[i][j][k]. */
    gx_tensor *x = arange(&ctx, 3, GX_SHAPE(2, 3, 4), 0);
    gx_tensor *y = gx_permute(&ctx, x, (const int[]){ 2, 0, 1 });
    CHECK(y->shape[0] == 4 && y->shape[1] == 2 && y->shape[2] == 3);
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 3; j++)
                CHECK_NEAR(y->data[k * 6 + i * 3 + j], 12 * i + 4 * j + k, 0);
    /* 2-D transpose: [[0,1,2],[3,4,5]] -> [[0,3],[1,4],[2,5]]. */
    gx_tensor *m = arange(&ctx, 2, GX_SHAPE(2, 3), 0);
    gx_tensor *mt = gx_permute(&ctx, m, (const int[]){ 1, 0 });
    const gx_real want[6] = { 0, 3, 1, 4, 2, 5 };
    gx_test_allclose(T, "transpose", mt->data, want, 6, 0, 0);
    /* 6-D reversal: out[a][b][c][d][e][f] = x[f][e][d][c][b][a]. */
    const int64_t s[6] = { 2, 1, 3, 2, 1, 3 };
    gx_tensor *z = arange(&ctx, 6, s, 0);
    gx_tensor *zr = gx_permute(&ctx, z, (const int[]){ 5, 4, 3, 2, 1, 0 });
    int bad = 0;
    for (int64_t o = 0; o < zr->numel; o++) {
        int64_t idx[6], r = o;
        for (int d = 5; d >= 0; d--) { idx[d] = r % zr->shape[d]; r /= zr->shape[d]; }
        int64_t src = 0;            /* x index = reversed idx, row-major over s */
        for (int d = 0; d < 6; d++) src = src * s[d] + idx[5 - d];
        bad += zr->data[o] != (gx_real)src;
    }
    CHECK(bad == 0);
    gx_ctx_free(&ctx);
}

GX_TEST(shape_concat_middle_dim_and_many_inputs_with_grad) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    ctx.grad_enabled = 1;
    /* a = [[0],[1]], b = [[0,1],[2,3]] along dim 1 -> [[0,0,1],[1,2,3]]. */
    gx_tensor *a = arange(&ctx, 2, GX_SHAPE(2, 1), 0);
    gx_tensor *b = arange(&ctx, 2, GX_SHAPE(2, 2), 0);
    gx_tensor *ab = gx_concat(&ctx, 2, (gx_tensor *const[]){ a, b }, -1);
    const gx_real want[6] = { 0, 0, 1, 1, 2, 3 };
    CHECK(ab->shape[0] == 2 && ab->shape[1] == 3);
    gx_test_allclose(T, "concat", ab->data, want, 6, 0, 0);
    /* Nine inputs of [1, k+1] along dim 1 (more than a tape node holds):
     * the output is their values in order and the gradient of input k is
     * its band of the seed. */
    gx_tensor *xs[9];
    int64_t total = 0;
    for (int k = 0; k < 9; k++) {
        xs[k] = gx_tensor_new(&ctx, 2, GX_SHAPE(1, k + 1));
        for (int j = 0; j <= k; j++) xs[k]->data[j] = (gx_real)(total + j);
        xs[k]->requires_grad = 1;
        total += k + 1;
    }
    gx_tensor *y = gx_concat(&ctx, 9, xs, 1);
    CHECK(y->shape[1] == total);
    for (int64_t i = 0; i < total; i++) CHECK_NEAR(y->data[i], i, 0);
    gx_real *seed = gx_ctx_alloc(&ctx, (size_t)total * sizeof(gx_real));
    for (int64_t i = 0; i < total; i++) seed[i] = (gx_real)(100 + i);
    gx_backward(&ctx, y, seed);
    int64_t off = 0;
    for (int k = 0; k < 9; k++)
        for (int j = 0; j <= k; j++, off++) CHECK_NEAR(xs[k]->grad[j], 100 + off, 0);
    gx_ctx_free(&ctx);
}

GX_TEST(shape_split_and_slice_values_and_grad) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    ctx.grad_enabled = 1;
    /* x [3,4] = arange; slice dim 1 [1,3) -> [[1,2],[5,6],[9,10]]. */
    gx_tensor *x = arange(&ctx, 2, GX_SHAPE(3, 4), 1);
    gx_tensor *s = gx_slice(&ctx, x, 1, 1, 3);
    const gx_real want[6] = { 1, 2, 5, 6, 9, 10 };
    gx_test_allclose(T, "slice", s->data, want, 6, 0, 0);
    gx_backward(&ctx, s, NULL);
    const gx_real gwant[12] = { 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0 };
    gx_test_allclose(T, "slice grad", x->grad, gwant, 12, 0, 0);
    /* split dim 0 into {1, 2}: rows 0 | rows 1..2. */
    gx_tensor *parts[2];
    gx_split(&ctx, x, 0, 2, GX_SHAPE(1, 2), parts);
    CHECK(parts[0]->shape[0] == 1 && parts[1]->shape[0] == 2 && parts[1]->shape[1] == 4);
    CHECK_NEAR(parts[0]->data[3], 3, 0);
    CHECK_NEAR(parts[1]->data[0], 4, 0);
    CHECK_NEAR(parts[1]->data[7], 11, 0);
    gx_ctx_free(&ctx);
}

GX_TEST(shape_flip_each_dim) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    gx_tensor *x = arange(&ctx, 2, GX_SHAPE(2, 3), 0);      /* [[0,1,2],[3,4,5]] */
    gx_tensor *f1 = gx_flip(&ctx, x, 1);
    gx_tensor *f0 = gx_flip(&ctx, x, 0);
    const gx_real w1[6] = { 2, 1, 0, 5, 4, 3 }, w0[6] = { 3, 4, 5, 0, 1, 2 };
    gx_test_allclose(T, "flip dim 1", f1->data, w1, 6, 0, 0);
    gx_test_allclose(T, "flip dim 0", f0->data, w0, 6, 0, 0);
    gx_tensor *ff = gx_flip(&ctx, f1, -1);                   /* involution */
    gx_test_allclose(T, "flip twice", ff->data, x->data, 6, 0, 0);
    gx_ctx_free(&ctx);
}
