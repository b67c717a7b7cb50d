/*
 * gx_elem.h — elementwise ops (kernels/gx_elem.c).
 *
 * Unary ops map x -> f(x) with the per-element math of gx_math.h, shared with
 * the CUDA backend. Binary ops broadcast NumPy-style: shapes are aligned at
 * the right, and each dimension must be equal or 1 on one side. The backward
 * of a broadcast input sums the gradient over the broadcast dimensions.
 */
#ifndef GX_ELEM_H
#define GX_ELEM_H
#ifdef __cplusplus
extern "C" {
#endif

/* Activations and math functions. Derivatives at kinks follow PyTorch:
 * relu'(0) = 0, leaky'(0) = slope, abs'(0) = 0. log and sqrt expect x > 0. */
gx_tensor *gx_relu(gx_ctx *ctx, gx_tensor *x);
gx_tensor *gx_leaky_relu(gx_ctx *ctx, gx_tensor *x, double slope);
gx_tensor *gx_gelu(gx_ctx *ctx, gx_tensor *x);          /* exact erf form */
gx_tensor *gx_silu(gx_ctx *ctx, gx_tensor *x);
gx_tensor *gx_sigmoid(gx_ctx *ctx, gx_tensor *x);
gx_tensor *gx_softplus(gx_ctx *ctx, gx_tensor *x);      /* beta 1, threshold 20 as PyTorch */
gx_tensor *gx_tanh(gx_ctx *ctx, gx_tensor *x);
gx_tensor *gx_exp(gx_ctx *ctx, gx_tensor *x);
gx_tensor *gx_log(gx_ctx *ctx, gx_tensor *x);
gx_tensor *gx_atan(gx_ctx *ctx, gx_tensor *x);
gx_tensor *gx_sin(gx_ctx *ctx, gx_tensor *x);
gx_tensor *gx_cos(gx_ctx *ctx, gx_tensor *x);
gx_tensor *gx_sqrt(gx_ctx *ctx, gx_tensor *x);
gx_tensor *gx_square(gx_ctx *ctx, gx_tensor *x);
gx_tensor *gx_abs(gx_ctx *ctx, gx_tensor *x);
gx_tensor *gx_neg(gx_ctx *ctx, gx_tensor *x);
/* a*x + b. */
gx_tensor *gx_affine(gx_ctx *ctx, gx_tensor *x, double a, double b);
gx_tensor *gx_scale(gx_ctx *ctx, gx_tensor *x, double a);
gx_tensor *gx_add_scalar(gx_ctx *ctx, gx_tensor *x, double b);
/* x^p for a constant p (x > 0 unless p is a non-negative integer).
 * p == 0 gives an exact zero gradient (no 0 * inf at x = 0). */
gx_tensor *gx_pow_scalar(gx_ctx *ctx, gx_tensor *x, double p);
/* min(max(x, lo), hi), lo <= hi. Gradient 1 where lo <= x <= hi — the
 * boundaries included, exactly as PyTorch's clamp backward — and 0 outside,
 * where the value was moved. */
gx_tensor *gx_clamp(gx_ctx *ctx, gx_tensor *x, double lo, double hi);
/* 1 where x > t, else 0 (NaN -> 0); zero gradient. */
gx_tensor *gx_step(gx_ctx *ctx, gx_tensor *x, double t);

/* Broadcasting binary ops (up to GX_MAX_DIMS dims; either side may be the
 * broadcast one, or both). Shape errors abort naming the op and shapes. */
gx_tensor *gx_add(gx_ctx *ctx, gx_tensor *a, gx_tensor *b);
gx_tensor *gx_sub(gx_ctx *ctx, gx_tensor *a, gx_tensor *b);
gx_tensor *gx_mul(gx_ctx *ctx, gx_tensor *a, gx_tensor *b);
gx_tensor *gx_div(gx_ctx *ctx, gx_tensor *a, gx_tensor *b);
/* Elementwise max(a, b); ties send the whole gradient to a (PyTorch's
 * maximum splits it half/half between a and b at exact ties). */
gx_tensor *gx_maximum(gx_ctx *ctx, gx_tensor *a, gx_tensor *b);

/* Shape of broadcasting a with b; returns ndim, asserts compatibility. */
int gx_broadcast_shape(const gx_tensor *a, const gx_tensor *b, int64_t *out_shape);
/* Sum g (shape `from`, ndim nf) into acc (shape `to`, ndim nt) over the
 * broadcast dims: acc += reduce(g). `to` must broadcast to `from` (nt <= nf;
 * each dim equal or 1). Sums in double, in an order independent of the
 * thread count. Used by every broadcasting backward. */
void gx_reduce_broadcast_add(gx_real *acc, int nt, const int64_t *to,
                             const gx_real *g, int nf, const int64_t *from);

#ifdef __cplusplus
}
#endif
#endif
