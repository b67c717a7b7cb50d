/* gx_shape.c — STUB: to be replaced by the real implementation. */
#include "gx_impl.h"

gx_tensor *gx_reshape(gx_ctx *ctx, gx_tensor *x, int ndim, const int64_t *shape) {
    (void)ctx;
    (void)x;
    (void)ndim;
    (void)shape;
    GX_ASSERT_MSG(0, "gx_reshape not implemented");
}

gx_tensor *gx_permute(gx_ctx *ctx, gx_tensor *x, const int *perm) {
    (void)ctx;
    (void)x;
    (void)perm;
    GX_ASSERT_MSG(0, "gx_permute not implemented");
}

gx_tensor *gx_concat(gx_ctx *ctx, int n, gx_tensor *const *xs, int dim) {
    (void)ctx;
    (void)n;
    (void)xs;
    (void)dim;
    GX_ASSERT_MSG(0, "gx_concat not implemented");
}

void gx_split(gx_ctx *ctx, gx_tensor *x, int dim, int n, const int64_t *sizes, gx_tensor **out) {
    (void)ctx;
    (void)x;
    (void)dim;
    (void)n;
    (void)sizes;
    (void)out;
    GX_ASSERT_MSG(0, "gx_split not implemented");
}

gx_tensor *gx_slice(gx_ctx *ctx, gx_tensor *x, int dim, int64_t start, int64_t end) {
    (void)ctx;
    (void)x;
    (void)dim;
    (void)start;
    (void)end;
    GX_ASSERT_MSG(0, "gx_slice not implemented");
}

gx_tensor *gx_flip(gx_ctx *ctx, gx_tensor *x, int dim) {
    (void)ctx;
    (void)x;
    (void)dim;
    GX_ASSERT_MSG(0, "gx_flip not implemented");
}
