/*
 * cuda_test_util.h — the scaffolding the two CUDA test programs share:
 * test_cuda.c (every launcher on the GPU against the CPU op) and
 * test_cuda_host.cu (the kernels' per-element bodies on the CPU against the
 * CPU op). Both build the CPU side the same way, so it lives here once:
 * random leaves and seed gradients, the count of values outside a
 * tolerance, the unary and binary op tables with their CPU ops, the
 * (outer, n, inner) split of a tensor around one dim, and the CPU chain
 * conv -> batch norm (eval) -> activation that the fused epilogue is
 * checked against.
 *
 * Plain C that nvcc also compiles as C++ (casts from void *, no compound
 * literals); everything is static inline or static const, so a program
 * that does not use a piece gets no warning. Only with GX_HAVE_CUDA: the
 * gx_cu_* types exist only then.
 */
#ifndef CUDA_TEST_UTIL_H
#define CUDA_TEST_UTIL_H

#include "gx.h"
#include "gx_cuda.h"

#include <math.h>

#if defined(GX_HAVE_CUDA) && GX_HAVE_CUDA

/* CPU leaf [shape] with values uniform in [lo, hi), requires_grad. */
static inline gx_tensor *ctu_leaf(gx_ctx *c, gx_rng *r, int nd, const int64_t *shape, double lo, double hi) {
    gx_tensor *t = gx_tensor_new(c, nd, shape);
    gx_rng_fill_uniform(r, t->data, t->numel, lo, hi);
    t->requires_grad = 1;
    return t;
}

/* n values uniform in [-1, 1) in c's arena: a seed gradient. */
static inline float *ctu_rnd(gx_ctx *c, gx_rng *r, int64_t n) {
    float *g = (float *)gx_ctx_alloc(c, (size_t)n * sizeof(float));
    gx_rng_fill_uniform(r, g, n, -1, 1);
    return g;
}

/* How many of got[n] differ from want by more than atol + rtol |want|
 * (NaN against NaN passes when nan_equal, fails otherwise); *worst is the
 * index of the largest such difference (-1 when none). */
static inline int64_t ctu_count_bad(const float *got, const float *want, int64_t n, double atol, double rtol,
                                    int nan_equal, int64_t *worst) {
    int64_t bad = 0;
    double wd = 0;
    *worst = -1;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        int ok = d <= atol + rtol * fabs((double)want[i]) || (nan_equal && isnan(got[i]) && isnan(want[i]));
        if (!ok) {
            bad++;
            if (d > wd || *worst < 0) { wd = d; *worst = i; }
        }
    }
    return bad;
}

/* The products of shape[0..d) and shape(d..nd): a tensor seen as
 * [outer, shape[d], inner], as the reduce, softmax and shape launchers take it. */
static inline void ctu_split(const int64_t *shape, int nd, int d, int64_t *outer, int64_t *inner) {
    *outer = *inner = 1;
    for (int k = 0; k < d; k++) *outer *= shape[k];
    for (int k = d + 1; k < nd; k++) *inner *= shape[k];
}

/* ------------------------------------------------------------ op tables */

typedef gx_tensor *(*ctu_unary_cpu)(gx_ctx *, gx_tensor *);
typedef gx_tensor *(*ctu_binary_cpu)(gx_ctx *, gx_tensor *, gx_tensor *);

/* The parameterised unary ops with the parameters of the tables below. */
static inline gx_tensor *ctu_leaky(gx_ctx *c, gx_tensor *x) { return gx_leaky_relu(c, x, 0.1); }
static inline gx_tensor *ctu_affine(gx_ctx *c, gx_tensor *x) { return gx_affine(c, x, -1.5, 0.25); }
static inline gx_tensor *ctu_pow(gx_ctx *c, gx_tensor *x) { return gx_pow_scalar(c, x, 1.7); }
static inline gx_tensor *ctu_clamp(gx_ctx *c, gx_tensor *x) { return gx_clamp(c, x, -0.5, 0.75); }
static inline gx_tensor *ctu_step(gx_ctx *c, gx_tensor *x) { return gx_step(c, x, 0.25); }

/* Every unary op: its CPU op, parameters p0/p1 and the input range [lo, hi]
 * (inside the op's domain: log and sqrt above 0). */
typedef struct ctu_unary_case {
    gx_cu_unary op;
    ctu_unary_cpu f;
    double p0, p1, lo, hi;
    const char *name;
} ctu_unary_case;

