/*
 * gx_cuda_body.cuh — the per-element bodies of the CUDA kernels, written
 * __host__ __device__ (GX_CU_HD) so that the same code also runs on the CPU:
 * tests/cuda/test_cuda_host.cu runs every body over every index on the host
 * and compares with the CPU ops, which checks the index logic (broadcast
 * strides, bins, taps, im2col/col2im, argmax, ...) on machines without a
 * GPU. The kernels (kernels/cuda/gx_cuda_*.cu) are thin grid-stride loops around
 * these; what remains GPU-only is the launch geometry, the warp/block
 * reductions, cuBLAS and the scan's lane segments.
 */
#ifndef GX_CUDA_BODY_CUH
#define GX_CUDA_BODY_CUH

#include "gx_cuda.h"
#include "gx_math.h"

#include <math.h>
#include <stdint.h>

#define GX_CU_HD __host__ __device__ __forceinline__

/* ================================================================ elem */

GX_CU_HD double gx_cu_uf(int op, double x, double p0, double p1) {
    switch (op) {
    case GX_CU_RELU:       return gx_relu_f(x);
    case GX_CU_LEAKY_RELU: return gx_leaky_f(x, p0);
    case GX_CU_GELU:       return gx_gelu_f(x);
    case GX_CU_SILU:       return gx_silu_f(x);
    case GX_CU_SIGMOID:    return gx_sigmoid_f(x);
    case GX_CU_SOFTPLUS:   return gx_softplus_f(x);
    case GX_CU_TANH:       return tanh(x);
    case GX_CU_EXP:        return exp(x);
    case GX_CU_LOG:        return log(x);
    case GX_CU_ATAN:       return atan(x);
    case GX_CU_SIN:        return sin(x);
    case GX_CU_COS:        return cos(x);
    case GX_CU_SQRT:       return sqrt(x);
    case GX_CU_SQUARE:     return x * x;
    case GX_CU_ABS:        return fabs(x);
    case GX_CU_NEG:        return -x;
    case GX_CU_AFFINE:     return p0 * x + p1;
    case GX_CU_POW:        return pow(x, p0);
    case GX_CU_STEP:       return x > p0 ? 1.0 : 0.0;
    default:               return x < p0 ? p0 : (x > p1 ? p1 : x);   /* clamp */
    }
}

/* Derivative given x and the saved output y (gx_elem.c's D expressions). */
GX_CU_HD double gx_cu_ud(int op, double x, double y, double p0, double p1) {
    switch (op) {
    case GX_CU_RELU:       return gx_relu_df(x);
    case GX_CU_LEAKY_RELU: return gx_leaky_df(x, p0);
    case GX_CU_GELU:       return gx_gelu_df(x);
    case GX_CU_SILU:       return gx_silu_df(x);
    case GX_CU_SIGMOID:    return gx_sigmoid_df_from_y(y);
    case GX_CU_SOFTPLUS:   return gx_softplus_df(x);
    case GX_CU_TANH:       return gx_tanh_df_from_y(y);
    case GX_CU_EXP:        return y;
    case GX_CU_LOG:        return 1.0 / x;
    case GX_CU_ATAN:       return gx_atan_df(x);
    case GX_CU_SIN:        return cos(x);
    case GX_CU_COS:        return -sin(x);
    case GX_CU_SQRT:       return 0.5 / y;
    case GX_CU_SQUARE:     return 2.0 * x;
    case GX_CU_ABS:        return (double)((x > 0) - (x < 0));
    case GX_CU_NEG:        return -1.0;
    case GX_CU_AFFINE:     return p0;
    case GX_CU_POW:        return p0 == 0.0 ? 0.0 : p0 * pow(x, p0 - 1.0);
    case GX_CU_STEP:       return 0.0;
    default:               return (x >= p0 && x <= p1) ? 1.0 : 0.0;      /* clamp */
    }
}

/* Output shape and the operands' strides in its index space (0 where
 * broadcast), passed by value to the kernels. */
typedef struct {
    int nd;
    int64_t shape[GX_MAX_DIMS];
    int64_t sa[GX_MAX_DIMS], sb[GX_MAX_DIMS];
} gx_cu_bc;

static inline void gx_cu_bc_strides(int nd, const int64_t *oshape, int ns, const int64_t *s, int64_t *st) {
    int64_t acc = 1;
    for (int d = nd - 1; d >= 0; d--) {
        int k = d - (nd - ns);
        int64_t n = k >= 0 ? s[k] : 1;
        st[d] = (n == 1 && oshape[d] != 1) ? 0 : acc;
        acc *= n;
    }
}

static inline gx_cu_bc gx_cu_bc_make(int na, const int64_t *ash, int nb, const int64_t *bsh,
                              int no, const int64_t *osh) {
    gx_cu_bc c;
    memset(&c, 0, sizeof c);
    c.nd = no;
    for (int d = 0; d < no; d++) c.shape[d] = osh[d];
    gx_cu_bc_strides(no, osh, na, ash, c.sa);
    gx_cu_bc_strides(no, osh, nb, bsh, c.sb);
    return c;
}

GX_CU_HD void gx_cu_bc_off(const gx_cu_bc &c, int64_t i, int64_t *oa, int64_t *ob) {
    int64_t a = 0, b = 0;
    for (int d = c.nd - 1; d >= 0; d--) {
        int64_t q = i % c.shape[d];
        i /= c.shape[d];
        a += q * c.sa[d];
        b += q * c.sb[d];
    }
    *oa = a; *ob = b;
}

GX_CU_HD float gx_cu_bf(int op, float x, float y) {
    switch (op) {
    case GX_CU_ADD: return x + y;
    case GX_CU_SUB: return x - y;
    case GX_CU_MUL: return x * y;
    case GX_CU_DIV: return x / y;
    default:        return x >= y ? x : y;       /* max; ties -> a */
    }
}

GX_CU_HD float gx_cu_binary_at(int op, const gx_cu_bc &c, const float *a, const float *b, int64_t i) {
    int64_t ia, ib;
    gx_cu_bc_off(c, i, &ia, &ib);
    return gx_cu_bf(op, a[ia], b[ib]);
}

