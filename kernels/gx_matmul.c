/* gx_matmul.c — STUB: to be replaced by the real implementation. */
#include "gx_impl.h"

gx_tensor *gx_linear(gx_ctx *ctx, gx_tensor *x, gx_tensor *w, gx_tensor *b) {
    (void)ctx;
    (void)x;
    (void)w;
    (void)b;
    GX_ASSERT_MSG(0, "gx_linear not implemented");
}

gx_tensor *gx_matmul(gx_ctx *ctx, gx_tensor *a, gx_tensor *b) {
    (void)ctx;
    (void)a;
    (void)b;
    GX_ASSERT_MSG(0, "gx_matmul not implemented");
}

gx_tensor *gx_gram(gx_ctx *ctx, gx_tensor *a, gx_tensor *b) {
    (void)ctx;
    (void)a;
    (void)b;
    GX_ASSERT_MSG(0, "gx_gram not implemented");
}

gx_tensor *gx_pairwise_sqdist(gx_ctx *ctx, gx_tensor *a, gx_tensor *b) {
    (void)ctx;
    (void)a;
    (void)b;
    GX_ASSERT_MSG(0, "gx_pairwise_sqdist not implemented");
}
