/* gx_sinkhorn.c — STUB: to be replaced by the real implementation. */
#include "gx_impl.h"

gx_tensor *gx_sinkhorn_hk(gx_ctx *ctx, gx_tensor *a, gx_tensor *b, const gx_tensor *C, double lambda, int iters, double eps) {
    (void)ctx;
    (void)a;
    (void)b;
    (void)C;
    (void)lambda;
    (void)iters;
    (void)eps;
    GX_ASSERT_MSG(0, "gx_sinkhorn_hk not implemented");
}
