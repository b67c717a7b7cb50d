/* gx_conv.c — STUB: to be replaced by the real implementation. */
#include "gx_impl.h"

gx_tensor *gx_conv2d(gx_ctx *ctx, gx_tensor *x, gx_tensor *w, gx_tensor *b, int stride, int padding, int groups) {
    (void)ctx;
    (void)x;
    (void)w;
    (void)b;
    (void)stride;
    (void)padding;
    (void)groups;
    GX_ASSERT_MSG(0, "gx_conv2d not implemented");
}

gx_tensor *gx_conv1d_causal_dw(gx_ctx *ctx, gx_tensor *x, gx_tensor *w, gx_tensor *b) {
    (void)ctx;
    (void)x;
    (void)w;
    (void)b;
    GX_ASSERT_MSG(0, "gx_conv1d_causal_dw not implemented");
}
