/*
 * test_elem.c — elementwise ops forward on hand-checked values, broadcasting
 * of every pattern against a naive index-by-index reference, and the
 * backward special cases (clamp boundaries, abs at 0, maximum ties).
 */
#include "gx_test.h"

#include "gx_math.h"
#include <string.h>

#define E1 2.718281828459045

static gx_tensor *vec(gx_ctx *ctx, int n, const gx_real *v) {
    return gx_tensor_from(ctx, 1, GX_SHAPE(n), v);
}


GX_TEST(elem_unary_hand_values) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    const gx_real xv[5] = { -2, -0.5, 0, 0.5, 2 };
    gx_tensor *x = vec(&ctx, 5, xv);
    gx_test_expect(T, "relu", gx_relu(&ctx, x), (double[]){ 0, 0, 0, 0.5, 2 }, 5, 1e-6, 1e-6);
    gx_test_expect(T, "leaky", gx_leaky_relu(&ctx, x, 0.1), (double[]){ -0.2, -0.05, 0, 0.5, 2 }, 5, 1e-6, 1e-6);
    gx_test_expect(T, "abs", gx_abs(&ctx, x), (double[]){ 2, 0.5, 0, 0.5, 2 }, 5, 1e-6, 1e-6);
    gx_test_expect(T, "neg", gx_neg(&ctx, x), (double[]){ 2, 0.5, 0, -0.5, -2 }, 5, 1e-6, 1e-6);
    gx_test_expect(T, "square", gx_square(&ctx, x), (double[]){ 4, 0.25, 0, 0.25, 4 }, 5, 1e-6, 1e-6);
    gx_test_expect(T, "affine", gx_affine(&ctx, x, 2, 1), (double[]){ -3, 0, 1, 2, 5 }, 5, 1e-6, 1e-6);
    gx_test_expect(T, "scale", gx_scale(&ctx, x, -3), (double[]){ 6, 1.5, 0, -1.5, -6 }, 5, 1e-6, 1e-6);
    gx_test_expect(T, "add_scalar", gx_add_scalar(&ctx, x, 0.25), (double[]){ -1.75, -0.25, 0.25, 0.75, 2.25 }, 5, 1e-6, 1e-6);
    gx_test_expect(T, "pow3", gx_pow_scalar(&ctx, x, 3), (double[]){ -8, -0.125, 0, 0.125, 8 }, 5, 1e-6, 1e-6);
    gx_test_expect(T, "clamp", gx_clamp(&ctx, x, -1, 1), (double[]){ -1, -0.5, 0, 0.5, 1 }, 5, 1e-6, 1e-6);
    /* step: strictly above t; the threshold itself and NaN give 0. */
    gx_test_expect(T, "step", gx_step(&ctx, x, 0.5), (double[]){ 0, 0, 0, 0, 1 }, 5, 0, 0);
    gx_test_expect(T, "step_low", gx_step(&ctx, x, -0.6), (double[]){ 0, 1, 1, 1, 1 }, 5, 0, 0);
    gx_tensor *nan = gx_tensor_from(&ctx, 1, GX_SHAPE(2), (gx_real[]){ (gx_real)NAN, (gx_real)INFINITY });
    gx_test_expect(T, "step_nan_inf", gx_step(&ctx, nan, 0), (double[]){ 0, 1 }, 2, 0, 0);
    /* sigmoid(0) = 1/2, sigmoid(2) = 1/(1+e^-2); tanh(0.5) = (e-1)/(e+1). */
    gx_tensor *s = gx_sigmoid(&ctx, x);
    CHECK_NEAR(s->data[2], 0.5, 1e-7);
    CHECK_NEAR(s->data[4], 1.0 / (1.0 + 1.0 / (E1 * E1)), 1e-7);
    CHECK_NEAR(s->data[0] + s->data[4], 1.0, 1e-7);       /* symmetry */
    CHECK_NEAR(gx_tanh(&ctx, x)->data[3], (E1 - 1) / (E1 + 1), 1e-7);
    /* silu(2) = 2 sigmoid(2); gelu(0) = 0, gelu(2) = 2 Phi(2) = 1.954499736. */
    CHECK_NEAR(gx_silu(&ctx, x)->data[4], 2.0 / (1.0 + 1.0 / (E1 * E1)), 1e-6);
    CHECK_NEAR(gx_gelu(&ctx, x)->data[2], 0.0, 1e-7);
    CHECK_NEAR(gx_gelu(&ctx, x)->data[4], 1.954499736, 1e-6);
    /* softplus(0) = ln 2; above the threshold 20 it is the identity. */
    const gx_real big[2] = { 0, 30 };
    gx_tensor *sp = gx_softplus(&ctx, vec(&ctx, 2, big));
    CHECK_NEAR(sp->data[0], 0.693147181, 1e-7);
    CHECK(sp->data[1] == (gx_real)30);
    gx_ctx_free(&ctx);
}

