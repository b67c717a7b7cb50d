/*
 * test_grad_shape.c — finite-difference checks (f64) of every shape op's
 * backward, each on two or more shapes with odd sizes. The ops are linear,
 * so any input values work; these catch index errors in the backward walks.
 */
#include "gx_test.h"

typedef struct { int ndim; int64_t shape[GX_MAX_DIMS]; int perm[GX_MAX_DIMS]; int dim;
                 int64_t a, b; } shape_arg;

static gx_tensor *fn_reshape(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const shape_arg *s = arg;
    return gx_reshape(ctx, in[0], s->ndim, s->shape);
}
static gx_tensor *fn_permute(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    return gx_permute(ctx, in[0], ((const shape_arg *)arg)->perm);
}
static gx_tensor *fn_concat3(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    return gx_concat(ctx, 3, in, ((const shape_arg *)arg)->dim);
}
static gx_tensor *fn_slice(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const shape_arg *s = arg;
    return gx_slice(ctx, in[0], s->dim, s->a, s->b);
}
static gx_tensor *fn_flip(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    return gx_flip(ctx, in[0], ((const shape_arg *)arg)->dim);
}
/* Split into three parts and re-join them in another order (2, 0, 1), so
 * every part carries a distinct piece of the projected loss. */
static gx_tensor *fn_split(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const shape_arg *s = arg;
    gx_tensor *p[3];
    gx_split(ctx, in[0], s->dim, 3, s->shape, p);
    return gx_concat(ctx, 3, (gx_tensor *const[]){ p[2], p[0], p[1] }, s->dim);
}

GX_TEST(grad_shape_reshape) {
    gx_ctx ctx; gx_ctx_init(&ctx, 1 << 16);
    gx_rng rng; gx_rng_init(&rng, 11);
    gx_tensor *x = gx_test_leaf(&ctx, &rng, 3, GX_SHAPE(3, 5, 2), -1, 1);
    shape_arg a = { .ndim = 2, .shape = { -1, 3 } };
    CHECK(gx_gradcheck(T, "reshape [3,5,2]->[-1,3]", fn_reshape, &a, 1, &x, GX_GC_DEFAULTS));
    gx_tensor *y = gx_test_leaf(&ctx, &rng, 1, GX_SHAPE(7), -1, 1);
    shape_arg b = { .ndim = 3, .shape = { 1, 7, 1 } };
    CHECK(gx_gradcheck(T, "reshape [7]->[1,7,1]", fn_reshape, &b, 1, &y, GX_GC_DEFAULTS));
    gx_ctx_free(&ctx);
}

GX_TEST(grad_shape_permute) {
    gx_ctx ctx; gx_ctx_init(&ctx, 1 << 16);
    gx_rng rng; gx_rng_init(&rng, 12);
    gx_tensor *x = gx_test_leaf(&ctx, &rng, 3, GX_SHAPE(3, 5, 2), -1, 1);
    shape_arg a = { .perm = { 2, 0, 1 } };
    CHECK(gx_gradcheck(T, "permute 3d", fn_permute, &a, 1, &x, GX_GC_DEFAULTS));
    gx_tensor *y = gx_test_leaf(&ctx, &rng, 4, GX_SHAPE(2, 3, 5, 3), -1, 1);
    shape_arg b = { .perm = { 0, 2, 3, 1 } };          /* NCHW -> NHWC */
    CHECK(gx_gradcheck(T, "permute 4d nhwc", fn_permute, &b, 1, &y, GX_GC_DEFAULTS));
    const int64_t s6[6] = { 2, 1, 3, 2, 1, 3 };
    gx_tensor *z = gx_test_leaf(&ctx, &rng, 6, s6, -1, 1);
    shape_arg c = { .perm = { 3, 5, 0, 4, 2, 1 } };
    CHECK(gx_gradcheck(T, "permute 6d", fn_permute, &c, 1, &z, GX_GC_DEFAULTS));
    gx_ctx_free(&ctx);
}

GX_TEST(grad_shape_concat) {
    gx_ctx ctx; gx_ctx_init(&ctx, 1 << 16);
    gx_rng rng; gx_rng_init(&rng, 13);
    gx_tensor *a[3] = { gx_test_leaf(&ctx, &rng, 3, GX_SHAPE(2, 3, 5), -1, 1),
                        gx_test_leaf(&ctx, &rng, 3, GX_SHAPE(2, 1, 5), -1, 1),
                        gx_test_leaf(&ctx, &rng, 3, GX_SHAPE(2, 4, 5), -1, 1) };
    shape_arg d1 = { .dim = 1 };
    CHECK(gx_gradcheck(T, "concat dim 1", fn_concat3, &d1, 3, a, GX_GC_DEFAULTS));
    gx_tensor *b[3] = { gx_test_leaf(&ctx, &rng, 2, GX_SHAPE(3, 2), -1, 1),
                        gx_test_leaf(&ctx, &rng, 2, GX_SHAPE(3, 5), -1, 1),
                        gx_test_const(&ctx, &rng, 2, GX_SHAPE(3, 1), -1, 1) };  /* constant */
    shape_arg dl = { .dim = -1 };
    CHECK(gx_gradcheck(T, "concat dim -1, one constant", fn_concat3, &dl, 3, b, GX_GC_DEFAULTS));
    gx_tensor *c[3] = { gx_test_leaf(&ctx, &rng, 2, GX_SHAPE(1, 3), -1, 1),
                        gx_test_leaf(&ctx, &rng, 2, GX_SHAPE(2, 3), -1, 1),
                        gx_test_leaf(&ctx, &rng, 2, GX_SHAPE(3, 3), -1, 1) };
    shape_arg d0 = { .dim = 0 };
    CHECK(gx_gradcheck(T, "concat dim 0", fn_concat3, &d0, 3, c, GX_GC_DEFAULTS));
    gx_ctx_free(&ctx);
}

GX_TEST(grad_shape_split_slice_flip) {
    gx_ctx ctx; gx_ctx_init(&ctx, 1 << 16);
    gx_rng rng; gx_rng_init(&rng, 14);
    gx_tensor *x = gx_test_leaf(&ctx, &rng, 3, GX_SHAPE(3, 2, 9), -1, 1);
    shape_arg sp = { .dim = 2, .shape = { 2, 3, 4 } };
    CHECK(gx_gradcheck(T, "split dim 2", fn_split, &sp, 1, &x, GX_GC_DEFAULTS));
    gx_tensor *y = gx_test_leaf(&ctx, &rng, 2, GX_SHAPE(7, 3), -1, 1);
    shape_arg sp0 = { .dim = 0, .shape = { 1, 5, 1 } };
    CHECK(gx_gradcheck(T, "split dim 0", fn_split, &sp0, 1, &y, GX_GC_DEFAULTS));
    shape_arg sl = { .dim = 1, .a = 1, .b = 2 };
    CHECK(gx_gradcheck(T, "slice [3,2,9] dim 1", fn_slice, &sl, 1, &x, GX_GC_DEFAULTS));
    shape_arg sl2 = { .dim = -1, .a = 2, .b = 7 };
    CHECK(gx_gradcheck(T, "slice [3,2,9] last", fn_slice, &sl2, 1, &x, GX_GC_DEFAULTS));
    shape_arg f0 = { .dim = 0 }, f2 = { .dim = 2 };
    CHECK(gx_gradcheck(T, "flip dim 0", fn_flip, &f0, 1, &y, GX_GC_DEFAULTS));
    CHECK(gx_gradcheck(T, "flip dim 2", fn_flip, &f2, 1, &x, GX_GC_DEFAULTS));
    gx_ctx_free(&ctx);
}
