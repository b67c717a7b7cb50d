/* gx_pool.c — STUB: to be replaced by the real implementation. */
#include "gx_impl.h"

gx_tensor *gx_adaptive_avg_pool2d(gx_ctx *ctx, gx_tensor *x, int64_t oh, int64_t ow) {
    (void)ctx;
    (void)x;
    (void)oh;
    (void)ow;
    GX_ASSERT_MSG(0, "gx_adaptive_avg_pool2d not implemented");
}

gx_tensor *gx_resize_bilinear(gx_ctx *ctx, gx_tensor *x, int64_t oh, int64_t ow) {
    (void)ctx;
    (void)x;
    (void)oh;
    (void)ow;
    GX_ASSERT_MSG(0, "gx_resize_bilinear not implemented");
}

gx_tensor *gx_upsample_nearest2x(gx_ctx *ctx, gx_tensor *x) {
    (void)ctx;
    (void)x;
    GX_ASSERT_MSG(0, "gx_upsample_nearest2x not implemented");
}