/* Per-element gradient term of operand `which` (0 = a, 1 = b) at output
 * index i, as the CPU computes it (float arithmetic, same association). */
GX_CU_HD float gx_cu_binary_term_at(int op, int which, const gx_cu_bc &c, const float *a, const float *b,
                                    const float *out, const float *g, int64_t i) {
    int64_t ia, ib;
    gx_cu_bc_off(c, i, &ia, &ib);
    float gi = g[i];
    switch (op) {
    case GX_CU_ADD: return gi;
    case GX_CU_SUB: return which ? -gi : gi;
    case GX_CU_MUL: return which ? gi * a[ia] : gi * b[ib];
    case GX_CU_DIV: return which ? -((gi * out[i]) / b[ib]) : gi / b[ib];
    default: {                                 /* max: a takes ties */
        float m = (float)(out[i] == a[ia]) * gi;
        return which ? gi - m : m;
    }
    }
}

/* g's dims split into kept (the target's) and reduced ones, each with its
 * size and stride in g, in memory order (last dim fastest). Target element
 * e is the kept index; it sums over every reduced index q in order. */
typedef struct {
    int nk, nr;
    int64_t ks[GX_MAX_DIMS], kst[GX_MAX_DIMS];
    int64_t rs[GX_MAX_DIMS], rst[GX_MAX_DIMS];
    int64_t n_kept, n_red;
} gx_cu_rb;

GX_CU_HD int64_t gx_cu_rb_off(int n, const int64_t *sz, const int64_t *st, int64_t q) {
    int64_t off = 0;
    for (int d = n - 1; d >= 0; d--) {
        off += (q % sz[d]) * st[d];
        q /= sz[d];
    }
    return off;
}

/* Builds the split of g (shape from, nf dims) against acc (shape to, nt
 * dims, aligned at the right). Returns 0 when g is empty. */
static inline int gx_cu_rb_make(gx_cu_rb *r, int nt, const int64_t *to, int nf, const int64_t *from) {
    int64_t ks[GX_MAX_DIMS], kst[GX_MAX_DIMS], rs[GX_MAX_DIMS], rst[GX_MAX_DIMS];
    int nk = 0, nr = 0;
    int64_t st = 1;
    r->n_kept = r->n_red = 1;
    for (int d = nf - 1; d >= 0; d--) {          /* right to left */
        int k = d - (nf - nt);
        int64_t tn = k >= 0 ? to[k] : 1;
        if (from[d] != 1) {
            if (tn == 1) { rs[nr] = from[d]; rst[nr++] = st; r->n_red *= from[d]; }
            else         { ks[nk] = from[d]; kst[nk++] = st; r->n_kept *= from[d]; }
        }
        st *= from[d];
    }
    r->nk = nk; r->nr = nr;
    for (int i = 0; i < nk; i++) { r->ks[i] = ks[nk - 1 - i]; r->kst[i] = kst[nk - 1 - i]; }
    for (int i = 0; i < nr; i++) { r->rs[i] = rs[nr - 1 - i]; r->rst[i] = rst[nr - 1 - i]; }
    return st != 0;
}

/* Sum over the reduced dims for target e, from reduced index q0 in steps. */
GX_CU_HD double gx_cu_rb_sum(const gx_cu_rb &r, const float *g, int64_t e, int64_t q0, int64_t step) {
    int64_t base = gx_cu_rb_off(r.nk, r.ks, r.kst, e);
    double sum = 0;
    for (int64_t q = q0; q < r.n_red; q += step) sum += g[base + gx_cu_rb_off(r.nr, r.rs, r.rst, q)];
    return sum;
}

/* ============================================================== reduce */

/* Offset of element j of column c of x viewed as [outer, n, inner]. */
GX_CU_HD int64_t gx_cu_at(int64_t c, int64_t j, int64_t n, int64_t inner) {
    return ((c / inner) * n + j) * inner + c % inner;
}

/* The CPU's scan: strict > keeps the first maximum. */
GX_CU_HD int64_t gx_cu_argmax(const float *x, int64_t c, int64_t n, int64_t inner) {
    float m = x[gx_cu_at(c, 0, n, inner)];
    int64_t a = 0;
    for (int64_t j = 1; j < n; j++) {
        float v = x[gx_cu_at(c, j, n, inner)];
        if (v > m) { m = v; a = j; }
    }
    return a;
}

/* ================================================================ norm */

/* y = x a + (beta - mu a), a = gamma / std (the CPU's form). */
GX_CU_HD float gx_cu_bn_apply_at(const float *x, const float *gamma, const float *beta, const double *mean,
                                 const double *rstd, int64_t k, int64_t C, int64_t S) {
    const int64_t c = (k / S) % C;
    const double a = (gamma ? gamma[c] : 1.0) * rstd[c];
    const double sh = (beta ? beta[c] : 0.0) - mean[c] * a;
    return (float)(x[k] * a + sh);
}

/* ================================================================ pool */

GX_CU_HD int64_t gx_cu_lo(int64_t i, int64_t n, int64_t on) { return (i * n) / on; }
GX_CU_HD int64_t gx_cu_hi(int64_t i, int64_t n, int64_t on) { return ((i + 1) * n + on - 1) / on; }

/* Output k of the adaptive pool of planes [H, W] -> [oh, ow]. */
GX_CU_HD float gx_cu_adapt_at(const float *x, int64_t k, int64_t H, int64_t W, int64_t oh, int64_t ow) {
    int64_t j = k % ow, i = (k / ow) % oh, p = k / (ow * oh);
    int64_t y0 = gx_cu_lo(i, H, oh), y1 = gx_cu_hi(i, H, oh);
    int64_t x0 = gx_cu_lo(j, W, ow), x1 = gx_cu_hi(j, W, ow);
    const float *in = x + p * H * W;
    double s = 0;
    for (int64_t yy = y0; yy < y1; yy++)
        for (int64_t xx = x0; xx < x1; xx++) s += in[yy * W + xx];
    return (float)(s / (double)((y1 - y0) * (x1 - x0)));
}

/* Input k's gradient: gx[k] plus, in the CPU's (i, j) order, g / count of
 * every bin holding it. Bins holding yy form a range starting at or after
 * yy*oh/H - 1 (bins are monotone). */
