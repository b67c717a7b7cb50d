/*
 * gx_norm.c — batch norm and layer norm (fused forward/backward), and the
 * batch-norm layer with named statistic sets.
 *
 * Both norms are fused ops with hand-written backward (STYLE.md point 4):
 * composing them from mean/sub/mul ops would cost several activations and
 * lose precision in the variance. The forward saves only the per-group mean
 * and 1/std (in double); the backward recomputes xhat from the input.
 *
 * Batch norm views x as [B, C, S] (S = product of the dims after C, 1 for
 * [B, C]); a channel's statistics run over B*S values. Work is parallel over
 * channels, and each channel's sums are taken by one thread in a fixed order,
 * in double, so results do not depend on the thread count.
 *   training:  y = gamma * (x - mu) / sqrt(var_b + eps) + beta, var_b biased;
 *              running_mean = (1-m) running_mean + m mu,
 *              running_var  = (1-m) running_var  + m var_b * N/(N-1)
 *              (PyTorch's convention: unbiased variance for the running
 *              estimate, biased for normalising).
 *   eval:      the same with mu, var from the running statistics.
 * Backward in training goes through the batch statistics:
 *   dx = gamma * istd * (dy - mean(dy) - xhat * mean(dy * xhat)),
 * in eval it is gamma * istd * dy. dgamma = sum(dy * xhat), dbeta = sum(dy).
 *
 * Layer norm normalises each row of x [..., D] (biased variance); rows are
 * parallel. Its dgamma/dbeta sum over rows; to keep that deterministic
 * without per-thread partial sums, threads own column blocks and each walks
 * all rows for its block.
 */
#include "gx_impl.h"
#if GX_CUDA_ON
#include "cuda/gx_cuda_ops_dense.h"
#endif

#include <math.h>
#include <stdio.h>

/* Columns per task in the layer-norm dgamma/dbeta reduction: the double
 * accumulators of one block live on the stack. */
#define GX_LN_COLS 128

/* ================================================================ sums */

/* The statistics are sums over long contiguous runs. A single double
 * accumulator is a serial dependency chain (one add per FP latency); eight
 * independent lanes let the compiler vectorise while keeping a fixed order,
 * so results stay bit-identical whatever the thread count. */
#define GX_NORM_LANES 8

static inline double gx_norm_lanes_total(const double *a, double tail) {
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])) + tail;
}

/* sum p[k] */
static inline double gx_norm_sum(const gx_real *p, int64_t n) {
    double a[GX_NORM_LANES] = {0}, t = 0;
    int64_t k = 0;
    for (; k + GX_NORM_LANES <= n; k += GX_NORM_LANES)
        for (int j = 0; j < GX_NORM_LANES; j++) a[j] += p[k + j];
    for (; k < n; k++) t += p[k];
    return gx_norm_lanes_total(a, t);
}

/* sum (p[k] - mu)^2 */
static inline double gx_norm_sqdev(const gx_real *p, int64_t n, double mu) {
    double a[GX_NORM_LANES] = {0}, t = 0;
    int64_t k = 0;
    for (; k + GX_NORM_LANES <= n; k += GX_NORM_LANES)
        for (int j = 0; j < GX_NORM_LANES; j++) { double d = p[k + j] - mu; a[j] += d * d; }
    for (; k < n; k++) { double d = p[k] - mu; t += d * d; }
    return gx_norm_lanes_total(a, t);
}

/* sum dy[k] * (x[k] - mu) (times 1/std by the caller: xhat is affine in x) */
static inline double gx_norm_dot_centered(const gx_real *dy, const gx_real *x, int64_t n, double mu) {
    double a[GX_NORM_LANES] = {0}, t = 0;
    int64_t k = 0;
    for (; k + GX_NORM_LANES <= n; k += GX_NORM_LANES)
        for (int j = 0; j < GX_NORM_LANES; j++) a[j] += dy[k + j] * (x[k + j] - mu);
    for (; k < n; k++) t += dy[k] * (x[k] - mu);
    return gx_norm_lanes_total(a, t);
}

/* ================================================================ batch norm */