GX_TEST(elem_math_hand_values) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    const gx_real pv[4] = { 1, (gx_real)E1, 4, 9 };
    gx_tensor *p = vec(&ctx, 4, pv);
    gx_test_expect(T, "sqrt", gx_sqrt(&ctx, p), (double[]){ 1, 1.6487212707, 2, 3 }, 4, 1e-6, 1e-6);
    gx_test_expect(T, "log", gx_log(&ctx, p), (double[]){ 0, 1, 1.3862943611, 2.1972245773 }, 4, 1e-6, 1e-6);
    const gx_real av[3] = { 0, 1, -1 };
    gx_tensor *a = vec(&ctx, 3, av);
    gx_test_expect(T, "exp", gx_exp(&ctx, a), (double[]){ 1, E1, 1 / E1 }, 3, 1e-6, 1e-6);
    gx_test_expect(T, "atan", gx_atan(&ctx, a), (double[]){ 0, GX_PI / 4, -GX_PI / 4 }, 3, 1e-6, 1e-6);
    const gx_real tv[3] = { 0, (gx_real)(GX_PI / 2), (gx_real)(GX_PI / 6) };
    gx_tensor *t = vec(&ctx, 3, tv);
    gx_test_expect(T, "sin", gx_sin(&ctx, t), (double[]){ 0, 1, 0.5 }, 3, 1e-6, 1e-6);
    gx_test_expect(T, "cos", gx_cos(&ctx, t), (double[]){ 1, 0, 0.8660254038 }, 3, 1e-6, 1e-6);
    gx_test_expect(T, "pow0.5", gx_pow_scalar(&ctx, p, 0.5), (double[]){ 1, 1.6487212707, 2, 3 }, 4, 1e-6, 1e-6);
    gx_ctx_free(&ctx);
}

/* Runs backward with a ones seed and returns x's gradient. */
static gx_real *grad_of(gx_ctx *ctx, gx_tensor *y, gx_tensor *x) {
    gx_backward(ctx, y, NULL);
    return x->grad;
}

GX_TEST(elem_clamp_and_abs_gradient_at_kinks) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    ctx.grad_enabled = 1;
    /* clamp to [0, 1]: boundaries pass the gradient (PyTorch), outside 0. */
    gx_tensor *x = vec(&ctx, 5, (gx_real[]){ -1, 0, 0.5, 1, 2 });
    x->requires_grad = 1;
    gx_real *g = grad_of(&ctx, gx_clamp(&ctx, x, 0, 1), x);
    gx_test_allclose(T, "clamp grad", g, (gx_real[]){ 0, 1, 1, 1, 0 }, 5, 0, 0);
    /* abs at 0 has gradient 0; relu at 0 too; leaky at 0 takes the slope;
     * pow with p = 0 has an exact zero gradient, even at x = 0. */
    static const gx_real want[4][3] = { { -1, 0, 1 }, { 0, 0, 1 }, { 0.2f, 0.2f, 1 }, { 0, 0, 0 } };
    for (int op = 0; op < 4; op++) {
        gx_ctx_reset(&ctx);                 /* fresh tape for each op */
        gx_tensor *z = vec(&ctx, 3, (gx_real[]){ -1, 0, 2 });
        z->requires_grad = 1;
        gx_tensor *y = op == 0 ? gx_abs(&ctx, z) : op == 1 ? gx_relu(&ctx, z)
                     : op == 2 ? gx_leaky_relu(&ctx, z, 0.2) : gx_pow_scalar(&ctx, z, 0);
        gx_test_allclose(T, "kink grad", grad_of(&ctx, y, z), want[op], 3, 0, 1e-7);
    }
    gx_ctx_free(&ctx);
}