GX_CU_HD float gx_cu_adapt_bw_at(const float *g, float acc, int64_t k, int64_t H, int64_t W, int64_t oh,
                                 int64_t ow) {
    int64_t xx = k % W, yy = (k / W) % H, p = k / (W * H);
    const float *gp = g + p * oh * ow;
    int64_t ib = (yy * oh) / H - 1, jb = (xx * ow) / W - 1;
    for (int64_t i = ib < 0 ? 0 : ib; i < oh && gx_cu_lo(i, H, oh) <= yy; i++) {
        if (gx_cu_hi(i, H, oh) <= yy) continue;
        for (int64_t j = jb < 0 ? 0 : jb; j < ow && gx_cu_lo(j, W, ow) <= xx; j++) {
            if (gx_cu_hi(j, W, ow) <= xx) continue;
            int64_t cnt = (gx_cu_hi(i, H, oh) - gx_cu_lo(i, H, oh)) * (gx_cu_hi(j, W, ow) - gx_cu_lo(j, W, ow));
            acc += (float)(gp[i * ow + j] / (double)cnt);
        }
    }
    return acc;
}

typedef struct { int64_t i0, i1; double w0, w1; } gx_cu_tap;

/* gx_lerp_taps of gx_pool.c for one output coordinate d. */
GX_CU_HD gx_cu_tap gx_cu_tap_at(int64_t d, int64_t n, int64_t on) {
    const double scale = (double)n / (double)on;
    double src = ((double)d + 0.5) * scale - 0.5;
    if (src < 0) src = 0;
    int64_t i0 = (int64_t)floor(src);
    if (i0 > n - 1) i0 = n - 1;
    double l1 = src - (double)i0;
    if (l1 > 1) l1 = 1;
    gx_cu_tap t = { i0, i0 < n - 1 ? i0 + 1 : i0, 1.0 - l1, l1 };
    return t;
}

/* Output coordinates whose taps can touch input c: a window around the
 * inverse map d = (c + 0.5)/scale - 0.5, widened by 2 on each side. */
GX_CU_HD void gx_cu_tap_range(int64_t c, int64_t n, int64_t on, int64_t *d0, int64_t *d1) {
    const double scale = (double)n / (double)on;
    int64_t a = (int64_t)floor(((double)c - 0.5) / scale - 0.5) - 2;
    int64_t b = (int64_t)ceil(((double)c + 1.5) / scale - 0.5) + 2;
    *d0 = a < 0 ? 0 : a;
    *d1 = b > on ? on : b;
}

GX_CU_HD float gx_cu_bilin_at(const float *x, int64_t k, int64_t H, int64_t W, int64_t oh, int64_t ow) {
    int64_t j = k % ow, i = (k / ow) % oh, p = k / (ow * oh);
    gx_cu_tap ty = gx_cu_tap_at(i, H, oh), tx = gx_cu_tap_at(j, W, ow);
    const float *r0 = x + (p * H + ty.i0) * W, *r1 = x + (p * H + ty.i1) * W;
    double t0 = tx.w0 * r0[tx.i0] + tx.w1 * r0[tx.i1];
    double t1 = tx.w0 * r1[tx.i0] + tx.w1 * r1[tx.i1];
    return (float)(ty.w0 * t0 + ty.w1 * t1);
}

/* The CPU's two transposed passes, per input value: t[yy, j] = sum over
 * output rows i of their weight on yy times g[i, j] (double), then the
 * float adds of w(xx) * t[yy, j] in j order, onto acc (= gx[k]). */
GX_CU_HD float gx_cu_bilin_bw_at(const float *g, float acc, int64_t k, int64_t H, int64_t W, int64_t oh,
                                 int64_t ow) {
    int64_t xx = k % W, yy = (k / W) % H, p = k / (W * H);
    int64_t i0, i1, j0, j1;
    gx_cu_tap_range(yy, H, oh, &i0, &i1);
    gx_cu_tap_range(xx, W, ow, &j0, &j1);
    const float *gp = g + p * oh * ow;
    for (int64_t j = j0; j < j1; j++) {
        gx_cu_tap tx = gx_cu_tap_at(j, W, ow);
        if (tx.i0 != xx && tx.i1 != xx) continue;
        double t = 0;
        for (int64_t i = i0; i < i1; i++) {
            gx_cu_tap ty = gx_cu_tap_at(i, H, oh);
            if (ty.i0 == yy) t += ty.w0 * gp[i * ow + j];
            if (ty.i1 == yy) t += ty.w1 * gp[i * ow + j];
        }
        if (tx.i0 == xx) acc += (float)(tx.w0 * t);
        if (tx.i1 == xx) acc += (float)(tx.w1 * t);
    }
    return acc;
}

/* Nearest x2: output k (rows over every plane) and input k's gradient. */
GX_CU_HD float gx_cu_near_at(const float *x, int64_t k, int64_t W) {
    int64_t j = k % (2 * W), r = k / (2 * W);
    return x[(r / 2) * W + j / 2];
}
GX_CU_HD float gx_cu_near_bw_at(const float *g, float acc, int64_t k, int64_t W) {
    int64_t j = k % W, r = k / W;
    const float *g0 = g + (2 * r) * (2 * W), *g1 = g0 + 2 * W;
    return acc + (g0[2 * j] + g0[2 * j + 1] + g1[2 * j] + g1[2 * j + 1]);
}

/* Max pool (gx_maxpool_plane_fwd): the in-plane index of the maximum of
 * output k's window, first in row-major order, a NaN wins (PyTorch). */
GX_CU_HD int64_t gx_cu_maxpool_arg(const float *x, int64_t k, int64_t H, int64_t W, int64_t oh, int64_t ow,
                                   int ks, int s, int pad) {
    const int64_t j = k % ow, i = (k / ow) % oh, p = k / (ow * oh);
    const float *in = x + p * H * W;
    const int64_t y0 = i * s - pad, y1 = y0 + ks < H ? y0 + ks : H, ys = y0 > 0 ? y0 : 0;
    const int64_t x0 = j * s - pad, x1 = x0 + ks < W ? x0 + ks : W, xs = x0 > 0 ? x0 : 0;
    int64_t best_i = ys * W + xs;
    float best = -INFINITY;
    for (int64_t yy = ys; yy < y1; yy++)
        for (int64_t xx = xs; xx < x1; xx++) {
            const float v = in[yy * W + xx];
            if (v > best || isnan(v)) { best = v; best_i = yy * W + xx; }
        }
    return best_i;
}

