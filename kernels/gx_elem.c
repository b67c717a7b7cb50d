/*
 * gx_elem.c — elementwise ops: unary maps, scalar maps and broadcasting
 * binary ops, each forward beside its backward.
 *
 * Unary ops. Every unary op is y = F(x; p0, p1) with a derivative D(x, y;
 * p0, p1), where p0/p1 are the op's scalar arguments (slope, a, b, lo, hi,
 * p). One macro, GX_UNARY_OP, stamps out the forward loop and the backward
 * loop from the two expressions, so each op is one line of math that sits
 * next to its derivative and reuses the per-element functions of gx_math.h
 * (the same ones the CUDA kernels call). Math is done in double and rounded
 * once to gx_real; the backward may read the saved output y (exp, tanh,
 * sigmoid, sqrt) instead of recomputing F.
 *
 * Broadcasting binary ops. Shapes are aligned at the right (NumPy rules).
 * Rather than hand-writing one loop per broadcast pattern, the operands'
 * strides are expressed in the output's index space (0 on a broadcast dim)
 * and adjacent dims that are contiguous for every operand are merged
 * (gx_bc_collapse). The common patterns then reduce to a row loop whose
 * inner stride is 1 or 0 for each operand, which the compiler vectorises:
 *   equal shapes              -> 1 dim,  strides a:1 b:1
 *   b scalar / 1 element      -> 1 dim,  strides a:1 b:0
 *   bias, [N,K] op [K]        -> [N,K],  inner a:1 b:1, outer b:0
 *   per channel, [B,C,H,W] op [1,C,1,1] or [C,1,1]
 *                             -> [B,C,HW], inner a:1 b:0 (a scalar per row)
 * Work is cut into tasks of at most GX_BC_CHUNK elements of one row, so big
 * 1-D cases parallelise too; each output element is computed by exactly one
 * task, so results never depend on the thread count.
 *
 * Backward of a broadcast input sums the gradient over the broadcast dims
 * with gx_reduce_broadcast_add, which accumulates in double in a fixed order
 * (again independent of the thread count and of other samples).
 */
#include "gx_impl.h"
#if GX_CUDA_ON
#include "cuda/gx_cuda_ops_elem.h"
#endif

#include <math.h>

/* Force vectorisation of unit-stride loops: at -O2 GCC's cheap cost model
 * leaves them scalar, and branchy scalar code (relu, max, clamp) is up to
 * 10x slower on random data. Reordering is fixed at compile time, so results
 * stay independent of the thread count. */
#define GX_SIMD _Pragma("omp simd")

/* Max elements one broadcast task handles (keeps tasks cache-sized). */
#define GX_BC_CHUNK 16384
/* Column block for reductions whose kept dim is innermost: a stack array of
 * this many double accumulators. */
#define GX_RB_COLS 256

/* ================================================================ unary */

/* GX_UNARY_OP(name, F, D): defines gx_name_fwd(ctx, x, p0, p1) and its
 * backward. F may use x, p0, p1; D may also use y (the forward output).
 * x and y are doubles; g is the upstream gradient. A device x goes to
 * gx_cuda_unary with the op's gx_cu_unary value (GX_CU_OP_<name>). */
