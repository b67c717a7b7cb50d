/*
 * dispatch_elem.c — the elementwise ops (gx_elem.h) and the reductions
 * (gx_reduce.h) reached through the gx API with device tensors
 * (kernels/cuda/gx_cuda_ops_elem.c), against the same calls on the CPU.
 *
 * Tolerances are those of tests/cuda/test_cuda.c for the same launchers:
 * unary ops 1e-6 + 1e-6 (the same double math); binary ops 1e-6 + 1e-6
 * forward and 1e-5 + 1e-5 for their gradients (double sums over the
 * broadcast dims in another order); reductions, softmax, cross-entropy,
 * logsumexp, L2 normalise, sum_all 1e-5 + 1e-5; gather and one-hot exact.
 * Shapes are the launcher test's (odd sizes, every broadcast pattern, a
 * reduction of 3000 rows, every dim of [3, 50, 7]: 50 > a warp's 32 lanes)
 * plus the cases only the dispatch adds: a 0-D operand, an op whose two
 * inputs are one tensor, keepdim and negative dims, exact ties (inputs made
 * with lo == hi are constants), and a chain where three device ops add
 * into one gradient. Builders use only this file's ops, so a failure points
 * here and not at another family's dispatch.
 */
#include "dispatch_util.h"

#include <stdio.h>

#define TOL_UNARY ((gx_gpu_tol){ 1e-6, 1e-6, 1 })   /* test_cuda.c ATOL_E */
#define TOL_BIN_F ((gx_gpu_tol){ 1e-6, 1e-6, 0 })   /* binary forward: ATOL_E */
#define TOL_BIN   ((gx_gpu_tol){ 1e-5, 1e-5, 1 })   /* binary gradients: ATOL_R */
#define TOL_RED   ((gx_gpu_tol){ 1e-5, 1e-5, 1 })   /* ATOL_R: double sums, other order */
#define TOL_COPY  GX_GPU_TOL_EXACT                  /* gather, one-hot */

/* ================================================================ unary */

/* One test per public unary entry: x [37, 41] in the op's domain (the
 * launcher test's ranges: log, sqrt, pow above 0; softplus over both of its
 * thresholds). */