/* Input k's gradient: acc plus g of every window (in output order) whose
 * maximum is k. Windows holding row yy: i in [(yy+pad-ks+1)/s, (yy+pad)/s]. */
GX_CU_HD float gx_cu_maxpool_bw_at(const float *x, const float *g, float acc, int64_t k, int64_t H, int64_t W,
                                   int64_t oh, int64_t ow, int ks, int s, int pad) {
    const int64_t xx = k % W, yy = (k / W) % H, p = k / (W * H), me = yy * W + xx;
    int64_t i0 = yy + pad - ks + 1, j0 = xx + pad - ks + 1;
    i0 = i0 <= 0 ? 0 : (i0 + s - 1) / s;
    j0 = j0 <= 0 ? 0 : (j0 + s - 1) / s;
    int64_t i1 = (yy + pad) / s, j1 = (xx + pad) / s;
    if (i1 > oh - 1) i1 = oh - 1;
    if (j1 > ow - 1) j1 = ow - 1;
    for (int64_t i = i0; i <= i1; i++)
        for (int64_t j = j0; j <= j1; j++) {
            const int64_t o = (p * oh + i) * ow + j;
            if (gx_cu_maxpool_arg(x, o, H, W, oh, ow, ks, s, pad) == me) acc += g[o];
        }
    return acc;
}

/* ================================================================ conv */

typedef struct { int64_t Cin, H, W, kh, kw, Ho, Wo, st, pad; } gx_cu_cv;

static inline gx_cu_cv gx_cu_cv_make(const gx_cu_conv_shape *c) {
    gx_cu_cv v = { c->Cin, c->H, c->W, c->kh, c->kw,
                   (c->H + 2 * c->pad - c->kh) / c->stride + 1, (c->W + 2 * c->pad - c->kw) / c->stride + 1,
                   c->stride, c->pad };
    return v;
}

/* col[((ci*kh + ki)*kw + kj), oy*Wo + ox] = x[ci, oy*s - p + ki, ox*s - p + kj] (0 outside). */
GX_CU_HD float gx_cu_im2col_at(const gx_cu_cv &v, const float *x, int64_t i) {
    const int64_t P = v.Ho * v.Wo;
    int64_t p = i % P, r = i / P;
    int64_t kj = r % v.kw, ki = (r / v.kw) % v.kh, ci = r / (v.kw * v.kh);
    int64_t iy = (p / v.Wo) * v.st - v.pad + ki, ix = (p % v.Wo) * v.st - v.pad + kj;
    return (iy >= 0 && iy < v.H && ix >= 0 && ix < v.W) ? x[(ci * v.H + iy) * v.W + ix] : 0.0f;
}

/* Sum of the col entries that read input i = (ci, iy, ix). */
GX_CU_HD double gx_cu_col2im_at(const gx_cu_cv &v, const float *col, int64_t i) {
    const int64_t P = v.Ho * v.Wo;
    int64_t ix = i % v.W, iy = (i / v.W) % v.H, ci = i / (v.W * v.H);
    double acc = 0;
    for (int64_t ki = 0; ki < v.kh; ki++) {
        int64_t ty = iy + v.pad - ki;
        if (ty < 0 || ty % v.st) continue;
        int64_t oy = ty / v.st;
        if (oy >= v.Ho) continue;
        for (int64_t kj = 0; kj < v.kw; kj++) {
            int64_t tx = ix + v.pad - kj;
            if (tx < 0 || tx % v.st) continue;
            int64_t ox = tx / v.st;
            if (ox >= v.Wo) continue;
            acc += col[((ci * v.kh + ki) * v.kw + kj) * P + oy * v.Wo + ox];
        }
    }
    return acc;
}

/* Causal depthwise conv1d over time, channels last (gx_conv1d_causal_dw):
 * y[b,t,e] = bias[e] + sum_k w[e,k] x[b, t-(K-1)+k, e], zero before t = 0.
 * Sums in double, k ascending. */
GX_CU_HD float gx_cu_c1_at(const float *x, const float *w, const float *bias, int64_t i, int64_t L, int64_t E,
                           int64_t K) {
    const int64_t e = i % E, t = (i / E) % L, b = i / (E * L);
    double acc = bias ? (double)bias[e] : 0.0;
    for (int64_t k = 0; k < K; k++) {
        const int64_t s = t - (K - 1) + k;
        if (s >= 0) acc += (double)w[e * K + k] * x[(b * L + s) * E + e];
    }
    return (float)acc;
}
/* dx[b,s,e] = sum_k w[e,k] dy[b, s+(K-1)-k, e] over the t that exist. */
GX_CU_HD double gx_cu_c1_dx_at(const float *w, const float *dy, int64_t i, int64_t L, int64_t E, int64_t K) {
    const int64_t e = i % E, s = (i / E) % L, b = i / (E * L);
    double acc = 0.0;
    for (int64_t k = 0; k < K; k++) {
        const int64_t t = s + (K - 1) - k;
        if (t < L) acc += (double)w[e * K + k] * dy[(b * L + t) * E + e];
    }
    return acc;
}
/* dw[e,k] (idx = e*K + k), or db[e] when k < 0: sums over b and t. */
GX_CU_HD double gx_cu_c1_dw_at(const float *x, const float *dy, int64_t e, int64_t k, int64_t B, int64_t L,
                               int64_t E, int64_t K) {
    double acc = 0.0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < L; t++) {
            const int64_t s = t - (K - 1) + k;
            if (k < 0) acc += dy[(b * L + t) * E + e];
            else if (s >= 0) acc += (double)dy[(b * L + t) * E + e] * x[(b * L + s) * E + e];
        }
    return acc;
}

/* ================================================================ scan */

