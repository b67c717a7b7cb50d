/*
 * test_grad_elem.c — finite-difference gradient checks (f64) of every
 * elementwise op on two shapes with odd sizes, and of every broadcasting
 * binary op on every broadcast pattern, both inputs differentiable.
 *
 * Inputs stay away from kinks: the random values almost surely miss 0 (relu,
 * abs, leaky) and the clamp edges by far more than the 1e-6 step; log, sqrt
 * and fractional powers get positive inputs; div gets |b| >= 0.5.
 */
#include "gx_test.h"

typedef struct {
    const char *name;
    gx_tensor *(*f)(gx_ctx *, gx_tensor *, double, double);
    double p0, p1, lo, hi;
} unary_case;

/* Adapters giving every unary op the same (ctx, x, p0, p1) signature. */
#define ADAPT0(op) static gx_tensor *a_##op(gx_ctx *c, gx_tensor *x, double p, double q) { (void)p; (void)q; return gx_##op(c, x); }
#define ADAPT1(op) static gx_tensor *a_##op(gx_ctx *c, gx_tensor *x, double p, double q) { (void)q; return gx_##op(c, x, p); }
#define ADAPT2(op) static gx_tensor *a_##op(gx_ctx *c, gx_tensor *x, double p, double q) { return gx_##op(c, x, p, q); }
ADAPT0(relu) ADAPT1(leaky_relu) ADAPT0(gelu) ADAPT0(silu) ADAPT0(sigmoid) ADAPT0(softplus)
ADAPT0(tanh) ADAPT0(exp) ADAPT0(log) ADAPT0(atan) ADAPT0(sin) ADAPT0(cos) ADAPT0(sqrt)
ADAPT0(square) ADAPT0(abs) ADAPT0(neg) ADAPT2(affine) ADAPT1(scale) ADAPT1(add_scalar)
ADAPT1(pow_scalar) ADAPT2(clamp) ADAPT1(step)

static const unary_case UNARY[] = {
    { "relu", a_relu, 0, 0, -2, 2 },
    { "leaky_relu", a_leaky_relu, 0.1, 0, -2, 2 },
    { "gelu", a_gelu, 0, 0, -3, 3 },
    { "silu", a_silu, 0, 0, -3, 3 },
    { "sigmoid", a_sigmoid, 0, 0, -4, 4 },
    { "softplus", a_softplus, 0, 0, -4, 4 },
    { "softplus_linear", a_softplus, 0, 0, 20.5, 25 },   /* past the threshold */
    { "tanh", a_tanh, 0, 0, -2, 2 },
    { "exp", a_exp, 0, 0, -2, 2 },
    { "log", a_log, 0, 0, 0.2, 3 },
    { "atan", a_atan, 0, 0, -3, 3 },
    { "sin", a_sin, 0, 0, -3, 3 },
    { "cos", a_cos, 0, 0, -3, 3 },
    { "sqrt", a_sqrt, 0, 0, 0.2, 3 },
    { "square", a_square, 0, 0, -2, 2 },
    { "abs", a_abs, 0, 0, -2, 2 },
    { "neg", a_neg, 0, 0, -2, 2 },
    { "affine", a_affine, -1.5, 0.25, -2, 2 },
    { "scale", a_scale, 2.5, 0, -2, 2 },
    { "add_scalar", a_add_scalar, 3, 0, -2, 2 },
    { "pow_scalar_2.5", a_pow_scalar, 2.5, 0, 0.3, 2 },
    { "pow_scalar_-1", a_pow_scalar, -1, 0, 0.5, 2 },
    { "pow_scalar_3_neg", a_pow_scalar, 3, 0, -2, 2 },   /* integer p, any sign */
    { "clamp", a_clamp, -0.5, 0.7, -1, 1 },
    { "step", a_step, 0.25, 0, -1, 1 },                  /* zero gradient away from t */
};

static gx_tensor *unary_fn(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const unary_case *u = arg;
    return u->f(ctx, in[0], u->p0, u->p1);
}

GX_TEST(elem_grad_every_unary_op_two_shapes) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    gx_rng rng;
    gx_rng_init(&rng, 3);
    for (size_t k = 0; k < sizeof UNARY / sizeof UNARY[0]; k++) {
        const unary_case *u = &UNARY[k];
        gx_tensor *a = gx_test_leaf(&ctx, &rng, 1, GX_SHAPE(7), u->lo, u->hi);
        gx_tensor *b = gx_test_leaf(&ctx, &rng, 3, GX_SHAPE(3, 1, 5), u->lo, u->hi);
        CHECK(gx_gradcheck(T, u->name, unary_fn, (void *)u, 1, &a, GX_GC_DEFAULTS));
        CHECK(gx_gradcheck(T, u->name, unary_fn, (void *)u, 1, &b, GX_GC_DEFAULTS));
    }
    gx_ctx_free(&ctx);
}

/* ---- broadcasting binary ops --------------------------------------------- */

typedef gx_tensor *(*binary_op)(gx_ctx *, gx_tensor *, gx_tensor *);

static gx_tensor *binary_fn(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    return (*(binary_op *)arg)(ctx, in[0], in[1]);
}

typedef struct { int na; int64_t a[4]; int nb; int64_t b[4]; } shape_pair;

static const shape_pair PAIRS[] = {
    { 2, { 3, 5 }, 2, { 3, 5 } },             /* equal */
    { 2, { 3, 5 }, 0, { 0 } },                /* 0-D scalar b */
    { 1, { 1 }, 2, { 3, 5 } },                /* 1-element a */
    { 3, { 2, 3, 5 }, 1, { 5 } },             /* bias */
    { 3, { 2, 3, 5 }, 2, { 3, 1 } },          /* middle */
    { 4, { 2, 3, 4, 5 }, 4, { 1, 3, 1, 1 } }, /* per channel */
    { 4, { 2, 3, 4, 5 }, 3, { 3, 1, 1 } },    /* per channel, 3-D b */
    { 3, { 3, 1, 5 }, 3, { 1, 4, 1 } },       /* both broadcast */
};

GX_TEST(elem_grad_binary_ops_every_broadcast_pattern) {
    static const struct { const char *name; binary_op f; } OPS[] = {
        { "add", gx_add }, { "sub", gx_sub }, { "mul", gx_mul }, { "div", gx_div }, { "maximum", gx_maximum },
    };
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 18);
    gx_rng rng;
    gx_rng_init(&rng, 4);
    for (size_t o = 0; o < sizeof OPS / sizeof OPS[0]; o++)
        for (size_t p = 0; p < sizeof PAIRS / sizeof PAIRS[0]; p++) {
            const shape_pair *s = &PAIRS[p];
            gx_tensor *in[2];
            in[0] = gx_test_leaf(&ctx, &rng, s->na, s->a, -2, 2);
            /* div needs b away from 0; a sign flip keeps negatives covered. */
            in[1] = gx_test_leaf(&ctx, &rng, s->nb, s->b, 0.5, 2);
            if (o != 3) for (int64_t i = 0; i < in[1]->numel; i += 2) in[1]->data[i] -= 2.5;
            char label[64];
            snprintf(label, sizeof label, "%s pair %zu", OPS[o].name, p);
            binary_op f = OPS[o].f;
            CHECK(gx_gradcheck(T, label, binary_fn, &f, 2, in, GX_GC_DEFAULTS));
            /* Only one side differentiable: the other must be skipped cleanly. */
            in[0]->requires_grad = 0;
            CHECK(gx_gradcheck(T, label, binary_fn, &f, 2, in, GX_GC_DEFAULTS));
        }
    gx_ctx_free(&ctx);
}