#define GX_UNARY_OP(NAME, F, D)                                                \
    static void gx_##NAME##_bw(gx_ctx *ctx, gx_node *nd) {                     \
        gx_real *gi = gx_grad(ctx, nd->in[0]);                                 \
        if (!gi) return;                                                       \
        const gx_real *X = nd->in[0]->data, *Y = nd->out->data;                \
        const gx_real *G = nd->out->grad;                                      \
        const double p0 = nd->f[0], p1 = nd->f[1];                             \
        const int64_t N = nd->out->numel;                                      \
        const int par = N > GX_PAR_THRESHOLD;                                  \
        (void)p0; (void)p1; (void)X; (void)Y;                                  \
        _Pragma("omp parallel for simd if (parallel: par)")                    \
        for (int64_t i = 0; i < N; i++) {                                      \
            const double x = X[i], y = Y[i];                                   \
            (void)x; (void)y;                                                  \
            gi[i] += (gx_real)((double)G[i] * (D));                            \
        }                                                                      \
    }                                                                          \
    static gx_tensor *gx_##NAME##_fwd(gx_ctx *ctx, gx_tensor *xt,              \
                                      double p0, double p1) {                  \
        GX_CUDA_DISPATCH(gx_on_cuda(xt), gx_cuda_unary(ctx, #NAME,            \
                         GX_CU_OP_##NAME, xt, p0, p1));                        \
        gx_tensor *out = gx_tensor_like(ctx, xt);                              \
        const gx_real *X = xt->data;                                           \
        gx_real *Y = out->data;                                                \
        const int64_t N = xt->numel;                                           \
        const int par = N > GX_PAR_THRESHOLD;                                  \
        (void)p0; (void)p1;                                                    \
        _Pragma("omp parallel for simd if (parallel: par)")                    \
        for (int64_t i = 0; i < N; i++) {                                      \
            const double x = X[i];                                             \
            Y[i] = (gx_real)(F);                                               \
        }                                                                      \
        gx_node *nd = gx_tape_record(ctx, #NAME, gx_##NAME##_bw, out, 1, &xt); \
        if (nd) { nd->f[0] = p0; nd->f[1] = p1; }                              \
        return out;                                                            \
    }

/* Activations. relu/leaky derivatives at exactly 0 are 0 / slope, as in
 * PyTorch (the kink takes the left derivative). */
GX_UNARY_OP(relu,       gx_relu_f(x),            gx_relu_df(x))
GX_UNARY_OP(leaky_relu, gx_leaky_f(x, p0),       gx_leaky_df(x, p0))
GX_UNARY_OP(gelu,       gx_gelu_f(x),            gx_gelu_df(x))
GX_UNARY_OP(silu,       gx_silu_f(x),            gx_silu_df(x))
GX_UNARY_OP(sigmoid,    gx_sigmoid_f(x),         gx_sigmoid_df_from_y(y))
GX_UNARY_OP(softplus,   gx_softplus_f(x),        gx_softplus_df(x))
GX_UNARY_OP(tanh,       tanh(x),                 gx_tanh_df_from_y(y))

/* Math functions. log and sqrt are only differentiable for x > 0; at x = 0
 * they give inf like PyTorch. */
GX_UNARY_OP(exp,    exp(x),         y)
GX_UNARY_OP(log,    log(x),         1.0 / x)
GX_UNARY_OP(atan,   atan(x),        gx_atan_df(x))
GX_UNARY_OP(sin,    sin(x),         cos(x))
GX_UNARY_OP(cos,    cos(x),         -sin(x))
GX_UNARY_OP(sqrt,   sqrt(x),        0.5 / y)
GX_UNARY_OP(square, x * x,          2.0 * x)
/* |x|: subgradient sign(x), 0 at 0 (PyTorch). */
GX_UNARY_OP(abs,    fabs(x),        (double)((x > 0) - (x < 0)))
GX_UNARY_OP(neg,    -x,             -1.0)

/* Scalar maps: p0 = a (scale), p1 = b (shift). */
GX_UNARY_OP(affine, p0 * x + p1,    p0)

/* x^p with p = p0. d/dx = p x^(p-1); p == 0 gives an exact 0 gradient (not
 * 0 * x^-1, which is NaN at x = 0), as in PyTorch. */
GX_UNARY_OP(pow_scalar, pow(x, p0), p0 == 0.0 ? 0.0 : p0 * pow(x, p0 - 1.0))

/* Clamp to [lo, hi] = [p0, p1]. The gradient passes where lo <= x <= hi,
 * boundaries included, exactly as PyTorch's clamp backward (mask
 * (x >= min) & (x <= max)); it is 0 only where the value was moved. */
GX_UNARY_OP(clamp, x < p0 ? p0 : (x > p1 ? p1 : x), (x >= p0 && x <= p1) ? 1.0 : 0.0)

/* Step at p0: 1 where x > p0, else 0 (NaN included: the comparison is
 * false). A decision kept on the device (WaveletMamba's weak class from the
 * g - r colour) instead of a read back to the host; its derivative is 0
 * wherever it exists, as PyTorch's (x > t).float() has none. */
GX_UNARY_OP(step, x > p0 ? 1.0 : 0.0, 0.0)

gx_tensor *gx_relu(gx_ctx *ctx, gx_tensor *x)                  { return gx_relu_fwd(ctx, x, 0, 0); }
gx_tensor *gx_leaky_relu(gx_ctx *ctx, gx_tensor *x, double s)  { return gx_leaky_relu_fwd(ctx, x, s, 0); }
gx_tensor *gx_gelu(gx_ctx *ctx, gx_tensor *x)                  { return gx_gelu_fwd(ctx, x, 0, 0); }
gx_tensor *gx_silu(gx_ctx *ctx, gx_tensor *x)                  { return gx_silu_fwd(ctx, x, 0, 0); }
gx_tensor *gx_sigmoid(gx_ctx *ctx, gx_tensor *x)               { return gx_sigmoid_fwd(ctx, x, 0, 0); }
gx_tensor *gx_softplus(gx_ctx *ctx, gx_tensor *x)              { return gx_softplus_fwd(ctx, x, 0, 0); }
gx_tensor *gx_tanh(gx_ctx *ctx, gx_tensor *x)                  { return gx_tanh_fwd(ctx, x, 0, 0); }
gx_tensor *gx_exp(gx_ctx *ctx, gx_tensor *x)                   { return gx_exp_fwd(ctx, x, 0, 0); }
gx_tensor *gx_log(gx_ctx *ctx, gx_tensor *x)                   { return gx_log_fwd(ctx, x, 0, 0); }
gx_tensor *gx_atan(gx_ctx *ctx, gx_tensor *x)                  { return gx_atan_fwd(ctx, x, 0, 0); }
gx_tensor *gx_sin(gx_ctx *ctx, gx_tensor *x)                   { return gx_sin_fwd(ctx, x, 0, 0); }
gx_tensor *gx_cos(gx_ctx *ctx, gx_tensor *x)                   { return gx_cos_fwd(ctx, x, 0, 0); }
gx_tensor *gx_sqrt(gx_ctx *ctx, gx_tensor *x)                  { return gx_sqrt_fwd(ctx, x, 0, 0); }
gx_tensor *gx_square(gx_ctx *ctx, gx_tensor *x)                { return gx_square_fwd(ctx, x, 0, 0); }
gx_tensor *gx_abs(gx_ctx *ctx, gx_tensor *x)                   { return gx_abs_fwd(ctx, x, 0, 0); }
gx_tensor *gx_neg(gx_ctx *ctx, gx_tensor *x)                   { return gx_neg_fwd(ctx, x, 0, 0); }
gx_tensor *gx_affine(gx_ctx *ctx, gx_tensor *x, double a, double b) { return gx_affine_fwd(ctx, x, a, b); }
gx_tensor *gx_scale(gx_ctx *ctx, gx_tensor *x, double a)       { return gx_affine_fwd(ctx, x, a, 0); }
gx_tensor *gx_add_scalar(gx_ctx *ctx, gx_tensor *x, double b)  { return gx_affine_fwd(ctx, x, 1, b); }
gx_tensor *gx_pow_scalar(gx_ctx *ctx, gx_tensor *x, double p)  { return gx_pow_scalar_fwd(ctx, x, p, 0); }

gx_tensor *gx_step(gx_ctx *ctx, gx_tensor *x, double t)        { return gx_step_fwd(ctx, x, t, 0); }

gx_tensor *gx_clamp(gx_ctx *ctx, gx_tensor *x, double lo, double hi) {
    GX_ASSERT_MSG(lo <= hi, "gx_clamp: lo %g > hi %g", lo, hi);
    return gx_clamp_fwd(ctx, x, lo, hi);
}

/* ============================================================ broadcast */

/* Broadcast shape with an op name for the error message (gx_impl.h: the
 * device binary ops use it too). */
int gx_bc_shape(const char *op, const gx_tensor *a, const gx_tensor *b, int64_t *out) {
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int k = 0; k < nd; k++) {           /* k counts from the right */
        int64_t da = k < a->ndim ? a->shape[a->ndim - 1 - k] : 1;
        int64_t db = k < b->ndim ? b->shape[b->ndim - 1 - k] : 1;
        if (da != db && da != 1 && db != 1) {
            char sa[96], sb[96];
            GX_ASSERT_MSG(0, "%s: shapes %s and %s do not broadcast", op,
                          gx_tensor_shape_str(a, sa, sizeof sa), gx_tensor_shape_str(b, sb, sizeof sb));
        }
        out[nd - 1 - k] = da == 1 ? db : da;
    }
    return nd;
}

int gx_broadcast_shape(const gx_tensor *a, const gx_tensor *b, int64_t *out_shape) {
    return gx_bc_shape("gx_broadcast_shape", a, b, out_shape);
}

/* Strides (in elements) of a contiguous tensor of shape `s` (ndim ns) seen
 * in an output index space of nd dims: 0 on dims that are broadcast. */
static void gx_bc_strides(int nd, const int64_t *oshape, int ns, const int64_t *s, int64_t *st) {
    int64_t acc = 1;
    for (int d = nd - 1; d >= 0; d--) {
        int k = d - (nd - ns);                 /* dim of s aligned with d */
        int64_t n = k >= 0 ? s[k] : 1;
        st[d] = (n == 1 && oshape[d] != 1) ? 0 : acc;
        acc *= n;
    }
}

/* An iteration space of up to GX_MAX_DIMS dims over the output and nop
 * operands, after merging dims that are contiguous for all of them. */
typedef struct {
    int nd;
    int64_t shape[GX_MAX_DIMS];
    int64_t st[3][GX_MAX_DIMS];   /* strides of operands 0..nop-1 */
} gx_bc_iter;

/* Drops size-1 dims and merges dim d into d+1 whenever, for every operand,
 * stride[d] == stride[d+1] * shape[d+1] (both contiguous, or both 0). */
static void gx_bc_collapse(gx_bc_iter *it, int nop) {
    int m = 0;
    for (int d = 0; d < it->nd; d++) {
        if (it->shape[d] == 1) continue;
        int merge = m > 0;
        for (int o = 0; o < nop && merge; o++)
            merge = it->st[o][m - 1] == it->st[o][d] * it->shape[d];
        if (merge) {
            it->shape[m - 1] *= it->shape[d];
            for (int o = 0; o < nop; o++) it->st[o][m - 1] = it->st[o][d];
        } else {
            it->shape[m] = it->shape[d];
            for (int o = 0; o < nop; o++) it->st[o][m] = it->st[o][d];
            m++;
        }
    }
    if (m == 0) {                       /* every dim was 1: one element */
        it->shape[0] = 1;
        for (int o = 0; o < nop; o++) it->st[o][0] = 1;
        m = 1;
    }
    it->nd = m;
}

/* Internal binary operators; GX_BC_EQ (1 where a == b) builds the mask of
 * maximum's backward. */
typedef enum { GX_BC_ADD, GX_BC_SUB, GX_BC_MUL, GX_BC_DIV, GX_BC_MAX, GX_BC_EQ } gx_bc_op;

/* One row of n outputs; sa/sb are 1 (walk) or 0 (repeat one value). Four
 * stride variants per operator keep every inner loop unit-stride, so they
 * vectorise. Arithmetic in gx_real is exact-rounded (same as via double).
 * o may alias a at the same offset (div's backward works in place), so no
 * restrict: GCC vectorises with a runtime overlap check instead. */
#define GX_BC_ROW(EXPR)                                                         \
    do {                                                                        \
        if (sa && sb) { GX_SIMD for (int64_t i = 0; i < n; i++) { gx_real x = a[i], y = b[i]; o[i] = (EXPR); } } \
        else if (sa) { gx_real y = b[0]; GX_SIMD for (int64_t i = 0; i < n; i++) { gx_real x = a[i]; o[i] = (EXPR); } } \
        else if (sb) { gx_real x = a[0]; GX_SIMD for (int64_t i = 0; i < n; i++) { gx_real y = b[i]; o[i] = (EXPR); } } \
        else         { gx_real x = a[0], y = b[0], v = (EXPR); for (int64_t i = 0; i < n; i++) o[i] = v; } \
    } while (0)

static void gx_bc_row(gx_bc_op op, gx_real *o, const gx_real *a, int64_t sa,
                      const gx_real *b, int64_t sb, int64_t n) {
    switch (op) {
    case GX_BC_ADD: GX_BC_ROW(x + y); break;
    case GX_BC_SUB: GX_BC_ROW(x - y); break;
    case GX_BC_MUL: GX_BC_ROW(x * y); break;
    case GX_BC_DIV: GX_BC_ROW(x / y); break;
    case GX_BC_MAX: GX_BC_ROW(x >= y ? x : y); break;     /* ties -> a */
    case GX_BC_EQ:  GX_BC_ROW((gx_real)(x == y)); break;
    }
}

/* Offsets of operands for row r of the collapsed space (all dims but the
 * last), by decomposing r; O(nd) per row, negligible next to the row. */
static void gx_bc_row_offsets(const gx_bc_iter *it, int nop, int64_t r, int64_t *off) {
    for (int o = 0; o < nop; o++) off[o] = 0;
    for (int d = it->nd - 2; d >= 0; d--) {
        int64_t q = r % it->shape[d];
        r /= it->shape[d];
        for (int o = 0; o < nop; o++) off[o] += q * it->st[o][d];
    }
}

/* out (shape oshape, contiguous) = op(a, b) with a, b of shapes sa/sb
 * broadcast against oshape. */
static void gx_bc_apply(gx_bc_op op, gx_real *out, int nd, const int64_t *oshape,
                        const gx_real *a, int na, const int64_t *ashape,
                        const gx_real *b, int nb, const int64_t *bshape) {
    gx_bc_iter it;
    it.nd = nd;
    for (int d = 0; d < nd; d++) it.shape[d] = oshape[d];
    gx_bc_strides(nd, oshape, nd, oshape, it.st[0]);
    gx_bc_strides(nd, oshape, na, ashape, it.st[1]);
    gx_bc_strides(nd, oshape, nb, bshape, it.st[2]);
    int64_t total = gx_shape_numel(nd, oshape);
    if (total == 0) return;
    gx_bc_collapse(&it, 3);
    const int64_t inner = it.shape[it.nd - 1];
    const int64_t rows = total / inner;
    const int64_t nchunk = (inner + GX_BC_CHUNK - 1) / GX_BC_CHUNK;
    const int64_t sa = it.st[1][it.nd - 1], sb = it.st[2][it.nd - 1];
    const int par = total > GX_PAR_THRESHOLD;
    #pragma omp parallel for if (par) schedule(static)
    for (int64_t t = 0; t < rows * nchunk; t++) {
        int64_t off[3];
        gx_bc_row_offsets(&it, 3, t / nchunk, off);
        int64_t c0 = (t % nchunk) * GX_BC_CHUNK;
        int64_t n = inner - c0 < GX_BC_CHUNK ? inner - c0 : GX_BC_CHUNK;
        gx_bc_row(op, out + off[0] + c0, a + off[1] + c0 * sa, sa, b + off[2] + c0 * sb, sb, n);
    }
}

/* --------------------------------------------- gx_reduce_broadcast_add */

/* After collapsing, every dim of g is either kept (acc stride != 0) or
 * reduced (acc stride 0). Two shapes of loop:
 *  - innermost dim kept (bias-like): blocks of GX_RB_COLS columns, each
 *    summed over all reduced index combinations into double accumulators;
 *  - innermost dim reduced (per-channel-like): one double sum per acc
 *    element over its contiguous runs.
 * Each acc element is owned by one task and summed in index order, so the
 * result is bitwise independent of the thread count. */

/* Offset in g of reduced-index combination q (odometer over reduced dims,
 * excluding `skip_last` innermost dims). */
static int64_t gx_rb_red_offset(const gx_bc_iter *it, int64_t q, int upto) {
    int64_t off = 0;
    for (int d = upto - 1; d >= 0; d--) {
        if (it->st[1][d] != 0) continue;          /* kept dim */
        int64_t k = q % it->shape[d];
        q /= it->shape[d];
        off += k * it->st[0][d];
    }
    return off;
}

/* Offset in g of kept-index combination e over dims [0, upto). */
static int64_t gx_rb_kept_offset(const gx_bc_iter *it, int64_t e, int upto) {
    int64_t off = 0;
    for (int d = upto - 1; d >= 0; d--) {
        if (it->st[1][d] == 0) continue;          /* reduced dim */
        int64_t k = e % it->shape[d];
        e /= it->shape[d];
        off += k * it->st[0][d];
    }
    return off;
}

void gx_reduce_broadcast_add(gx_real *acc, int nt, const int64_t *to,
                             const gx_real *g, int nf, const int64_t *from) {
    GX_ASSERT_MSG(nt <= nf, "gx_reduce_broadcast_add: target has %d dims, source %d", nt, nf);
    gx_bc_iter it;
    it.nd = nf;
    for (int d = 0; d < nf; d++) {
        int k = d - (nf - nt);
        int64_t n = k >= 0 ? to[k] : 1;
        GX_ASSERT_MSG(n == from[d] || n == 1, "gx_reduce_broadcast_add: dim %d of target is %lld, source %lld",
                      d, (long long)n, (long long)from[d]);
        it.shape[d] = from[d];
    }
    gx_bc_strides(nf, from, nf, from, it.st[0]);
    gx_bc_strides(nf, from, nt, to, it.st[1]);
    const int64_t total = gx_shape_numel(nf, from);
    if (total == 0) return;
    gx_bc_collapse(&it, 2);
    const int L = it.nd - 1;
    int64_t n_red = 1, n_kept = 1;
    for (int d = 0; d < it.nd; d++) {
        if (it.st[1][d] == 0) n_red *= it.shape[d];
        else n_kept *= it.shape[d];
    }
    const int par = total > GX_PAR_THRESHOLD;
    if (it.st[1][L] != 0) {
        /* Innermost kept: columns blocked, rows = reduced combinations. */
        const int64_t inner = it.shape[L];
        const int64_t nblk = (inner + GX_RB_COLS - 1) / GX_RB_COLS;
        const int64_t n_outer = n_kept / inner;
        #pragma omp parallel for if (par) schedule(static)
        for (int64_t t = 0; t < n_outer * nblk; t++) {
            int64_t e = t / nblk, c0 = (t % nblk) * GX_RB_COLS;
            int64_t n = inner - c0 < GX_RB_COLS ? inner - c0 : GX_RB_COLS;
            int64_t base = gx_rb_kept_offset(&it, e, L) + c0;
            double s[GX_RB_COLS];
            for (int64_t i = 0; i < n; i++) s[i] = 0;
            for (int64_t q = 0; q < n_red; q++) {
                const gx_real *row = g + base + gx_rb_red_offset(&it, q, L);
                GX_SIMD for (int64_t i = 0; i < n; i++) s[i] += row[i];
            }
            gx_real *dst = acc + e * inner + c0;
            GX_SIMD for (int64_t i = 0; i < n; i++) dst[i] += (gx_real)s[i];
        }
    } else {
        /* Innermost reduced: contiguous runs of length `run` per combination. */
        const int64_t run = it.shape[L];
        const int64_t n_q = n_red / run;
        #pragma omp parallel for if (par && n_kept > 1) schedule(static)
        for (int64_t e = 0; e < n_kept; e++) {
            int64_t base = gx_rb_kept_offset(&it, e, L);
            double s = 0;
            for (int64_t q = 0; q < n_q; q++) {
                const gx_real *row = g + base + gx_rb_red_offset(&it, q, L);
                _Pragma("omp simd reduction(+:s)")
                for (int64_t i = 0; i < run; i++) s += row[i];
            }
            acc[e] += (gx_real)s;
        }
    }
}

/* ------------------------------------------------------- binary ops */

/* acc-into-input helper: grad(t) += reduce(full), where full has the
 * output's shape. A no-op when t needs no gradient. */
static void gx_bin_grad_add(gx_ctx *ctx, gx_tensor *t, const gx_tensor *out, const gx_real *full) {
    gx_real *gt = gx_grad(ctx, t);
    if (!gt) return;
    if (t->numel == out->numel) {        /* same shape (up to leading 1s) */
        const int par = out->numel > GX_PAR_THRESHOLD;
        #pragma omp parallel for simd if (parallel: par)
        for (int64_t i = 0; i < out->numel; i++) gt[i] += full[i];
    } else {
        gx_reduce_broadcast_add(gt, t->ndim, t->shape, full, out->ndim, out->shape);
    }
}

/* Scratch of the output's size for a per-element gradient term. */
static gx_real *gx_bin_scratch(gx_ctx *ctx, const gx_tensor *out) {
    return gx_ctx_alloc(ctx, (size_t)out->numel * sizeof(gx_real));
}

/* tmp = op(full-shaped u, broadcast t) in the output's index space. */
static void gx_bin_with(gx_bc_op op, gx_real *tmp, const gx_tensor *out,
                        const gx_real *u, const gx_tensor *t) {
    gx_bc_apply(op, tmp, out->ndim, out->shape, u, out->ndim, out->shape, t->data, t->ndim, t->shape);
}

/* Negate in place (sub's and div's b-gradient). */
static void gx_neg_inplace(gx_real *v, int64_t n) {
    GX_SIMD
    for (int64_t i = 0; i < n; i++) v[i] = -v[i];
}

/* Shared forward: broadcast shape, apply, record. */
static gx_tensor *gx_binary(gx_ctx *ctx, const char *name, gx_bc_op op, gx_backward_fn bw,
                            gx_tensor *a, gx_tensor *b) {
    int64_t shape[GX_MAX_DIMS];
    int nd = gx_bc_shape(name, a, b, shape);
    gx_tensor *out = gx_tensor_new(ctx, nd, shape);
    gx_bc_apply(op, out->data, nd, shape, a->data, a->ndim, a->shape, b->data, b->ndim, b->shape);
    gx_tensor *in[2] = { a, b };
    gx_tape_record(ctx, name, bw, out, 2, in);
    return out;
}

/* add: da = g, db = g (each reduced to its own shape). */
static void gx_add_bw(gx_ctx *ctx, gx_node *n) {
    gx_bin_grad_add(ctx, n->in[0], n->out, n->out->grad);
    gx_bin_grad_add(ctx, n->in[1], n->out, n->out->grad);
}
gx_tensor *gx_add(gx_ctx *ctx, gx_tensor *a, gx_tensor *b) {
    GX_CUDA_DISPATCH(gx_on_cuda(a) || gx_on_cuda(b), gx_cuda_binary(ctx, "gx_add", GX_CU_ADD, a, b));
    return gx_binary(ctx, "gx_add", GX_BC_ADD, gx_add_bw, a, b);
}

/* sub: da = g, db = -g. */
static void gx_sub_bw(gx_ctx *ctx, gx_node *n) {
    gx_bin_grad_add(ctx, n->in[0], n->out, n->out->grad);
    if (!gx_grad(ctx, n->in[1])) return;
    gx_real *tmp = gx_bin_scratch(ctx, n->out);
    GX_SIMD
    for (int64_t i = 0; i < n->out->numel; i++) tmp[i] = -n->out->grad[i];
    gx_bin_grad_add(ctx, n->in[1], n->out, tmp);
}
gx_tensor *gx_sub(gx_ctx *ctx, gx_tensor *a, gx_tensor *b) {
    GX_CUDA_DISPATCH(gx_on_cuda(a) || gx_on_cuda(b), gx_cuda_binary(ctx, "gx_sub", GX_CU_SUB, a, b));
    return gx_binary(ctx, "gx_sub", GX_BC_SUB, gx_sub_bw, a, b);
}

/* mul: da = g * b, db = g * a. */
static void gx_mul_bw(gx_ctx *ctx, gx_node *n) {
    gx_tensor *a = n->in[0], *b = n->in[1], *out = n->out;
    gx_real *tmp = NULL;
    if (gx_grad(ctx, a)) {
        tmp = gx_bin_scratch(ctx, out);
        gx_bin_with(GX_BC_MUL, tmp, out, out->grad, b);
        gx_bin_grad_add(ctx, a, out, tmp);
    }
    if (gx_grad(ctx, b)) {
        if (!tmp) tmp = gx_bin_scratch(ctx, out);
        gx_bin_with(GX_BC_MUL, tmp, out, out->grad, a);
        gx_bin_grad_add(ctx, b, out, tmp);
    }
}
gx_tensor *gx_mul(gx_ctx *ctx, gx_tensor *a, gx_tensor *b) {
    GX_CUDA_DISPATCH(gx_on_cuda(a) || gx_on_cuda(b), gx_cuda_binary(ctx, "gx_mul", GX_CU_MUL, a, b));
    return gx_binary(ctx, "gx_mul", GX_BC_MUL, gx_mul_bw, a, b);
}

/* div: da = g / b, db = -g * a / b^2 = -(g * out) / b (reuses the output). */
static void gx_div_bw(gx_ctx *ctx, gx_node *n) {
    gx_tensor *a = n->in[0], *b = n->in[1], *out = n->out;
    gx_real *tmp = NULL;
    if (gx_grad(ctx, a)) {
        tmp = gx_bin_scratch(ctx, out);
        gx_bin_with(GX_BC_DIV, tmp, out, out->grad, b);
        gx_bin_grad_add(ctx, a, out, tmp);
    }
    if (gx_grad(ctx, b)) {
        if (!tmp) tmp = gx_bin_scratch(ctx, out);
        GX_SIMD
        for (int64_t i = 0; i < out->numel; i++) tmp[i] = out->grad[i] * out->data[i];
        gx_bin_with(GX_BC_DIV, tmp, out, tmp, b);    /* elementwise, in place is safe */
        gx_neg_inplace(tmp, out->numel);
        gx_bin_grad_add(ctx, b, out, tmp);
    }
}
gx_tensor *gx_div(gx_ctx *ctx, gx_tensor *a, gx_tensor *b) {
    GX_CUDA_DISPATCH(gx_on_cuda(a) || gx_on_cuda(b), gx_cuda_binary(ctx, "gx_div", GX_CU_DIV, a, b));
    return gx_binary(ctx, "gx_div", GX_BC_DIV, gx_div_bw, a, b);
}

/* maximum: out == a exactly where a >= b (ties included), so the mask of
 * a's gradient is EQ(out, a) and b takes the rest: g - g*mask. Ties give
 * the whole gradient to a (PyTorch splits it half/half; we keep a's
 * subgradient, which is what the header promises). */
static void gx_maximum_bw(gx_ctx *ctx, gx_node *n) {
    gx_tensor *a = n->in[0], *b = n->in[1], *out = n->out;
    const gx_real *g = out->grad;
    gx_real *ga = gx_bin_scratch(ctx, out);
    gx_bin_with(GX_BC_EQ, ga, out, out->data, a);
    GX_SIMD
    for (int64_t i = 0; i < out->numel; i++) ga[i] *= g[i];
    gx_bin_grad_add(ctx, a, out, ga);
    if (gx_grad(ctx, b)) {
        GX_SIMD
        for (int64_t i = 0; i < out->numel; i++) ga[i] = g[i] - ga[i];
        gx_bin_grad_add(ctx, b, out, ga);
    }
}
gx_tensor *gx_maximum(gx_ctx *ctx, gx_tensor *a, gx_tensor *b) {
    GX_CUDA_DISPATCH(gx_on_cuda(a) || gx_on_cuda(b), gx_cuda_binary(ctx, "gx_maximum", GX_CU_MAX, a, b));
    return gx_binary(ctx, "gx_maximum", GX_BC_MAX, gx_maximum_bw, a, b);
}