/* Scan geometry: lanes per channel np = N rounded up to a power of two
 * (<= 32), so 32/np channels share a warp, GX_CU_SCAN_WARPS warps a block. */
#define GX_CU_SCAN_WARPS 4
typedef struct { int64_t B, L, Ld, E, N; int np; } gx_cu_sd;

static inline gx_cu_sd gx_cu_scan_dims(int64_t B, int64_t L, int64_t Ld, int64_t E, int64_t N,
                                       int64_t *nblocks) {
    gx_cu_sd d = { B, L, Ld, E, N, 1 };
    while (d.np < N) d.np <<= 1;
    int64_t per_block = GX_CU_SCAN_WARPS * (32 / d.np);
    *nblocks = (E + per_block - 1) / per_block;
    return d;
}

/* Thread tid of block `blk` (along E): its channel e and state n, and
 * whether it is a real state of a real channel. */
GX_CU_HD int gx_cu_scan_lane(const gx_cu_sd &d, int64_t blk, int tid, int64_t *e, int *n) {
    const int cpw = 32 / d.np;                         /* channels per warp */
    *e = (blk * GX_CU_SCAN_WARPS + (tid >> 5)) * cpw + (tid & 31) / d.np;
    *n = (tid & 31) % d.np;
    return *e < d.E && *n < d.N;
}

/* Abar and the Bbar factor of one step (gx_zoh_bfactor's limit branch). */
GX_CU_HD void gx_cu_scan_coef(double dt, double An, double *a, double *f) {
    *a = exp(dt * An);
    *f = gx_zoh_bfactor(dt, An, *a);
}

/* One reverse step of one lane (gx_scan_bwd_pair of gx_scan.c): updates the
 * carried dL/dh and the parameter sums, returns the lane's shares of the
 * delta and xs gradients (summed over the channel's lanes by the caller).
 * hp = h_{t-1} (0 at t = 0). */
GX_CU_HD void gx_cu_scan_bstep(double dt, double An, double Bn, double Cn, double xt, double g, double ht,
                               double hp, double *gh, double *pA, double *pB, double *pC, double *sd,
                               double *sx) {
    double an, fn;
    gx_cu_scan_coef(dt, An, &an, &fn);
    const double small = fabs(dt * An) < 1e-6 ? 1.0 : 0.0;
    const double dfdd = an + small * (1.0 - an);
    const double dfdA = small != 0.0 ? 0.0 : (dt * an - fn) / An;
    const double ghn = *gh + g * Cn;                   /* dL/dh_t */
    const double ga = ghn * hp, gf = ghn * Bn * xt;
    *pC += g * ht;
    *pB += ghn * fn * xt;
    *pA += ga * dt * an + gf * dfdA;
    *sd = ga * An * an + gf * dfdd;
    *sx = ghn * fn * Bn;
    *gh = ghn * an;                                    /* carried to h_{t-1} */
}

/* ============================================================ sinkhorn */

/* gx_sinkhorn.c's algorithm, one row per thread (the row's iterations are a
 * serial chain; rows are independent). mats = [K | K^T | M | M^T], n*n
 * doubles each, M = K o C. */
GX_CU_HD void gx_cu_sk_build_at(const float *C, double lambda, int64_t n, int64_t idx, double *mats) {
    const int64_t i = idx / n, j = idx % n, nn = n * n;
    double c = (double)C[idx], z = -c / lambda;
    z = z < -100.0 ? -100.0 : (z > 100.0 ? 100.0 : z);
    double k = exp(z);
    mats[i * n + j] = mats[nn + j * n + i] = k;
    mats[2 * nn + i * n + j] = mats[3 * nn + j * n + i] = k * c;
}

/* y = R^T x for row-major R, summed over j in order (the CPU's order). */
GX_CU_HD void gx_cu_sk_matvec_t(const double *R, const double *x, double *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = 0.0;
    for (int64_t j = 0; j < n; j++) {
        const double xj = x[j], *r = R + j * n;
        for (int64_t i = 0; i < n; i++) y[i] += xj * r[i];
    }
}

/* The iterations and S of one row (gx_sk_row_forward). w: 3n doubles;
 * pq: 2n*iters doubles for the denominators, or NULL. */
GX_CU_HD double gx_cu_sk_row_fwd(const double *mats, const float *a, const float *b, int64_t n, int iters,
                                 double eps, double *w, double *pq) {
    const int64_t nn = n * n;
    const double *K = mats, *KT = mats + nn, *MT = mats + 3 * nn;
    double *u = w, *v = w + n, *t = w + 2 * n;
    for (int64_t j = 0; j < n; j++) v[j] = 1.0;
    for (int k = 0; k < iters; k++) {
        gx_cu_sk_matvec_t(KT, v, t, n);                /* K v */
        for (int64_t i = 0; i < n; i++) { t[i] += eps; u[i] = (double)a[i] / t[i]; }
        if (pq) for (int64_t i = 0; i < n; i++) pq[(int64_t)k * 2 * n + i] = t[i];
        gx_cu_sk_matvec_t(K, u, t, n);                 /* K^T u */
        for (int64_t j = 0; j < n; j++) { t[j] += eps; v[j] = (double)b[j] / t[j]; }
        if (pq) for (int64_t j = 0; j < n; j++) pq[(int64_t)k * 2 * n + n + j] = t[j];
    }
    gx_cu_sk_matvec_t(MT, v, t, n);                    /* M v */
    double S = 0.0;
    for (int64_t i = 0; i < n; i++) S += u[i] * t[i];
    return S;
}

/* Reverse sweep of one row (gx_sk_row_backward); adds into ga, gb (either
 * may be NULL). w: 7n doubles. */
