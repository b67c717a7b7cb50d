/* gx_norm.c — STUB: to be replaced by the real implementation. */
#include "gx_impl.h"

gx_tensor *gx_batchnorm(gx_ctx *ctx, gx_tensor *x, gx_tensor *gamma, gx_tensor *beta, gx_tensor *running_mean, gx_tensor *running_var, int training, double momentum, double eps) {
    (void)ctx;
    (void)x;
    (void)gamma;
    (void)beta;
    (void)running_mean;
    (void)running_var;
    (void)training;
    (void)momentum;
    (void)eps;
    GX_ASSERT_MSG(0, "gx_batchnorm not implemented");
}

gx_tensor *gx_layernorm(gx_ctx *ctx, gx_tensor *x, gx_tensor *gamma, gx_tensor *beta, double eps) {
    (void)ctx;
    (void)x;
    (void)gamma;
    (void)beta;
    (void)eps;
    GX_ASSERT_MSG(0, "gx_layernorm not implemented");
}

void gx_bn_layer_init(gx_bn_layer *bn, gx_params *p, const char *prefix, int64_t C, int nsets, const char *const *set_names) {
    (void)bn;
    (void)p;
    (void)prefix;
    (void)C;
    (void)nsets;
    (void)set_names;
    GX_ASSERT_MSG(0, "gx_bn_layer_init not implemented");
}

gx_tensor *gx_bn_layer_forward(gx_ctx *ctx, const gx_bn_layer *bn, int set, gx_tensor *x, int training) {
    (void)ctx;
    (void)bn;
    (void)set;
    (void)x;
    (void)training;
    GX_ASSERT_MSG(0, "gx_bn_layer_forward not implemented");
}