/* Per-channel mean and biased variance of x viewed as [B, C, S]; two passes
 * in double (sum, then squared deviations) avoid E[x^2]-E[x]^2 cancellation. */
static void gx_bn_channel_stats(const gx_real *x, int64_t B, int64_t C, int64_t S, int64_t c,
                                double *mean_out, double *var_out) {
    const double N = (double)(B * S);
    double s = 0;
    for (int64_t b = 0; b < B; b++) s += gx_norm_sum(x + (b * C + c) * S, S);
    const double mu = s / N;
    double q = 0;
    for (int64_t b = 0; b < B; b++) q += gx_norm_sqdev(x + (b * C + c) * S, S, mu);
    *mean_out = mu;
    *var_out = q / N;
}

/* dL/dx, dL/dgamma, dL/dbeta for one channel c. */
static void gx_bn_backward_channel(const gx_real *x, const gx_real *gy, const gx_real *gamma,
                                   gx_real *gx, gx_real *gg, gx_real *gb, int64_t B, int64_t C,
                                   int64_t S, int64_t c, double mu, double istd, int training) {
    double sdy = 0, sdyx = 0;
    for (int64_t b = 0; b < B; b++) {
        const int64_t o = (b * C + c) * S;
        sdy += gx_norm_sum(gy + o, S);
        sdyx += gx_norm_dot_centered(gy + o, x + o, S, mu);
    }
    sdyx *= istd;
    if (gg) gg[c] += (gx_real)sdyx;
    if (gb) gb[c] += (gx_real)sdy;
    if (!gx) return;
    const double N = (double)(B * S);
    const double k0 = (gamma ? gamma[c] : 1.0) * istd;
    /* Training: dx = k0*(dy - mean(dy) - xhat*mean(dy*xhat)); eval: k0*dy. */
    const double mdy = training ? sdy / N : 0.0, mdyx = training ? sdyx / N : 0.0;
    for (int64_t b = 0; b < B; b++) {
        const gx_real *px = x + (b * C + c) * S, *pg = gy + (b * C + c) * S;
        gx_real *pd = gx + (b * C + c) * S;
        for (int64_t k = 0; k < S; k++) {
            double xhat = (px[k] - mu) * istd;
            pd[k] += (gx_real)(k0 * (pg[k] - mdy - xhat * mdyx));
        }
    }
}

/* node: in = {x, gamma|NULL, beta|NULL}; saved = double[2C] (mean, 1/std);
 * i[0] = training. */
static void gx_batchnorm_backward(gx_ctx *ctx, gx_node *n) {
    gx_tensor *x = n->in[0];
    gx_real *gx = gx_grad(ctx, x);
    gx_real *gg = gx_grad(ctx, n->in[1]);
    gx_real *gb = gx_grad(ctx, n->in[2]);
    if ((!gx && !gg && !gb) || x->numel == 0) return;
    const int64_t B = x->shape[0], C = x->shape[1], S = x->numel / (B * C);
    const double *st = n->saved;
    const gx_real *gamma = n->in[1] ? n->in[1]->data : NULL;
    const int training = (int)n->i[0];
    #pragma omp parallel for if (x->numel > GX_PAR_THRESHOLD)
    for (int64_t c = 0; c < C; c++)
        gx_bn_backward_channel(x->data, n->out->grad, gamma, gx, gg, gb, B, C, S, c,
                               st[c], st[C + c], training);
}

/* Shape checks: x [B, C, ...], gamma/beta/running stats [C] when given. */
static void gx_bn_check(const gx_tensor *x, const gx_tensor *const *per_channel, int n) {
    char buf[96];
    GX_ASSERT_MSG(x->ndim >= 2, "gx_batchnorm: x must be [B, C, ...], got %s",
                  gx_tensor_shape_str(x, buf, sizeof buf));
    static const char *const what[4] = { "gamma", "beta", "running_mean", "running_var" };
    for (int i = 0; i < n; i++)
        GX_ASSERT_MSG(!per_channel[i] || per_channel[i]->numel == x->shape[1],
                      "gx_batchnorm: %s has %lld elements, x %s has C = %lld", what[i],
                      (long long)per_channel[i]->numel, gx_tensor_shape_str(x, buf, sizeof buf),
                      (long long)x->shape[1]);
}