GX_CU_HD void gx_cu_sk_row_bwd(const double *mats, const float *a, const float *b, const double *pq,
                               int64_t n, int iters, double gS, float *ga, float *gb, double *w) {
    const int64_t nn = n * n;
    const double *K = mats, *KT = mats + nn, *M = mats + 2 * nn, *MT = mats + 3 * nn;
    double *u = w, *v = w + n, *gu = w + 2 * n, *gv = w + 3 * n, *g = w + 4 * n;
    double *Ga = w + 5 * n, *Gb = w + 6 * n;
    for (int64_t i = 0; i < n; i++) Ga[i] = Gb[i] = 0.0;
    const double *pT = pq + (int64_t)(iters - 1) * 2 * n, *qT = pT + n;
    for (int64_t i = 0; i < n; i++) { u[i] = (double)a[i] / pT[i]; v[i] = (double)b[i] / qT[i]; }
    gx_cu_sk_matvec_t(MT, v, gu, n);                   /* M v */
    gx_cu_sk_matvec_t(M, u, gv, n);                    /* M^T u */
    for (int64_t i = 0; i < n; i++) { gu[i] *= gS; gv[i] *= gS; }
    for (int k = iters - 1; k >= 0; k--) {
        const double *p = pq + (int64_t)k * 2 * n, *q = p + n;
        for (int64_t j = 0; j < n; j++) {
            double vj = (double)b[j] / q[j];
            Gb[j] += gv[j] / q[j];
            g[j] = -gv[j] * vj / q[j];                 /* dL/dq_k */
        }
        gx_cu_sk_matvec_t(KT, g, v, n);                /* gu += K gq */
        for (int64_t i = 0; i < n; i++) gu[i] += v[i];
        for (int64_t i = 0; i < n; i++) {
            double ui = (double)a[i] / p[i];
            Ga[i] += gu[i] / p[i];
            g[i] = -gu[i] * ui / p[i];                 /* dL/dp_k */
            gu[i] = 0.0;
        }
        gx_cu_sk_matvec_t(K, g, gv, n);                /* gv = K^T gp */
    }
    for (int64_t i = 0; i < n; i++) {
        if (ga) ga[i] += (float)Ga[i];
        if (gb) gb[i] += (float)Gb[i];
    }
}

/* d sqrt(max(S,0) + 1e-8) / dS times the upstream gradient; 0 where S <= 0. */
GX_CU_HD double gx_cu_sk_gS(double S, float gout) {
    return S > 0 ? (double)gout * 0.5 / sqrt(S + 1e-8) : 0.0;
}

/* ================================================================ optim */

/* One element of gx_adam_update (Adam or AdamW, bias-corrected moments):
 * step_size = lr / (1 - b1^t), bc2_sqrt = sqrt(1 - b2^t), shrink = 1 - lr*wd
 * for AdamW (else 1), l2 = wd for Adam (else 0). */
GX_CU_HD void gx_cu_adam_at(float *x, const float *g, float *m, float *v, int64_t k, double b1, double b2,
                            double eps, double step_size, double bc2_sqrt, double shrink, double l2) {
    double p = (double)x[k] * shrink;
    double gk = (double)g[k] + l2 * (double)x[k];
    double mk = b1 * (double)m[k] + (1.0 - b1) * gk;
    double vk = b2 * (double)v[k] + (1.0 - b2) * gk * gk;
    m[k] = (float)mk;
    v[k] = (float)vk;
    x[k] = (float)(p - step_size * mk / (sqrt(vk) / bc2_sqrt + eps));
}

/* The per-tensor scalars of gx_adam_update for step t (1-based). */
typedef struct { double step_size, bc2_sqrt, shrink, l2; } gx_cu_adam_sc;
static inline gx_cu_adam_sc gx_cu_adam_scalars(const gx_optim_cfg *c, int64_t t, double lr, double wd) {
    gx_cu_adam_sc r = { lr / (1.0 - pow(c->beta1, (double)t)), sqrt(1.0 - pow(c->beta2, (double)t)),
                        c->kind == GX_OPT_ADAMW ? 1.0 - lr * wd : 1.0, c->kind == GX_OPT_ADAM ? wd : 0.0 };
    return r;
}

/* One element of gx_sgd_update; buf NULL when momentum is 0. */
GX_CU_HD void gx_cu_sgd_at(float *x, const float *g, float *buf, int64_t k, double mu, int nesterov, int first,
                           double lr, double wd) {
    double d = (double)g[k] + wd * (double)x[k];
    if (buf) {
        double b = first ? d : mu * (double)buf[k] + d;
        buf[k] = (float)b;
        d = nesterov ? d + mu * b : b;
    }
    x[k] = (float)((double)x[k] - lr * d);
}

/* =============================================================== shape */

/* Permute: the destination's shape and, per destination dim, the stride of
 * the source dim it takes (gx_permute_strides of gx_shape.c). The forward
 * walks y's layout with perm; the backward walks x's layout with the
 * inverse perm over g (both gather: every destination element is written
 * by one thread). */
typedef struct { int nd; int64_t dshape[GX_MAX_DIMS], sstride[GX_MAX_DIMS]; } gx_cu_pm;

static inline gx_cu_pm gx_cu_pm_make(int nd, const int64_t *sshape, const int *perm) {
    gx_cu_pm p;
    memset(&p, 0, sizeof p);
    p.nd = nd;
    int64_t st[GX_MAX_DIMS], acc = 1;
    for (int d = nd - 1; d >= 0; d--) { st[d] = acc; acc *= sshape[d]; }
    for (int d = 0; d < nd; d++) { p.dshape[d] = sshape[perm[d]]; p.sstride[d] = st[perm[d]]; }
    return p;
}

/* Source offset of destination element i. */
GX_CU_HD int64_t gx_cu_pm_src(const gx_cu_pm &p, int64_t i) {
    int64_t off = 0;
    for (int d = p.nd - 1; d >= 0; d--) {
        off += (i % p.dshape[d]) * p.sstride[d];
        i /= p.dshape[d];
    }
    return off;
}

/* Element i of a band [outer, m, inner] sits at this offset of the full
 * [outer, n, inner] tensor when the band starts at row off (concat's inputs,
 * slices, split parts). */
GX_CU_HD int64_t gx_cu_band_at(int64_t i, int64_t m, int64_t inner, int64_t n, int64_t off) {
    const int64_t t = i % inner, j = (i / inner) % m, o = i / (inner * m);
    return (o * n + off + j) * inner + t;
}

/* Element i of flip along the middle dim reads this offset (an involution). */
GX_CU_HD int64_t gx_cu_flip_at(int64_t i, int64_t n, int64_t inner) {
    const int64_t t = i % inner, j = (i / inner) % n, o = i / (inner * n);
    return (o * n + (n - 1 - j)) * inner + t;
}