#define UNARY_TEST(NAME, CALL, LO, HI)                                          \
    static gx_tensor *build_##NAME(gx_ctx *ctx, gx_tensor *const *in, void *arg) { \
        (void)arg;                                                              \
        gx_tensor *x = in[0];                                                   \
        return CALL;                                                            \
    }                                                                           \
    GX_TEST(dispatch_elem_##NAME) {                                             \
        gx_gpu_env g;                                                           \
        if (!gx_gpu_open(T, &g)) return;                                        \
        gx_gpu_input in[1] = { { 2, GX_SHAPE(37, 41), LO, HI, 1 } };            \
        gx_gpu_check(T, &g, #NAME, build_##NAME, NULL, 1, in, TOL_UNARY);       \
        gx_gpu_close(&g);                                                       \
    }

UNARY_TEST(relu,       gx_relu(ctx, x),                 -3, 3)
UNARY_TEST(leaky_relu, gx_leaky_relu(ctx, x, 0.1),      -3, 3)
UNARY_TEST(gelu,       gx_gelu(ctx, x),                 -3, 3)
UNARY_TEST(silu,       gx_silu(ctx, x),                 -3, 3)
UNARY_TEST(sigmoid,    gx_sigmoid(ctx, x),              -6, 6)
UNARY_TEST(softplus,   gx_softplus(ctx, x),             -25, 25)
UNARY_TEST(tanh,       gx_tanh(ctx, x),                 -3, 3)
UNARY_TEST(exp,        gx_exp(ctx, x),                  -3, 3)
UNARY_TEST(log,        gx_log(ctx, x),                  0.1, 3)
UNARY_TEST(atan,       gx_atan(ctx, x),                 -3, 3)
UNARY_TEST(sin,        gx_sin(ctx, x),                  -3, 3)
UNARY_TEST(cos,        gx_cos(ctx, x),                  -3, 3)
UNARY_TEST(sqrt,       gx_sqrt(ctx, x),                 0.1, 3)
UNARY_TEST(square,     gx_square(ctx, x),               -3, 3)
UNARY_TEST(abs,        gx_abs(ctx, x),                  -3, 3)
UNARY_TEST(neg,        gx_neg(ctx, x),                  -3, 3)
UNARY_TEST(affine,     gx_affine(ctx, x, -1.5, 0.25),   -3, 3)
UNARY_TEST(scale,      gx_scale(ctx, x, 2.5),           -3, 3)
UNARY_TEST(add_scalar, gx_add_scalar(ctx, x, -0.75),    -3, 3)
UNARY_TEST(pow_scalar, gx_pow_scalar(ctx, x, 1.7),      0.1, 3)
/* A non-negative integer p takes x < 0; p == 0 has an exact zero gradient. */
UNARY_TEST(pow_int,    gx_pow_scalar(ctx, x, 3),        -2, 2)
UNARY_TEST(pow_zero,   gx_pow_scalar(ctx, x, 0),        -2, 2)
UNARY_TEST(clamp,      gx_clamp(ctx, x, -0.5, 0.75),    -1, 1)
UNARY_TEST(step,       gx_step(ctx, x, 0.25),           -1, 1)

/* =============================================================== binary */

/* The op travels in a struct: the harness's arg is a data pointer. */
typedef struct { gx_tensor *(*f)(gx_ctx *, gx_tensor *, gx_tensor *); } binary_op;

static gx_tensor *build_binary(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    return ((const binary_op *)arg)->f(ctx, in[0], in[1]);
}

/* test_cuda.c's broadcast patterns, then a 0-D b and a 0-D a. */
typedef struct { int na, nb; int64_t a[4], b[4]; } bin_case;
static const bin_case k_bin_cases[] = {
    { 3, 3, { 2, 3, 4 }, { 2, 3, 4 } },          /* equal */
    { 3, 1, { 5, 3, 70 }, { 70 } },              /* bias-like */
    { 4, 3, { 2, 3, 5, 5 }, { 3, 1, 1 } },       /* per channel */
    { 1, 3, { 1 }, { 2, 3, 4 } },                /* scalar a */
    { 3, 3, { 2, 1, 4 }, { 1, 3, 1 } },          /* both broadcast */
    { 2, 2, { 3000, 3 }, { 1, 3 } },             /* long reduction (the block kernel) */
    { 2, 0, { 5, 33 }, { 0 } },                  /* 0-D b */
    { 0, 3, { 0 }, { 4, 1, 6 } },                /* 0-D a */
};

/* Every case forward at the forward tolerance, then forward and both
 * gradients at the gradient tolerance. a in [-2, 2), b in [0.5, 2) (div). */
static void run_binary(gx_test_state *T, const char *name, binary_op op) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    char label[96];
    for (size_t k = 0; k < sizeof k_bin_cases / sizeof *k_bin_cases; k++) {
        const bin_case *c = &k_bin_cases[k];
        gx_gpu_input in[2] = { { c->na, c->a, -2, 2, 1 }, { c->nb, c->b, 0.5, 2, 1 } };
        snprintf(label, sizeof label, "%s case %zu", name, k);
        gx_gpu_check(T, &g, label, build_binary, &op, 2, in, TOL_BIN_F);
        gx_gpu_check(T, &g, label, build_binary, &op, 2, in, TOL_BIN);
    }
    /* One side without a gradient (the launcher gets NULL for it). */
    for (int k = 0; k < 2; k++) {
        gx_gpu_input in[2] = { { 3, GX_SHAPE(5, 3, 70), -2, 2, k }, { 1, GX_SHAPE(70), 0.5, 2, !k } };
        snprintf(label, sizeof label, "%s, only %s needs a gradient", name, k ? "a" : "b");
        gx_gpu_check(T, &g, label, build_binary, &op, 2, in, TOL_BIN);
    }
    gx_gpu_close(&g);
}

/* op(x, x): both gradients land in one buffer, one after the other. */
static gx_tensor *build_self(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    return ((const binary_op *)arg)->f(ctx, in[0], in[0]);
}
static void run_self(gx_test_state *T, const char *name, binary_op op) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    gx_gpu_input in[1] = { { 2, GX_SHAPE(9, 13), 0.5, 2, 1 } };
    gx_gpu_check(T, &g, name, build_self, &op, 1, in, TOL_BIN);
    gx_gpu_close(&g);
}