gx_tensor *gx_batchnorm(gx_ctx *ctx, gx_tensor *x, gx_tensor *gamma, gx_tensor *beta,
                        gx_tensor *running_mean, gx_tensor *running_var,
                        int training, double momentum, double eps) {
    const gx_tensor *pc[4] = { gamma, beta, running_mean, running_var };
    gx_bn_check(x, pc, 4);
    GX_CUDA_DISPATCH(gx_on_cuda(x) || gx_on_cuda(gamma) || gx_on_cuda(beta) || gx_on_cuda(running_mean) ||
                     gx_on_cuda(running_var),
                     gx_cuda_batchnorm(ctx, x, gamma, beta, running_mean, running_var, training, momentum, eps));
    const int64_t B = x->shape[0], C = x->shape[1], S = (B * C != 0) ? x->numel / (B * C) : 0;
    const int par = x->numel > GX_PAR_THRESHOLD;
    double *st = gx_ctx_alloc(ctx, (size_t)(2 * C + 1) * sizeof(double));   /* mean | 1/std */
    if (training) {
        GX_ASSERT_MSG(B * S > 1, "gx_batchnorm: training needs more than one value per channel "
                      "(B=%lld, spatial %lld)", (long long)B, (long long)S);
        const double N = (double)(B * S);
        #pragma omp parallel for if (par)
        for (int64_t c = 0; c < C; c++) {
            double mu, var;
            gx_bn_channel_stats(x->data, B, C, S, c, &mu, &var);
            st[c] = mu;
            st[C + c] = 1.0 / sqrt(var + eps);
            if (running_mean)
                running_mean->data[c] = (gx_real)((1 - momentum) * running_mean->data[c] + momentum * mu);
            if (running_var)
                running_var->data[c] = (gx_real)((1 - momentum) * running_var->data[c]
                                                 + momentum * var * N / (N - 1));
        }
    } else {
        GX_ASSERT_MSG(running_mean && running_var, "gx_batchnorm: eval mode needs running statistics");
        for (int64_t c = 0; c < C; c++) {
            st[c] = running_mean->data[c];
            st[C + c] = 1.0 / sqrt((double)running_var->data[c] + eps);
        }
    }
    /* y = x * a + (beta - mu * a) with a = gamma / std, per channel. */
    gx_tensor *out = gx_tensor_like(ctx, x);
    #pragma omp parallel for if (par)
    for (int64_t bc = 0; bc < B * C; bc++) {
        const int64_t c = bc % C;
        const double a = (gamma ? gamma->data[c] : 1.0) * st[C + c];
        const double sh = (beta ? beta->data[c] : 0.0) - st[c] * a;
        const gx_real *px = x->data + bc * S;
        gx_real *py = out->data + bc * S;
        #pragma omp simd   /* per element, so the same bits; -O2 alone leaves it scalar */
        for (int64_t k = 0; k < S; k++) py[k] = (gx_real)(px[k] * a + sh);
    }
    gx_tensor *in[3] = { x, gamma, beta };
    gx_node *n = gx_tape_record(ctx, "batchnorm", gx_batchnorm_backward, out, 3, in);
    if (n) { n->saved = st; n->i[0] = training ? 1 : 0; }
    return out;
}

/* ================================================================ layer norm */

/* dL/dx of one row: dx = istd * (dxh - mean(dxh) - xhat * mean(dxh * xhat)),
 * with dxh = dy * gamma. */
static void gx_ln_backward_row(const gx_real *x, const gx_real *gy, const gx_real *gamma,
                               gx_real *gx, int64_t D, double mu, double istd) {
    double s1 = 0, s2 = 0;
    for (int64_t j = 0; j < D; j++) {
        double dxh = gy[j] * (gamma ? (double)gamma[j] : 1.0);
        s1 += dxh;
        s2 += dxh * ((x[j] - mu) * istd);
    }
    const double m1 = s1 / (double)D, m2 = s2 / (double)D;
    for (int64_t j = 0; j < D; j++) {
        double dxh = gy[j] * (gamma ? (double)gamma[j] : 1.0);
        double xhat = (x[j] - mu) * istd;
        gx[j] += (gx_real)(istd * (dxh - m1 - xhat * m2));
    }
}