GX_CU_HD float gx_cu_one_hot_at(const int32_t *idx, int64_t k, int64_t K) {
    return (int64_t)idx[k / K] == k % K ? 1.0f : 0.0f;
}

/* ====================================================== column partials */

/* Statistics of column c of x viewed as [outer, n, inner], over the rows
 * j = j0, j0 + step, ...: on the GPU each lane of a warp takes one j0 (step
 * 32) and the partials meet in a shuffle tree; the host test combines them
 * in a loop. Comparisons as the CPU's (a NaN never becomes the max). */
GX_CU_HD double gx_cu_col_max_part(const float *x, int64_t c, int64_t n, int64_t inner, int64_t j0,
                                   int64_t step) {
    double m = -INFINITY;
    for (int64_t j = j0; j < n; j += step) {
        const double v = x[gx_cu_at(c, j, n, inner)];
        m = v > m ? v : m;
    }
    return m;
}
/* sum exp(x - m) (m: the column max, 0 when it is -inf). */
GX_CU_HD double gx_cu_col_expsum_part(const float *x, int64_t c, int64_t n, int64_t inner, double m,
                                      int64_t j0, int64_t step) {
    double s = 0;
    for (int64_t j = j0; j < n; j += step) s += exp((double)x[gx_cu_at(c, j, n, inner)] - m);
    return s;
}
/* sum x w (w == x: the squared norm). */
GX_CU_HD double gx_cu_col_dot_part(const float *x, const float *w, int64_t c, int64_t n, int64_t inner,
                                   int64_t j0, int64_t step) {
    double s = 0;
    for (int64_t j = j0; j < n; j += step) {
        const int64_t k = gx_cu_at(c, j, n, inner);
        s += (double)x[k] * w[k];
    }
    return s;
}

/* The column of element k of [outer, n, inner]. */
GX_CU_HD int64_t gx_cu_col_of(int64_t k, int64_t n, int64_t inner) {
    return (k / (n * inner)) * inner + k % inner;
}

/* logsumexp backward (gx_logsumexp_bw): g and the float output y of k's column. */
GX_CU_HD float gx_cu_lse_bw_at(const float *x, const float *y, const float *g, float acc, int64_t k, int64_t n,
                               int64_t inner) {
    const int64_t c = gx_cu_col_of(k, n, inner);
    return acc + (float)((double)g[c] * exp((double)x[k] - (double)y[c]));
}

/* L2 normalise: the forward multiplier from the column norm, and the
 * backward's two per-column factors (gx_l2_normalize_bw): where the norm
 * is below eps, d is the constant eps and the norm's path is cut. */
GX_CU_HD double gx_cu_l2n_inv(double norm, double eps) { return 1.0 / (norm > eps ? norm : eps); }
GX_CU_HD void gx_cu_l2n_bw_coef(double norm, double eps, double dot, double *inv, double *d2) {
    const int clamped = norm < eps;
    *inv = 1.0 / (clamped ? eps : norm);
    *d2 = clamped ? 0.0 : dot * *inv;
}

/* Chunk `chunk` of a flat buffer (GX_CU_CHUNK elements), from element t0 in
 * steps: a block's thread t sums t0 = t, step = blockDim. square: x^2. */
GX_CU_HD double gx_cu_chunk_part(const float *x, int64_t n, int64_t chunk, int64_t t0, int64_t step,
                                 int square) {
    const int64_t lo = chunk * GX_CU_CHUNK, hi = lo + GX_CU_CHUNK < n ? lo + GX_CU_CHUNK : n;
    double s = 0;
    for (int64_t k = lo + t0; k < hi; k += step) s += square ? (double)x[k] * x[k] : (double)x[k];
    return s;
}

/* The clipping factor of gx_clip_grad_norm, 1 when nothing is scaled. */
GX_CU_HD double gx_cu_clip_coef(double norm, double max_norm) {
    const double c = max_norm / (norm + 1e-6);
    return (isfinite(norm) && c < 1.0) ? c : 1.0;
}

/* ========================================================== pairwise */

/* |m_i|^2 in double, k ascending (gx_row_sqnorms). */
GX_CU_HD double gx_cu_row_sqnorm(const float *m, int64_t i, int64_t D) {
    double s = 0;
    for (int64_t k = 0; k < D; k++) s += (double)m[i * D + k] * (double)m[i * D + k];
    return s;
}
/* d[k] = max(0, -2ab (from the GEMM) + |a_i|^2 + |b_j|^2); sq = [na | nb]. */
GX_CU_HD float gx_cu_sqd_at(const float *d, const double *sq, int64_t k, int64_t N, int64_t M) {
    const double v = (double)d[k] + sq[k / M] + sq[N + k % M];
    return (float)(v > 0 ? v : 0);
}
/* Row sum (by_col 0: row i over M columns) or column sum (by_col 1: column
 * i over N rows) of the masked gradient, in double, in the CPU's order. */
GX_CU_HD double gx_cu_mat_sum(const float *m, int64_t i, int64_t N, int64_t M, int by_col) {
    double s = 0;
    if (by_col) for (int64_t r = 0; r < N; r++) s += (double)m[r * M + i];
    else        for (int64_t j = 0; j < M; j++) s += (double)m[i * M + j];
    return s;
}

/* ================================================= fused convolutions */

/* gx_upconv2x3: kernel rows (or columns) [lo, hi] that low-resolution tap a
 * of output parity p sums (gx_up_lo / gx_up_hi of gx_conv.c). */
GX_CU_HD int gx_cu_up_lo(int p, int a) { return p == 0 ? a : 2 * a; }
GX_CU_HD int gx_cu_up_hi(int p, int a) { return p == 0 ? 2 * a : 1 + a; }

/* Folded weights wp [4 parities][Cout][4 taps][Cin]: parity par's 2x2 conv
 * as one [Cout, 4Cin] matrix (column t*Cin + ci, the im2col row order).
 * Float sums in the CPU's (r, u) order, so the folded values are the CPU's. */