static const ctu_unary_case ctu_unary[] = {
    { GX_CU_RELU, gx_relu, 0, 0, -3, 3, "relu" },       { GX_CU_LEAKY_RELU, ctu_leaky, 0.1, 0, -3, 3, "leaky" },
    { GX_CU_GELU, gx_gelu, 0, 0, -3, 3, "gelu" },       { GX_CU_SILU, gx_silu, 0, 0, -3, 3, "silu" },
    { GX_CU_SIGMOID, gx_sigmoid, 0, 0, -6, 6, "sigmoid" }, { GX_CU_SOFTPLUS, gx_softplus, 0, 0, -25, 25, "softplus" },
    { GX_CU_TANH, gx_tanh, 0, 0, -3, 3, "tanh" },       { GX_CU_EXP, gx_exp, 0, 0, -3, 3, "exp" },
    { GX_CU_LOG, gx_log, 0, 0, 0.1, 3, "log" },         { GX_CU_ATAN, gx_atan, 0, 0, -3, 3, "atan" },
    { GX_CU_SIN, gx_sin, 0, 0, -3, 3, "sin" },          { GX_CU_COS, gx_cos, 0, 0, -3, 3, "cos" },
    { GX_CU_SQRT, gx_sqrt, 0, 0, 0.1, 3, "sqrt" },      { GX_CU_SQUARE, gx_square, 0, 0, -3, 3, "square" },
    { GX_CU_ABS, gx_abs, 0, 0, -3, 3, "abs" },          { GX_CU_NEG, gx_neg, 0, 0, -3, 3, "neg" },
    { GX_CU_AFFINE, ctu_affine, -1.5, 0.25, -3, 3, "affine" }, { GX_CU_POW, ctu_pow, 1.7, 0, 0.1, 3, "pow" },
    { GX_CU_CLAMP, ctu_clamp, -0.5, 0.75, -1, 1, "clamp" },     { GX_CU_STEP, ctu_step, 0.25, 0, -1, 1, "step" },
};
#define CTU_NUNARY ((int)(sizeof ctu_unary / sizeof *ctu_unary))
#ifdef __cplusplus
static_assert(sizeof ctu_unary / sizeof *ctu_unary == GX_CU_NUNARY, "every unary op is tested");
#else
_Static_assert(sizeof ctu_unary / sizeof *ctu_unary == GX_CU_NUNARY, "every unary op is tested");
#endif

typedef struct ctu_binary_case {
    gx_cu_binary op;
    ctu_binary_cpu f;
    const char *name;
} ctu_binary_case;

static const ctu_binary_case ctu_binary[] = {
    { GX_CU_ADD, gx_add, "add" }, { GX_CU_SUB, gx_sub, "sub" }, { GX_CU_MUL, gx_mul, "mul" },
    { GX_CU_DIV, gx_div, "div" }, { GX_CU_MAX, gx_maximum, "maximum" },
};
#define CTU_NBINARY ((int)(sizeof ctu_binary / sizeof *ctu_binary))

/* Inputs of maximum rounded to halves (a shifted by 1 into [-0.5, 3]):
 * exact ties occur, so the tie rule of the gradient is checked too. */
static inline void ctu_quantise_for_max(gx_tensor *a, gx_tensor *b) {
    for (int64_t i = 0; i < a->numel; i++) a->data[i] = roundf(a->data[i] * 2) / 2 + 1;
    for (int64_t i = 0; i < b->numel; i++) b->data[i] = roundf(b->data[i] * 2) / 2;
}

/* ------------------------------------------------------- conv + BN + act */

/* The CPU reference of the fused epilogue: conv2d of shape s, batch norm in
 * eval mode (running statistics rm, rv; eps 1e-5), then act (NULL: none),
 * with the tape off (the chain is only compared forward). */
static inline gx_tensor *ctu_conv_bn_act_cpu(gx_ctx *c, const gx_cu_conv_shape *s, gx_tensor *x, gx_tensor *w,
                                             gx_tensor *b, gx_tensor *gm, gx_tensor *bt, gx_tensor *rm,
                                             gx_tensor *rv, ctu_unary_cpu act) {
    int was = c->grad_enabled;
    c->grad_enabled = 0;
    gx_tensor *y = gx_batchnorm(c, gx_conv2d(c, x, w, b, s->stride, s->pad, s->groups), gm, bt, rm, rv, 0, 0.1, 1e-5);
    if (act) y = act(c, y);
    c->grad_enabled = was;
    return y;
}

#endif /* GX_HAVE_CUDA */
#endif /* CUDA_TEST_UTIL_H */