GX_TEST(elem_broadcast_shape_rules) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    int64_t s[GX_MAX_DIMS];
    gx_tensor *a = gx_tensor_zeros(&ctx, 3, GX_SHAPE(2, 3, 5));
    int nd = gx_broadcast_shape(a, gx_tensor_zeros(&ctx, 1, GX_SHAPE(5)), s);
    CHECK(nd == 3 && s[0] == 2 && s[1] == 3 && s[2] == 5);
    nd = gx_broadcast_shape(a, gx_tensor_zeros(&ctx, 2, GX_SHAPE(3, 1)), s);
    CHECK(nd == 3 && s[0] == 2 && s[1] == 3 && s[2] == 5);
    nd = gx_broadcast_shape(gx_tensor_zeros(&ctx, 2, GX_SHAPE(4, 1)), gx_tensor_zeros(&ctx, 1, GX_SHAPE(3)), s);
    CHECK(nd == 2 && s[0] == 4 && s[1] == 3);
    nd = gx_broadcast_shape(gx_tensor_scalar(&ctx, 1), a, s);
    CHECK(nd == 3 && s[2] == 5);
    gx_ctx_free(&ctx);
}

GX_TEST(elem_binary_hand_values) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    /* [2,3] op [3] (bias) and [2,3] op [2,1] (per row). */
    gx_tensor *a = gx_tensor_from(&ctx, 2, GX_SHAPE(2, 3), (gx_real[]){ 1, 2, 3, 4, 5, 6 });
    gx_tensor *b = vec(&ctx, 3, (gx_real[]){ 10, 20, 30 });
    gx_tensor *c = gx_tensor_from(&ctx, 2, GX_SHAPE(2, 1), (gx_real[]){ 2, 4 });
    gx_test_expect(T, "add bias", gx_add(&ctx, a, b), (double[]){ 11, 22, 33, 14, 25, 36 }, 6, 1e-6, 1e-6);
    gx_test_expect(T, "sub bias", gx_sub(&ctx, a, b), (double[]){ -9, -18, -27, -6, -15, -24 }, 6, 1e-6, 1e-6);
    gx_test_expect(T, "mul row", gx_mul(&ctx, a, c), (double[]){ 2, 4, 6, 16, 20, 24 }, 6, 1e-6, 1e-6);
    gx_test_expect(T, "div row", gx_div(&ctx, a, c), (double[]){ 0.5, 1, 1.5, 1, 1.25, 1.5 }, 6, 1e-6, 1e-6);
    gx_test_expect(T, "max row", gx_maximum(&ctx, a, c), (double[]){ 2, 2, 3, 4, 5, 6 }, 6, 1e-6, 1e-6);
    /* Outer product [2,1] op [3] -> [2,3]; scalar on the left. */
    gx_tensor *o = gx_mul(&ctx, c, b);
    CHECK(o->ndim == 2 && o->shape[0] == 2 && o->shape[1] == 3);
    gx_test_expect(T, "outer", o, (double[]){ 20, 40, 60, 40, 80, 120 }, 6, 1e-6, 1e-6);
    gx_test_expect(T, "scalar-a", gx_sub(&ctx, gx_tensor_scalar(&ctx, 1), b), (double[]){ -9, -19, -29 }, 3, 1e-6, 1e-6);
    gx_ctx_free(&ctx);
}

/* ---- every broadcast pattern against a naive reference --------------------- */

/* Flat index of operand (shape s, ndim ns) for output multi-index idx. */
static int64_t bc_index(int nd, const int64_t *idx, int ns, const int64_t *s) {
    int64_t f = 0;
    for (int k = 0; k < ns; k++) {
        int d = k + nd - ns;
        f = f * s[k] + (s[k] == 1 ? 0 : idx[d]);
    }
    return f;
}

static double naive_op(int op, double x, double y) {
    switch (op) {
    case 0: return x + y;
    case 1: return x - y;
    case 2: return x * y;
    case 3: return x / y;
    default: return x >= y ? x : y;
    }
}

typedef struct { int na; int64_t a[4]; int nb; int64_t b[4]; } bc_case;