GX_CU_HD float gx_cu_up_fold_at(const float *w, int64_t idx, int64_t Cout, int64_t Cin) {
    const int64_t ci = idx % Cin, co = (idx / (4 * Cin)) % Cout;
    const int t = (int)((idx / Cin) % 4), par = (int)(idx / (4 * Cin * Cout));
    const int a = t / 2, c = t % 2, py = par / 2, px = par % 2;
    const float *k = w + (co * Cin + ci) * 9;
    float s = 0;
    for (int r = gx_cu_up_lo(py, a); r <= gx_cu_up_hi(py, a); r++)
        for (int u = gx_cu_up_lo(px, c); u <= gx_cu_up_hi(px, c); u++) s += k[r * 3 + u];
    return s;
}

/* Columns of one sample x [Cin, H, W] for all four parities, col [4][4Cin][H*W]:
 * tap t = (a, c) of parity (py, px) at low-resolution pixel (i, j) reads
 * x[i + py + a - 1][j + px + c - 1], zero outside (gx_up_im2col). */
GX_CU_HD float gx_cu_up_im2col_at(const float *x, int64_t idx, int64_t Cin, int64_t H, int64_t W) {
    const int64_t HW = H * W, p = idx % HW, r = (idx / HW) % (4 * Cin), par = idx / (4 * Cin * HW);
    const int64_t t = r / Cin, ci = r % Cin;
    const int64_t yy = p / W + par / 2 + t / 2 - 1, xx = p % W + par % 2 + t % 2 - 1;
    return (yy >= 0 && yy < H && xx >= 0 && xx < W) ? x[(ci * H + yy) * W + xx] : 0.0f;
}

/* Output pixel idx of one sample's y [Cout, 2H, 2W] from the parity outputs
 * yp [4][Cout][H*W], plus the bias, through the activation (act < 0: none;
 * else gx_cu_uf in double, rounded once, as gx_up_row's epilogue). */
GX_CU_HD float gx_cu_up_put_at(const float *yp, const float *bias, int act, double p0, double p1, int64_t idx,
                               int64_t Cout, int64_t H, int64_t W) {
    const int64_t ox = idx % (2 * W), oy = (idx / (2 * W)) % (2 * H), co = idx / (4 * H * W);
    const int64_t par = (oy % 2) * 2 + ox % 2;
    float v = yp[(par * Cout + co) * H * W + (oy / 2) * W + ox / 2];
    if (bias) v += bias[co];
    return act < 0 ? v : (float)gx_cu_uf(act, (double)v, p0, p1);
}

/* The transpose for the backward: dyp [4][Cout][H*W] from one sample's g. */
GX_CU_HD float gx_cu_up_gather_at(const float *g, int64_t idx, int64_t Cout, int64_t H, int64_t W) {
    const int64_t HW = H * W, p = idx % HW, co = (idx / HW) % Cout, par = idx / (Cout * HW);
    return g[(co * 2 * H + 2 * (p / W) + par / 2) * 2 * W + 2 * (p % W) + par % 2];
}

/* dw[co, ci, r, u] from the folded gradient dwp (layout of wp): the fold's
 * transpose, summed over (tap, parity) in gx_up_unfold's order. */
GX_CU_HD double gx_cu_up_unfold_at(const float *dwp, int64_t idx, int64_t Cout, int64_t Cin) {
    const int ru = (int)(idx % 9), r = ru / 3, u = ru % 3;
    const int64_t ci = (idx / 9) % Cin, co = idx / (9 * Cin);
    double acc = 0;
    for (int t = 0; t < 4; t++)
        for (int par = 0; par < 4; par++) {
            const int a = t / 2, c = t % 2, py = par / 2, px = par % 2;
            if (r < gx_cu_up_lo(py, a) || r > gx_cu_up_hi(py, a) || u < gx_cu_up_lo(px, c) || u > gx_cu_up_hi(px, c))
                continue;
            acc += (double)dwp[((par * Cout + co) * 4 + t) * Cin + ci];
        }
    return acc;
}

/* dx[ci, yy, xx] of one sample: the column gradients colg [4][4Cin][H*W]
 * that read it (im2col's transpose, as a gather: no atomics). */
GX_CU_HD double gx_cu_up_col2im_at(const float *colg, int64_t idx, int64_t Cin, int64_t H, int64_t W) {
    const int64_t HW = H * W, xx = idx % W, yy = (idx / W) % H, ci = idx / HW;
    double acc = 0;
    for (int par = 0; par < 4; par++)
        for (int t = 0; t < 4; t++) {
            const int64_t i = yy - (par / 2 + t / 2 - 1), j = xx - (par % 2 + t % 2 - 1);
            if (i < 0 || i >= H || j < 0 || j >= W) continue;
            acc += colg[((int64_t)par * 4 * Cin + t * Cin + ci) * HW + i * W + j];
        }
    return acc;
}

/* Conv + BN(eval) + activation epilogue, element k of y [B, C, P] holding
 * the raw conv: + bias (float, as gx_cu_bias_k), the per-channel affine
 * ab = [a | shift] (double, rounded once, as gx_cu_bn_apply_at), then the
 * activation (rounded once, as gx_cu_unary_fwd). */
GX_CU_HD float gx_cu_cbna_at(const float *y, const float *bias, const double *ab, int act, double p0, double p1,
                             int64_t k, int64_t C, int64_t P) {
    const int64_t c = (k / P) % C;
    float v = y[k];
    if (bias) v += bias[c];
    v = (float)(v * ab[c] + ab[C + c]);
    return act < 0 ? v : (float)gx_cu_uf(act, (double)v, p0, p1);
}
/* Channel c's a and shift from the running statistics (the eval branch of
 * gx_cu_batchnorm_fwd, then gx_cu_bn_apply_at's a and shift). */
GX_CU_HD void gx_cu_bn_fold_at(const float *gamma, const float *beta, const float *rm, const float *rv, double eps,
                               int64_t c, int64_t C, double *ab) {
    const double rstd = 1.0 / sqrt((double)rv[c] + eps);
    const double a = (gamma ? gamma[c] : 1.0) * rstd;
    ab[c] = a;
    ab[C + c] = (beta ? beta[c] : 0.0) - (double)rm[c] * a;
}

#endif
