/* gx_scan.c — STUB: to be replaced by the real implementation. */
#include "gx_impl.h"

gx_tensor *gx_ssm_scan(gx_ctx *ctx, gx_tensor *xs, gx_tensor *delta, gx_tensor *A, gx_tensor *Bm, gx_tensor *Cm) {
    (void)ctx;
    (void)xs;
    (void)delta;
    (void)A;
    (void)Bm;
    (void)Cm;
    GX_ASSERT_MSG(0, "gx_ssm_scan not implemented");
}