GX_TEST(elem_binary_broadcast_matches_naive_every_pattern) {
    static const bc_case cases[] = {
        { 3, { 2, 3, 5 }, 3, { 2, 3, 5 } },          /* equal */
        { 3, { 2, 3, 5 }, 1, { 1 } },                /* 1-element b */
        { 3, { 2, 3, 5 }, 0, { 0 } },                /* 0-D b */
        { 0, { 0 }, 2, { 3, 7 } },                   /* 0-D a */
        { 3, { 2, 3, 5 }, 1, { 5 } },                /* bias */
        { 3, { 2, 3, 5 }, 2, { 3, 1 } },             /* middle */
        { 4, { 4, 3, 5, 7 }, 4, { 1, 3, 1, 1 } },    /* per channel */
        { 4, { 4, 3, 5, 7 }, 3, { 3, 1, 1 } },       /* per channel, 3-D */
        { 3, { 3, 1, 5 }, 3, { 1, 4, 1 } },          /* both broadcast */
        { 1, { 5 }, 3, { 2, 3, 5 } },                /* a broadcast */
        { 2, { 3, 40001 }, 1, { 40001 } },           /* big bias: chunks + threads */
        { 1, { 70001 }, 1, { 1 } },                  /* big scalar */
        { 4, { 2, 9, 64, 65 }, 4, { 1, 9, 1, 1 } },  /* big per channel */
    };
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 22);
    gx_rng rng;
    gx_rng_init(&rng, 7);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const bc_case *k = &cases[c];
        gx_tensor *a = gx_test_const(&ctx, &rng, k->na, k->a, -2, 2);
        gx_tensor *b = gx_test_const(&ctx, &rng, k->nb, k->b, 0.5, 2);
        int64_t os[GX_MAX_DIMS];
        int nd = gx_broadcast_shape(a, b, os);
        int64_t N = gx_shape_numel(nd, os);
        gx_real *want = gx_ctx_alloc(&ctx, (size_t)N * sizeof(gx_real));
        for (int op = 0; op < 5; op++) {
            gx_tensor *y = op == 0 ? gx_add(&ctx, a, b) : op == 1 ? gx_sub(&ctx, a, b)
                         : op == 2 ? gx_mul(&ctx, a, b) : op == 3 ? gx_div(&ctx, a, b)
                         : gx_maximum(&ctx, a, b);
            CHECK(y->numel == N && y->ndim == nd);
            int64_t idx[GX_MAX_DIMS] = {0};
            for (int64_t f = 0; f < N; f++) {
                int64_t r = f;
                for (int d = nd - 1; d >= 0; d--) { idx[d] = r % os[d]; r /= os[d]; }
                double x = a->data[bc_index(nd, idx, k->na, k->a)];
                double z = b->data[bc_index(nd, idx, k->nb, k->b)];
                want[f] = (gx_real)naive_op(op, x, z);
            }
            char label[64];
            snprintf(label, sizeof label, "case %zu op %d", c, op);
            gx_test_allclose(T, label, y->data, want, N, 0, 0);   /* bit-exact */
        }
        gx_ctx_reset(&ctx);
    }
    gx_ctx_free(&ctx);
}

GX_TEST(elem_reduce_broadcast_add_matches_naive) {
    static const bc_case cases[] = {   /* a = source (full) shape, b = target */
        { 2, { 2, 3 }, 1, { 3 } },
        { 2, { 2, 3 }, 2, { 2, 1 } },
        { 2, { 2, 3 }, 0, { 0 } },
        { 4, { 4, 3, 5, 7 }, 4, { 1, 3, 1, 1 } },
        { 4, { 4, 3, 5, 7 }, 3, { 3, 1, 7 } },
        { 3, { 3, 4, 5 }, 3, { 3, 4, 5 } },
        { 3, { 3, 4, 600 }, 2, { 1, 600 } },          /* several column blocks */
        { 3, { 2, 300, 301 }, 3, { 2, 1, 301 } },
    };
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 22);
    gx_rng rng;
    gx_rng_init(&rng, 9);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const bc_case *k = &cases[c];
        gx_tensor *g = gx_test_const(&ctx, &rng, k->na, k->a, -1, 1);
        gx_tensor *acc = gx_test_const(&ctx, &rng, k->nb, k->b, -1, 1);
        double *want = gx_ctx_alloc(&ctx, (size_t)acc->numel * sizeof(double));
        for (int64_t i = 0; i < acc->numel; i++) want[i] = acc->data[i];
        int64_t idx[GX_MAX_DIMS];
        for (int64_t f = 0; f < g->numel; f++) {
            int64_t r = f;
            for (int d = k->na - 1; d >= 0; d--) { idx[d] = r % k->a[d]; r /= k->a[d]; }
            want[bc_index(k->na, idx, k->nb, k->b)] += g->data[f];
        }
        gx_reduce_broadcast_add(acc->data, k->nb, k->b, g->data, k->na, k->a);
        gx_real *w = gx_ctx_alloc(&ctx, (size_t)acc->numel * sizeof(gx_real));
        for (int64_t i = 0; i < acc->numel; i++) w[i] = (gx_real)want[i];
        char label[64];
        snprintf(label, sizeof label, "reduce case %zu", c);
        gx_test_allclose(T, label, acc->data, w, acc->numel, 1e-5, 1e-5);
        gx_ctx_reset(&ctx);
    }
    gx_ctx_free(&ctx);
}

