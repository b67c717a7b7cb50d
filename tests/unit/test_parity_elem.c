/*
 * test_parity_elem.c — elementwise ops (f32) against PyTorch float64 results
 * from tests/fixtures/elem.safetensors (written by tests/parity/gen_elem.py;
 * the scalar arguments below must match that script's tables).
 *
 * Tolerances: outputs and gradients atol 1e-5 + rtol 1e-5. The engine
 * computes each element in double and rounds once, so the error is ~1 f32
 * ulp (6e-8 relative); broadcast gradients sum up to ~140 f32 products in
 * double, and the upstream gradient is stored rounded to f32, so 1e-5
 * leaves two orders of margin while still catching any real bug.
 */
#include "gx_test.h"

#include <string.h>

#define ATOL 1e-5
#define RTOL 1e-5

typedef struct { const char *name; gx_tensor *(*f)(gx_ctx *, gx_tensor *); } unary_case;

static gx_tensor *p_leaky(gx_ctx *c, gx_tensor *x)  { return gx_leaky_relu(c, x, 0.1); }
static gx_tensor *p_affine(gx_ctx *c, gx_tensor *x) { return gx_affine(c, x, -1.5, 0.25); }
static gx_tensor *p_scale(gx_ctx *c, gx_tensor *x)  { return gx_scale(c, x, 2.5); }
static gx_tensor *p_adds(gx_ctx *c, gx_tensor *x)   { return gx_add_scalar(c, x, 3.0); }
static gx_tensor *p_pow(gx_ctx *c, gx_tensor *x)    { return gx_pow_scalar(c, x, 2.5); }
static gx_tensor *p_clamp(gx_ctx *c, gx_tensor *x)  { return gx_clamp(c, x, -0.5, 0.7); }
static gx_tensor *p_step(gx_ctx *c, gx_tensor *x)   { return gx_step(c, x, 0.25); }

static const unary_case UNARY[] = {
    { "relu", gx_relu }, { "leaky_relu", p_leaky }, { "gelu", gx_gelu }, { "silu", gx_silu },
    { "sigmoid", gx_sigmoid }, { "softplus", gx_softplus }, { "softplus_big", gx_softplus },
    { "tanh", gx_tanh }, { "exp", gx_exp }, { "log", gx_log }, { "atan", gx_atan },
    { "sin", gx_sin }, { "cos", gx_cos }, { "sqrt", gx_sqrt }, { "square", gx_square },
    { "abs", gx_abs }, { "neg", gx_neg }, { "affine", p_affine }, { "scale", p_scale },
    { "add_scalar", p_adds }, { "pow_scalar", p_pow }, { "clamp", p_clamp },
    { "step", p_step },
};



GX_TEST(elem_parity_unary_ops_vs_pytorch) {
    gx_st_file f;
    if (!gx_fixture_open(T, &f, "elem.safetensors")) return;
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    ctx.grad_enabled = 1;
    for (size_t k = 0; k < sizeof UNARY / sizeof UNARY[0]; k++) {
        const char *n = UNARY[k].name;
        gx_tensor *x = gx_fixture_tensorf(T, &ctx, &f, "%s.x", n);
        gx_tensor *gout = gx_fixture_tensorf(T, &ctx, &f, "%s.gout", n);
        if (!x || !gout) continue;
        x->requires_grad = 1;
        gx_tensor *y = UNARY[k].f(&ctx, x);
        CHECK_MSG(y->numel == gout->numel, "%s: output size", n);
        gx_fixture_checkf(T, &f, y->data, y->numel, ATOL, RTOL, "%s.out", n);
        gx_backward(&ctx, y, gout->data);
        gx_fixture_checkf(T, &f, x->grad, x->numel, ATOL, RTOL, "%s.gx", n);
        gx_ctx_reset(&ctx);
    }
    gx_ctx_free(&ctx);
    gx_st_close(&f);
}

GX_TEST(elem_parity_broadcast_binary_ops_vs_pytorch) {
    static const struct { const char *name; gx_tensor *(*f)(gx_ctx *, gx_tensor *, gx_tensor *); } OPS[] = {
        { "add", gx_add }, { "sub", gx_sub }, { "mul", gx_mul }, { "div", gx_div }, { "maximum", gx_maximum },
    };
    static const char *PATTERNS[] = { "equal", "scalar", "bias", "middle", "chan4", "chan3" };
    gx_st_file f;
    if (!gx_fixture_open(T, &f, "elem.safetensors")) return;
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    ctx.grad_enabled = 1;
    for (size_t o = 0; o < sizeof OPS / sizeof OPS[0]; o++)
        for (size_t p = 0; p < sizeof PATTERNS / sizeof PATTERNS[0]; p++) {
            char base[64];
            snprintf(base, sizeof base, "%s.%s", OPS[o].name, PATTERNS[p]);
            gx_tensor *a = gx_fixture_tensorf(T, &ctx, &f, "%s.a", base);
            gx_tensor *b = gx_fixture_tensorf(T, &ctx, &f, "%s.b", base);
            gx_tensor *gout = gx_fixture_tensorf(T, &ctx, &f, "%s.gout", base);
            if (!a || !b || !gout) continue;
            a->requires_grad = b->requires_grad = 1;
            gx_tensor *y = OPS[o].f(&ctx, a, b);
            CHECK_MSG(y->numel == gout->numel, "%s: output size %lld", base, (long long)y->numel);
            gx_fixture_checkf(T, &f, y->data, y->numel, ATOL, RTOL, "%s.out", base);
            gx_backward(&ctx, y, gout->data);
            gx_fixture_checkf(T, &f, a->grad, a->numel, ATOL, RTOL, "%s.ga", base);
            gx_fixture_checkf(T, &f, b->grad, b->numel, ATOL, RTOL, "%s.gb", base);
            gx_ctx_reset(&ctx);
        }
    gx_ctx_free(&ctx);
    gx_st_close(&f);
}