GX_TEST(dispatch_elem_add) { run_binary(T, "add", (binary_op){ gx_add }); }
GX_TEST(dispatch_elem_sub) { run_binary(T, "sub", (binary_op){ gx_sub }); }
GX_TEST(dispatch_elem_mul) { run_binary(T, "mul", (binary_op){ gx_mul }); }
GX_TEST(dispatch_elem_div) { run_binary(T, "div", (binary_op){ gx_div }); }
GX_TEST(dispatch_elem_maximum) { run_binary(T, "maximum", (binary_op){ gx_maximum }); }
GX_TEST(dispatch_elem_mul_self) { run_self(T, "mul(x, x)", (binary_op){ gx_mul }); }
GX_TEST(dispatch_elem_div_self) { run_self(T, "div(x, x)", (binary_op){ gx_div }); }

/* maximum's tie rule: constant operands (lo == hi) tie everywhere, so a
 * takes the whole gradient and b none (a split would move half to b); then
 * a constant a against a random broadcast b, above and below it. */
GX_TEST(dispatch_elem_maximum_ties) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    binary_op mx = { gx_maximum };
    gx_gpu_input tie[2] = { { 3, GX_SHAPE(2, 3, 4), 0.5, 0.5, 1 }, { 2, GX_SHAPE(3, 4), 0.5, 0.5, 1 } };
    gx_gpu_check(T, &g, "maximum all ties", build_binary, &mx, 2, tie, TOL_BIN);
    gx_gpu_input tie_b[2] = { { 1, GX_SHAPE(4), 0.5, 0.5, 1 }, { 3, GX_SHAPE(2, 3, 4), 0.5, 0.5, 1 } };
    gx_gpu_check(T, &g, "maximum all ties, a broadcast", build_binary, &mx, 2, tie_b, TOL_BIN);
    gx_gpu_input mix[2] = { { 3, GX_SHAPE(2, 3, 4), 0.5, 0.5, 1 }, { 2, GX_SHAPE(3, 4), 0, 1, 1 } };
    gx_gpu_check(T, &g, "maximum constant a", build_binary, &mx, 2, mix, TOL_BIN);
    gx_gpu_close(&g);
}

/* ========================================================== reductions */

/* Every dim of [3, 50, 7] (the launcher test's), then dim -1 with keepdim
 * and a [2, 70, 33] middle dim (more than a warp of columns and of rows). */
typedef struct { int op, dim, keepdim; } rd_arg;   /* op: 0 sum, 1 mean, 2 max, 3 logsumexp */

static gx_tensor *build_reduce(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const rd_arg *a = arg;
    switch (a->op) {
    case 0:  return gx_sum(ctx, in[0], a->dim, a->keepdim);
    case 1:  return gx_mean(ctx, in[0], a->dim, a->keepdim);
    case 2:  return gx_max(ctx, in[0], a->dim, a->keepdim);
    default: return gx_logsumexp(ctx, in[0], a->dim, a->keepdim);
    }
}

static void run_reduce(gx_test_state *T, int op, const char *name, double lo, double hi) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    static const struct { int dim, keepdim, big; } C[] = {
        { 0, 0, 0 }, { 1, 0, 0 }, { 2, 0, 0 }, { -1, 1, 0 }, { 1, 1, 1 },
    };
    char label[96];
    for (size_t k = 0; k < sizeof C / sizeof *C; k++) {
        rd_arg a = { op, C[k].dim, C[k].keepdim };
        gx_gpu_input in[1] = { { 3, C[k].big ? GX_SHAPE(2, 70, 33) : GX_SHAPE(3, 50, 7), lo, hi, 1 } };
        snprintf(label, sizeof label, "%s dim %d keepdim %d%s", name, a.dim, a.keepdim, C[k].big ? " [2,70,33]" : "");
        gx_gpu_check(T, &g, label, build_reduce, &a, 1, in, TOL_RED);
    }
    gx_gpu_close(&g);
}