GX_TEST(elem_broadcast_backward_hand_values) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    ctx.grad_enabled = 1;
    gx_tensor *a = gx_tensor_from(&ctx, 2, GX_SHAPE(2, 3), (gx_real[]){ 1, 2, 3, 4, 5, 6 });
    gx_tensor *b = vec(&ctx, 3, (gx_real[]){ 1, 2, 4 });
    a->requires_grad = b->requires_grad = 1;
    /* y = a / b, seed ones: da = 1/b, db = -sum_rows(a) / b^2 = -[5, 7/4, 9/16]. */
    gx_backward(&ctx, gx_div(&ctx, a, b), NULL);
    gx_test_allclose(T, "div da", a->grad, (gx_real[]){ 1, 0.5f, 0.25f, 1, 0.5f, 0.25f }, 6, 0, 1e-7);
    gx_test_allclose(T, "div db", b->grad, (gx_real[]){ -5, -1.75f, -0.5625f }, 3, 0, 1e-6);
    /* maximum ties send the gradient to a. */
    gx_ctx_reset(&ctx);
    gx_tensor *p = vec(&ctx, 2, (gx_real[]){ 1, 2 }), *q = vec(&ctx, 2, (gx_real[]){ 1, 3 });
    p->requires_grad = q->requires_grad = 1;
    gx_backward(&ctx, gx_maximum(&ctx, p, q), NULL);
    gx_test_allclose(T, "max da", p->grad, (gx_real[]){ 1, 0 }, 2, 0, 0);
    gx_test_allclose(T, "max db", q->grad, (gx_real[]){ 0, 1 }, 2, 0, 0);
    gx_ctx_free(&ctx);
}

GX_TEST(elem_constant_inputs_record_nothing) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 16);
    ctx.grad_enabled = 1;
    gx_tensor *x = vec(&ctx, 2, (gx_real[]){ 1, 2 });
    gx_tensor *y = gx_add(&ctx, gx_exp(&ctx, x), x);
    CHECK(ctx.n_nodes == 0 && !y->requires_grad);
    x->requires_grad = 1;
    y = gx_add(&ctx, gx_exp(&ctx, x), x);
    CHECK(ctx.n_nodes == 2 && y->requires_grad);
    gx_ctx_free(&ctx);
}

GX_TEST(elem_results_do_not_depend_on_thread_count) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 24);
    gx_rng rng;
    gx_rng_init(&rng, 11);
    /* Big enough to take the OpenMP paths; compared bit for bit. */
    gx_tensor *x = gx_test_const(&ctx, &rng, 4, GX_SHAPE(8, 16, 33, 35), -1, 1);
    gx_tensor *c = gx_test_const(&ctx, &rng, 4, GX_SHAPE(1, 16, 1, 1), 0.5, 1);
    gx_real *r[2][3];
    int th = gx_get_threads();
    for (int k = 0; k < 2; k++) {
        gx_set_threads(k ? 2 : 1);
        r[k][0] = gx_mul(&ctx, x, c)->data;
        r[k][1] = gx_tensor_zeros(&ctx, 4, c->shape)->data;
        gx_reduce_broadcast_add(r[k][1], 4, c->shape, x->data, 4, x->shape);
        r[k][2] = gx_tensor_zeros(&ctx, 1, GX_SHAPE(35))->data;
        gx_reduce_broadcast_add(r[k][2], 1, GX_SHAPE(35), x->data, 4, x->shape);
    }
    gx_set_threads(th);
    gx_test_allclose(T, "mul", r[0][0], r[1][0], x->numel, 0, 0);
    gx_test_allclose(T, "per-channel reduce", r[0][1], r[1][1], 16, 0, 0);
    gx_test_allclose(T, "bias reduce", r[0][2], r[1][2], 35, 0, 0);
    gx_ctx_free(&ctx);
}