/* dgamma/dbeta for columns [j0, j1): sums over every row, in row order. */
static void gx_ln_backward_cols(const gx_real *x, const gx_real *gy, const double *st,
                                gx_real *gg, gx_real *gb, int64_t rows, int64_t D,
                                int64_t j0, int64_t j1) {
    double ag[GX_LN_COLS] = {0}, ab[GX_LN_COLS] = {0};
    const int64_t w = j1 - j0;
    for (int64_t r = 0; r < rows; r++) {
        const gx_real *px = x + r * D + j0, *pg = gy + r * D + j0;
        const double mu = st[2 * r], istd = st[2 * r + 1];
        for (int64_t j = 0; j < w; j++) {
            ag[j] += pg[j] * ((px[j] - mu) * istd);
            ab[j] += pg[j];
        }
    }
    for (int64_t j = 0; j < w; j++) {
        if (gg) gg[j0 + j] += (gx_real)ag[j];
        if (gb) gb[j0 + j] += (gx_real)ab[j];
    }
}

/* node: in = {x, gamma|NULL, beta|NULL}; saved = double[2*rows] (mean, 1/std). */
static void gx_layernorm_backward(gx_ctx *ctx, gx_node *n) {
    gx_tensor *x = n->in[0];
    gx_real *gx = gx_grad(ctx, x);
    gx_real *gg = gx_grad(ctx, n->in[1]);
    gx_real *gb = gx_grad(ctx, n->in[2]);
    const int64_t D = x->shape[x->ndim - 1], rows = D ? x->numel / D : 0;
    const double *st = n->saved;
    const gx_real *gy = n->out->grad;
    const gx_real *gamma = n->in[1] ? n->in[1]->data : NULL;
    const int par = x->numel > GX_PAR_THRESHOLD;
    if (gx) {
        #pragma omp parallel for if (par)
        for (int64_t r = 0; r < rows; r++)
            gx_ln_backward_row(x->data + r * D, gy + r * D, gamma, gx + r * D, D,
                               st[2 * r], st[2 * r + 1]);
    }
    if (gg || gb) {
        const int64_t nblk = (D + GX_LN_COLS - 1) / GX_LN_COLS;
        #pragma omp parallel for if (par && nblk > 1)
        for (int64_t b = 0; b < nblk; b++) {
            int64_t j0 = b * GX_LN_COLS, j1 = j0 + GX_LN_COLS < D ? j0 + GX_LN_COLS : D;
            gx_ln_backward_cols(x->data, gy, st, gg, gb, rows, D, j0, j1);
        }
    }
}

gx_tensor *gx_layernorm(gx_ctx *ctx, gx_tensor *x, gx_tensor *gamma, gx_tensor *beta,
                        double eps) {
    char buf[96];
    GX_ASSERT_MSG(x->ndim >= 1, "gx_layernorm: x must be [..., D], got a scalar");
    const int64_t D = x->shape[x->ndim - 1], rows = D ? x->numel / D : 0;
    GX_ASSERT_MSG((!gamma || gamma->numel == D) && (!beta || beta->numel == D),
                  "gx_layernorm: gamma/beta must have D = %lld elements (x %s)", (long long)D,
                  gx_tensor_shape_str(x, buf, sizeof buf));
    GX_CUDA_DISPATCH(gx_on_cuda(x) || gx_on_cuda(gamma) || gx_on_cuda(beta),
                     gx_cuda_layernorm(ctx, x, gamma, beta, eps));
    double *st = gx_ctx_alloc(ctx, (size_t)(2 * rows + 1) * sizeof(double));
    gx_tensor *out = gx_tensor_like(ctx, x);
    #pragma omp parallel for if (x->numel > GX_PAR_THRESHOLD)
    for (int64_t r = 0; r < rows; r++) {
        const gx_real *px = x->data + r * D;
        gx_real *py = out->data + r * D;
        const double mu = gx_norm_sum(px, D) / (double)D;
        const double istd = 1.0 / sqrt(gx_norm_sqdev(px, D, mu) / (double)D + eps);
        st[2 * r] = mu;
        st[2 * r + 1] = istd;
        for (int64_t j = 0; j < D; j++) {
            double v = (px[j] - mu) * istd;
            if (gamma) v *= gamma->data[j];
            if (beta) v += beta->data[j];
            py[j] = (gx_real)v;
        }
    }
    gx_tensor *in[3] = { x, gamma, beta };
    gx_node *n = gx_tape_record(ctx, "layernorm", gx_layernorm_backward, out, 3, in);
    if (n) n->saved = st;
    return out;
}