GX_TEST(dispatch_reduce_sum) { run_reduce(T, 0, "sum", -2, 2); }
GX_TEST(dispatch_reduce_mean) { run_reduce(T, 1, "mean", -2, 2); }
GX_TEST(dispatch_reduce_max) { run_reduce(T, 2, "max", -2, 2); }
GX_TEST(dispatch_reduce_logsumexp) { run_reduce(T, 3, "logsumexp", -4, 4); }

/* A constant input ties everywhere: the whole gradient goes to the first
 * element of each column (the CPU's saved argmax, the launcher's rescan). */
GX_TEST(dispatch_reduce_max_ties) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    char label[64];
    for (int d = 0; d < 3; d++) {
        rd_arg a = { 2, d, 0 };
        gx_gpu_input in[1] = { { 3, GX_SHAPE(3, 5, 4), 0.25, 0.25, 1 } };
        snprintf(label, sizeof label, "max ties dim %d", d);
        gx_gpu_check(T, &g, label, build_reduce, &a, 1, in, TOL_RED);
    }
    gx_gpu_close(&g);
}

/* sum_all / mean_all: one chunk, and 5 chunks + a tail (GX_CU_CHUNK). */
static gx_tensor *build_sum_all(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    return *(const int *)arg ? gx_mean_all(ctx, in[0]) : gx_sum_all(ctx, in[0]);
}

static void run_sum_all(gx_test_state *T, int mean) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    gx_gpu_input small[1] = { { 2, GX_SHAPE(3, 5), -1, 1, 1 } };
    gx_gpu_input big[1] = { { 1, GX_SHAPE(5 * 8192 + 321), -1, 1, 1 } };
    gx_gpu_check(T, &g, mean ? "mean_all [3,5]" : "sum_all [3,5]", build_sum_all, &mean, 1, small, TOL_RED);
    gx_gpu_check(T, &g, mean ? "mean_all 5 chunks" : "sum_all 5 chunks", build_sum_all, &mean, 1, big, TOL_RED);
    gx_gpu_close(&g);
}

GX_TEST(dispatch_reduce_sum_all) { run_sum_all(T, 0); }
GX_TEST(dispatch_reduce_mean_all) { run_sum_all(T, 1); }

/* ====================================================== softmax family */

static gx_tensor *build_softmax(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const int *a = arg;                     /* { log, dim } */
    return a[0] ? gx_log_softmax(ctx, in[0], a[1]) : gx_softmax(ctx, in[0], a[1]);
}

static void run_softmax(gx_test_state *T, int log) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    char label[64];
    for (int d = -1; d < 3; d++) {
        int a[2] = { log, d };
        gx_gpu_input in[1] = { { 3, GX_SHAPE(3, 50, 7), -4, 4, 1 } };
        snprintf(label, sizeof label, "%s dim %d", log ? "log_softmax" : "softmax", d);
        gx_gpu_check(T, &g, label, build_softmax, a, 1, in, TOL_RED);
    }
    gx_gpu_close(&g);
}

GX_TEST(dispatch_reduce_softmax) { run_softmax(T, 0); }
GX_TEST(dispatch_reduce_log_softmax) { run_softmax(T, 1); }

/* ======================================================== cross-entropy */

typedef struct { const int32_t *t; double ls; } ce_arg;

static gx_tensor *build_ce(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const ce_arg *a = arg;
    return gx_cross_entropy(ctx, in[0], a->t, a->ls);
}

/* The launcher test's [6, 10] and [4, 300] (K > a warp), and a batch of 37;
 * label smoothing 0 and 0.1; targets (7b + 3) mod K. */
GX_TEST(dispatch_reduce_cross_entropy) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    static const int64_t BK[][2] = { { 6, 10 }, { 4, 300 }, { 37, 11 } };
    char label[96];
    for (int c = 0; c < 3; c++)
        for (int l = 0; l < 2; l++) {
            const int64_t B = BK[c][0], K = BK[c][1];
            int32_t t[37];
            for (int64_t b = 0; b < B; b++) t[b] = (int32_t)((b * 7 + 3) % K);
            ce_arg a = { t, l ? 0.1 : 0.0 };
            gx_gpu_input in[1] = { { 2, GX_SHAPE(B, K), -5, 5, 1 } };
            snprintf(label, sizeof label, "cross_entropy [%lld,%lld] ls %g", (long long)B, (long long)K, a.ls);
            gx_gpu_check(T, &g, label, build_ce, &a, 1, in, TOL_RED);
        }
    gx_gpu_close(&g);
}

