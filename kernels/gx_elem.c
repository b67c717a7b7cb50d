/* gx_elem.c — STUB: to be replaced by the real implementation. */
#include "gx_impl.h"

gx_tensor *gx_relu(gx_ctx *ctx, gx_tensor *x) {
    (void)ctx;
    (void)x;
    GX_ASSERT_MSG(0, "gx_relu not implemented");
}

gx_tensor *gx_leaky_relu(gx_ctx *ctx, gx_tensor *x, double slope) {
    (void)ctx;
    (void)x;
    (void)slope;
    GX_ASSERT_MSG(0, "gx_leaky_relu not implemented");
}

gx_tensor *gx_gelu(gx_ctx *ctx, gx_tensor *x) {
    (void)ctx;
    (void)x;
    GX_ASSERT_MSG(0, "gx_gelu not implemented");
}

gx_tensor *gx_silu(gx_ctx *ctx, gx_tensor *x) {
    (void)ctx;
    (void)x;
    GX_ASSERT_MSG(0, "gx_silu not implemented");
}

gx_tensor *gx_sigmoid(gx_ctx *ctx, gx_tensor *x) {
    (void)ctx;
    (void)x;
    GX_ASSERT_MSG(0, "gx_sigmoid not implemented");
}

gx_tensor *gx_softplus(gx_ctx *ctx, gx_tensor *x) {
    (void)ctx;
    (void)x;
    GX_ASSERT_MSG(0, "gx_softplus not implemented");
}

gx_tensor *gx_tanh(gx_ctx *ctx, gx_tensor *x) {
    (void)ctx;
    (void)x;
    GX_ASSERT_MSG(0, "gx_tanh not implemented");
}

gx_tensor *gx_exp(gx_ctx *ctx, gx_tensor *x) {
    (void)ctx;
    (void)x;
    GX_ASSERT_MSG(0, "gx_exp not implemented");
}

gx_tensor *gx_log(gx_ctx *ctx, gx_tensor *x) {
    (void)ctx;
    (void)x;
    GX_ASSERT_MSG(0, "gx_log not implemented");
}

gx_tensor *gx_atan(gx_ctx *ctx, gx_tensor *x) {
    (void)ctx;
    (void)x;
    GX_ASSERT_MSG(0, "gx_atan not implemented");
}

gx_tensor *gx_sin(gx_ctx *ctx, gx_tensor *x) {
    (void)ctx;
    (void)x;
    GX_ASSERT_MSG(0, "gx_sin not implemented");
}

gx_tensor *gx_cos(gx_ctx *ctx, gx_tensor *x) {
    (void)ctx;
    (void)x;
    GX_ASSERT_MSG(0, "gx_cos not implemented");
}

gx_tensor *gx_sqrt(gx_ctx *ctx, gx_tensor *x) {
    (void)ctx;
    (void)x;
    GX_ASSERT_MSG(0, "gx_sqrt not implemented");
}

gx_tensor *gx_square(gx_ctx *ctx, gx_tensor *x) {
    (void)ctx;
    (void)x;
    GX_ASSERT_MSG(0, "gx_square not implemented");
}

gx_tensor *gx_abs(gx_ctx *ctx, gx_tensor *x) {
    (void)ctx;
    (void)x;
    GX_ASSERT_MSG(0, "gx_abs not implemented");
}

gx_tensor *gx_neg(gx_ctx *ctx, gx_tensor *x) {
    (void)ctx;
    (void)x;
    GX_ASSERT_MSG(0, "gx_neg not implemented");
}

gx_tensor *gx_affine(gx_ctx *ctx, gx_tensor *x, double a, double b) {
    (void)ctx;
    (void)x;
    (void)a;
    (void)b;
    GX_ASSERT_MSG(0, "gx_affine not implemented");
}

gx_tensor *gx_scale(gx_ctx *ctx, gx_tensor *x, double a) {
    (void)ctx;
    (void)x;
    (void)a;
    GX_ASSERT_MSG(0, "gx_scale not implemented");
}

gx_tensor *gx_add_scalar(gx_ctx *ctx, gx_tensor *x, double b) {
    (void)ctx;
    (void)x;
    (void)b;
    GX_ASSERT_MSG(0, "gx_add_scalar not implemented");
}

gx_tensor *gx_pow_scalar(gx_ctx *ctx, gx_tensor *x, double p) {
    (void)ctx;
    (void)x;
    (void)p;
    GX_ASSERT_MSG(0, "gx_pow_scalar not implemented");
}

gx_tensor *gx_clamp(gx_ctx *ctx, gx_tensor *x, double lo, double hi) {
    (void)ctx;
    (void)x;
    (void)lo;
    (void)hi;
    GX_ASSERT_MSG(0, "gx_clamp not implemented");
}

gx_tensor *gx_add(gx_ctx *ctx, gx_tensor *a, gx_tensor *b) {
    (void)ctx;
    (void)a;
    (void)b;
    GX_ASSERT_MSG(0, "gx_add not implemented");
}

gx_tensor *gx_sub(gx_ctx *ctx, gx_tensor *a, gx_tensor *b) {
    (void)ctx;
    (void)a;
    (void)b;
    GX_ASSERT_MSG(0, "gx_sub not implemented");
}

gx_tensor *gx_mul(gx_ctx *ctx, gx_tensor *a, gx_tensor *b) {
    (void)ctx;
    (void)a;
    (void)b;
    GX_ASSERT_MSG(0, "gx_mul not implemented");
}

gx_tensor *gx_div(gx_ctx *ctx, gx_tensor *a, gx_tensor *b) {
    (void)ctx;
    (void)a;
    (void)b;
    GX_ASSERT_MSG(0, "gx_div not implemented");
}

gx_tensor *gx_maximum(gx_ctx *ctx, gx_tensor *a, gx_tensor *b) {
    (void)ctx;
    (void)a;
    (void)b;
    GX_ASSERT_MSG(0, "gx_maximum not implemented");
}

int gx_broadcast_shape(const gx_tensor *a, const gx_tensor *b, int64_t *out_shape) {
    (void)a;
    (void)b;
    (void)out_shape;
    GX_ASSERT_MSG(0, "gx_broadcast_shape not implemented");
}

void gx_reduce_broadcast_add(gx_real *acc, int nt, const int64_t *to, const gx_real *g, int nf, const int64_t *from) {
    (void)acc;
    (void)nt;
    (void)to;
    (void)g;
    (void)nf;
    (void)from;
    GX_ASSERT_MSG(0, "gx_reduce_broadcast_add not implemented");
}
