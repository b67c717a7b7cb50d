/* gx_reduce.c — STUB: to be replaced by the real implementation. */
#include "gx_impl.h"

gx_tensor *gx_sum(gx_ctx *ctx, gx_tensor *x, int dim, int keepdim) {
    (void)ctx;
    (void)x;
    (void)dim;
    (void)keepdim;
    GX_ASSERT_MSG(0, "gx_sum not implemented");
}

gx_tensor *gx_mean(gx_ctx *ctx, gx_tensor *x, int dim, int keepdim) {
    (void)ctx;
    (void)x;
    (void)dim;
    (void)keepdim;
    GX_ASSERT_MSG(0, "gx_mean not implemented");
}

gx_tensor *gx_max(gx_ctx *ctx, gx_tensor *x, int dim, int keepdim) {
    (void)ctx;
    (void)x;
    (void)dim;
    (void)keepdim;
    GX_ASSERT_MSG(0, "gx_max not implemented");
}

gx_tensor *gx_sum_all(gx_ctx *ctx, gx_tensor *x) {
    (void)ctx;
    (void)x;
    GX_ASSERT_MSG(0, "gx_sum_all not implemented");
}

gx_tensor *gx_mean_all(gx_ctx *ctx, gx_tensor *x) {
    (void)ctx;
    (void)x;
    GX_ASSERT_MSG(0, "gx_mean_all not implemented");
}

gx_tensor *gx_softmax(gx_ctx *ctx, gx_tensor *x, int dim) {
    (void)ctx;
    (void)x;
    (void)dim;
    GX_ASSERT_MSG(0, "gx_softmax not implemented");
}

gx_tensor *gx_log_softmax(gx_ctx *ctx, gx_tensor *x, int dim) {
    (void)ctx;
    (void)x;
    (void)dim;
    GX_ASSERT_MSG(0, "gx_log_softmax not implemented");
}

gx_tensor *gx_logsumexp(gx_ctx *ctx, gx_tensor *x, int dim, int keepdim) {
    (void)ctx;
    (void)x;
    (void)dim;
    (void)keepdim;
    GX_ASSERT_MSG(0, "gx_logsumexp not implemented");
}

gx_tensor *gx_cross_entropy(gx_ctx *ctx, gx_tensor *logits, const int32_t *target, double label_smoothing) {
    (void)ctx;
    (void)logits;
    (void)target;
    (void)label_smoothing;
    GX_ASSERT_MSG(0, "gx_cross_entropy not implemented");
}

gx_tensor *gx_gather(gx_ctx *ctx, gx_tensor *x, const int32_t *idx) {
    (void)ctx;
    (void)x;
    (void)idx;
    GX_ASSERT_MSG(0, "gx_gather not implemented");
}

gx_tensor *gx_one_hot(gx_ctx *ctx, const int32_t *idx, int64_t B, int64_t K) {
    (void)ctx;
    (void)idx;
    (void)B;
    (void)K;
    GX_ASSERT_MSG(0, "gx_one_hot not implemented");
}

gx_tensor *gx_l2_normalize(gx_ctx *ctx, gx_tensor *x, int dim, double eps) {
    (void)ctx;
    (void)x;
    (void)dim;
    (void)eps;
    GX_ASSERT_MSG(0, "gx_l2_normalize not implemented");
}