/* ================================================================ BN layer */

/* "<prefix>.<leaf>" with one set, "<prefix>.<set>.<leaf>" with several. */
static void gx_bn_name(char *buf, size_t n, const char *prefix, const char *set, const char *leaf) {
    int k = set ? snprintf(buf, n, "%s.%s.%s", prefix, set, leaf)
                : snprintf(buf, n, "%s.%s", prefix, leaf);
    GX_ASSERT_MSG(k > 0 && (size_t)k < n, "gx_bn_layer_init: name too long (%s...)", prefix);
}

void gx_bn_layer_init(gx_bn_layer *bn, gx_params *p, const char *prefix, int64_t C,
                      int nsets, const char *const *set_names) {
    GX_ASSERT_MSG(nsets >= 1 && nsets <= GX_BN_MAX_SETS,
                  "gx_bn_layer_init(%s): nsets %d not in 1..%d", prefix, nsets, GX_BN_MAX_SETS);
    GX_ASSERT_MSG(C > 0, "gx_bn_layer_init(%s): C = %lld", prefix, (long long)C);
    memset(bn, 0, sizeof *bn);
    bn->C = C;
    bn->nsets = nsets;
    bn->eps = 1e-5;          /* PyTorch BatchNorm defaults */
    bn->momentum = 0.1;
    for (int s = 0; s < nsets; s++) {
        /* With several sets and no names, default to d0, d1, ... */
        char setbuf[16];
        const char *set = NULL;
        if (nsets > 1) {
            if (set_names) set = set_names[s];
            else { snprintf(setbuf, sizeof setbuf, "d%d", s); set = setbuf; }
        }
        char name[160];
        /* Registration order = PyTorch state_dict order within a module. */
        gx_bn_name(name, sizeof name, prefix, set, "weight");
        bn->weight[s] = gx_params_add(p, name, 1, &C, 0);
        gx_bn_name(name, sizeof name, prefix, set, "bias");
        bn->bias[s] = gx_params_add(p, name, 1, &C, 0);
        gx_bn_name(name, sizeof name, prefix, set, "running_mean");
        bn->running_mean[s] = gx_params_add(p, name, 1, &C, GX_PARAM_BUFFER);
        gx_bn_name(name, sizeof name, prefix, set, "running_var");
        bn->running_var[s] = gx_params_add(p, name, 1, &C, GX_PARAM_BUFFER);
        /* The registry zero-fills: weight and running_var start at 1. */
        for (int64_t c = 0; c < C; c++) {
            bn->weight[s]->data[c] = 1;
            bn->running_var[s]->data[c] = 1;
        }
    }
}

gx_tensor *gx_bn_layer_forward(gx_ctx *ctx, const gx_bn_layer *bn, int set,
                               gx_tensor *x, int training) {
    GX_ASSERT_MSG(set >= 0 && set < bn->nsets, "gx_bn_layer_forward: set %d of %d", set, bn->nsets);
    char buf[96];
    GX_ASSERT_MSG(x->ndim >= 2 && x->shape[1] == bn->C,
                  "gx_bn_layer_forward: layer has C = %lld, x is %s", (long long)bn->C,
                  gx_tensor_shape_str(x, buf, sizeof buf));
    return gx_batchnorm(ctx, x, bn->weight[set], bn->bias[set], bn->running_mean[set],
                        bn->running_var[set], training, bn->momentum, bn->eps);
}