/* ========================================================= gather, one-hot */

typedef struct { const int32_t *idx; int64_t B, K; } idx_arg;

static gx_tensor *build_gather(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    return gx_gather(ctx, in[0], ((const idx_arg *)arg)->idx);
}
static gx_tensor *build_one_hot(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    (void)in;
    const idx_arg *a = arg;
    return gx_one_hot(ctx, a->idx, a->B, a->K);
}

/* The launcher test's B 37, K 11 (indices (7b + 3) mod K, every class hit). */
GX_TEST(dispatch_reduce_gather) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    int32_t idx[37];
    for (int b = 0; b < 37; b++) idx[b] = (int32_t)((b * 7 + 3) % 11);
    idx_arg a = { idx, 37, 11 };
    gx_gpu_input in[1] = { { 2, GX_SHAPE(37, 11), -1, 1, 1 } };
    gx_gpu_check(T, &g, "gather", build_gather, &a, 1, in, TOL_COPY);
    gx_gpu_close(&g);
}

/* No tensor input: a ctx with a device makes it there. */
GX_TEST(dispatch_reduce_one_hot) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    int32_t idx[37];
    for (int b = 0; b < 37; b++) idx[b] = (int32_t)((b * 7 + 3) % 11);
    idx_arg a = { idx, 37, 11 };
    gx_gpu_check(T, &g, "one_hot", build_one_hot, &a, 0, NULL, TOL_COPY);
    gx_gpu_close(&g);
}

/* ======================================================== L2 normalise */

typedef struct { int dim; double eps; } l2_arg;

static gx_tensor *build_l2(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    const l2_arg *a = arg;
    return gx_l2_normalize(ctx, in[0], a->dim, a->eps);
}

/* Every dim of [3, 50, 7] with eps 1e-3 (no column clamped) and eps 10
 * (every column clamped: norms are at most sqrt(50)); then [4, 3, 5] over
 * its 3 rows with eps 1, where columns fall on both sides of eps (the norm
 * of 3 values in [-1, 1) straddles 1: 5 of the 20 below it with the
 * harness's seed). */
GX_TEST(dispatch_reduce_l2_normalize) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    char label[64];
    for (int d = 0; d < 3; d++)
        for (int e = 0; e < 2; e++) {
            l2_arg a = { d, e ? 10.0 : 1e-3 };
            gx_gpu_input in[1] = { { 3, GX_SHAPE(3, 50, 7), -1, 1, 1 } };
            snprintf(label, sizeof label, "l2_normalize dim %d eps %g", d, a.eps);
            gx_gpu_check(T, &g, label, build_l2, &a, 1, in, TOL_RED);
        }
    l2_arg a = { -2, 1.0 };
    gx_gpu_input in[1] = { { 3, GX_SHAPE(4, 3, 5), -1, 1, 1 } };
    gx_gpu_check(T, &g, "l2_normalize mixed clamping", build_l2, &a, 1, in, TOL_RED);
    gx_gpu_close(&g);
}

/* ================================================================ chain */

/* mean_all(softmax(x + b) * sigmoid(x) - x): x's gradient is the sum of three
 * device backward passes into one buffer, b's a reduction over the batch. */
static gx_tensor *build_chain(gx_ctx *ctx, gx_tensor *const *in, void *arg) {
    (void)arg;
    gx_tensor *x = in[0], *b = in[1];
    gx_tensor *p = gx_mul(ctx, gx_softmax(ctx, gx_add(ctx, x, b), -1), gx_sigmoid(ctx, x));
    return gx_mean_all(ctx, gx_sub(ctx, p, x));
}

GX_TEST(dispatch_elem_chain_accumulates) {
    gx_gpu_env g;
    if (!gx_gpu_open(T, &g)) return;
    gx_gpu_input in[2] = { { 2, GX_SHAPE(8, 33), -2, 2, 1 }, { 1, GX_SHAPE(33), -1, 1, 1 } };
    gx_gpu_check(T, &g, "chain", build_chain, NULL, 2, in, TOL_RED);
    gx_gpu_close(&g);
}
