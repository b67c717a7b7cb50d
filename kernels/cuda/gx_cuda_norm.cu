/*
 * gx_cuda_norm.cu — layer norm and batch norm on the GPU, twin of
 * kernels/gx_norm.c: the same formulas, statistics in double (two passes:
 * mean, then squared deviations), the per-row / per-channel mean and 1/std
 * saved in double for the backward pass.
 *
 * Layer norm: one warp per row. Its dgamma/dbeta: one thread per column
 * walking every row in order (deterministic, no atomics). Batch norm: one
 * block per channel for the statistics and for the backward (the channel's
 * sums, then its dx in the same block).
 */
#include "gx_cuda_impl.cuh"
#include "gx_cuda_body.cuh"

#define GX_CU_ROWS 8                       /* layer-norm rows per block (warps) */

__device__ __forceinline__ double gx_cu_wsum(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

static unsigned gx_cu_row_blocks(int64_t R) {
    int64_t b = (R + GX_CU_ROWS - 1) / GX_CU_ROWS;
    return (unsigned)(b < 1 ? 1 : (b > 65535 * 4 ? 65535 * 4 : b));
}

/* ---------------------------------------------------------- layer norm */

__global__ void gx_cu_ln_k(const float *x, const float *gamma, const float *beta, float *y,
                           double *mean, double *rstd, int64_t R, int64_t D, double eps) {
    const int lane = threadIdx.x & 31;
    for (int64_t r = (int64_t)blockIdx.x * GX_CU_ROWS + (threadIdx.x >> 5); r < R;
         r += (int64_t)gridDim.x * GX_CU_ROWS) {
        const float *px = x + r * D;
        double s = 0;
        for (int64_t j = lane; j < D; j += 32) s += px[j];
        const double mu = gx_cu_wsum(s) / (double)D;
        double q = 0;
        for (int64_t j = lane; j < D; j += 32) { double d = px[j] - mu; q += d * d; }
        const double istd = 1.0 / sqrt(gx_cu_wsum(q) / (double)D + eps);
        if (lane == 0) { mean[r] = mu; rstd[r] = istd; }
        for (int64_t j = lane; j < D; j += 32) {
            double v = (px[j] - mu) * istd;
            if (gamma) v *= gamma[j];
            if (beta) v += beta[j];
            y[r * D + j] = (float)v;
        }
    }
}

/* dx = istd (dxh - mean(dxh) - xhat mean(dxh xhat)), dxh = dy gamma. */
__global__ void gx_cu_ln_bw_k(const float *x, const float *gamma, const double *mean,
                              const double *rstd, const float *gy, float *gx, int64_t R, int64_t D) {
    const int lane = threadIdx.x & 31;
    for (int64_t r = (int64_t)blockIdx.x * GX_CU_ROWS + (threadIdx.x >> 5); r < R;
         r += (int64_t)gridDim.x * GX_CU_ROWS) {
        const float *px = x + r * D, *pg = gy + r * D;
        const double mu = mean[r], istd = rstd[r];
        double s1 = 0, s2 = 0;
        for (int64_t j = lane; j < D; j += 32) {
            double dxh = pg[j] * (gamma ? (double)gamma[j] : 1.0);
            s1 += dxh;
            s2 += dxh * ((px[j] - mu) * istd);
        }
        const double m1 = gx_cu_wsum(s1) / (double)D, m2 = gx_cu_wsum(s2) / (double)D;
        for (int64_t j = lane; j < D; j += 32) {
            double dxh = pg[j] * (gamma ? (double)gamma[j] : 1.0);
            double xhat = (px[j] - mu) * istd;
            gx[r * D + j] += (float)(istd * (dxh - m1 - xhat * m2));
        }
    }
}

__global__ void gx_cu_ln_bw_cols_k(const float *x, const double *mean, const double *rstd,
                                   const float *gy, float *gg, float *gb, int64_t R, int64_t D) {
    GX_CU_LOOP(j, D) {
        double ag = 0, ab = 0;
        for (int64_t r = 0; r < R; r++) {
            double g = gy[r * D + j];
            ag += g * ((x[r * D + j] - mean[r]) * rstd[r]);
            ab += g;
        }
        if (gg) gg[j] += (float)ag;
        if (gb) gb[j] += (float)ab;
    }
}

extern "C" void gx_cu_layernorm_fwd(gx_cuda_stream *s, const float *x, const float *gamma,
                                    const float *beta, float *y, double *mean, double *rstd,
                                    int64_t R, int64_t D, double eps) {
    GX_CU_SKIP(s);
    if (R <= 0 || D <= 0) return;
    gx_cu_ln_k<<<gx_cu_row_blocks(R), 32 * GX_CU_ROWS, 0, s->st>>>(x, gamma, beta, y, mean, rstd, R, D, eps);
    GX_CU_CHECK(s);
}

extern "C" void gx_cu_layernorm_bwd(gx_cuda_stream *s, const float *x, const float *gamma,
                                    const double *mean, const double *rstd, const float *g,
                                    float *gx, float *ggamma, float *gbeta, int64_t R, int64_t D) {
    GX_CU_SKIP(s);
    if (R <= 0 || D <= 0) return;
    if (gx) {
        gx_cu_ln_bw_k<<<gx_cu_row_blocks(R), 32 * GX_CU_ROWS, 0, s->st>>>(x, gamma, mean, rstd, g, gx, R, D);
        GX_CU_CHECK(s);
    }
    if (ggamma || gbeta) {
        gx_cu_ln_bw_cols_k<<<gx_cu_blocks(D), GX_CU_THREADS, 0, s->st>>>(x, mean, rstd, g, ggamma, gbeta, R, D);
        GX_CU_CHECK(s);
    }
}

/* ---------------------------------------------------------- batch norm */

/* Channel c's values: B runs of S. Block-strided over the B*S of them. */
#define GX_CU_CH_LOOP(k, off)                                                    \
    for (int64_t k = threadIdx.x; k < B * S; k += blockDim.x)                    \
        for (int64_t off = ((k / S) * C + c) * S + k % S, once_ = 1; once_; once_ = 0)

/* Training statistics, one block per channel; also moves the running ones. */
__global__ void gx_cu_bn_stats_k(const float *x, float *rm, float *rv, double momentum, double eps,
                                 double *mean, double *rstd, int64_t B, int64_t C, int64_t S) {
    __shared__ double sh[32];
    const double N = (double)(B * S);
    for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
        double sum = 0;
        GX_CU_CH_LOOP(k, off) sum += x[off];
        const double mu = gx_cu_block_sum(sum, sh) / N;
        double q = 0;
        GX_CU_CH_LOOP(k, off) { double d = x[off] - mu; q += d * d; }
        const double var = gx_cu_block_sum(q, sh) / N;
        if (threadIdx.x == 0) {
            mean[c] = mu;
            rstd[c] = 1.0 / sqrt(var + eps);
            if (rm) rm[c] = (float)((1 - momentum) * rm[c] + momentum * mu);
            if (rv) rv[c] = (float)((1 - momentum) * rv[c] + momentum * var * N / (N - 1));
        }
    }
}

__global__ void gx_cu_bn_eval_stats_k(const float *rm, const float *rv, double eps, double *mean,
                                      double *rstd, int64_t C) {
    GX_CU_LOOP(c, C) {
        mean[c] = rm[c];
        rstd[c] = 1.0 / sqrt((double)rv[c] + eps);
    }
}

__global__ void gx_cu_bn_apply_k(const float *x, const float *gamma, const float *beta,
                                 const double *mean, const double *rstd, float *y, int64_t total,
                                 int64_t C, int64_t S) {
    GX_CU_LOOP(k, total) y[k] = gx_cu_bn_apply_at(x, gamma, beta, mean, rstd, k, C, S);
}

__global__ void gx_cu_bn_bw_k(const float *x, const float *gamma, int training, const double *mean,
                              const double *rstd, const float *gy, float *gx, float *gg, float *gb,
                              int64_t B, int64_t C, int64_t S) {
    __shared__ double sh[32];
    const double N = (double)(B * S);
    for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
        const double mu = mean[c], istd = rstd[c];
        double a = 0, b = 0;
        GX_CU_CH_LOOP(k, off) { a += gy[off]; b += gy[off] * (x[off] - mu); }
        const double sdy = gx_cu_block_sum(a, sh);
        const double sdyx = gx_cu_block_sum(b, sh) * istd;
        if (threadIdx.x == 0) {
            if (gg) gg[c] += (float)sdyx;
            if (gb) gb[c] += (float)sdy;
        }
        if (!gx) continue;
        const double k0 = (gamma ? gamma[c] : 1.0) * istd;
        const double mdy = training ? sdy / N : 0.0, mdyx = training ? sdyx / N : 0.0;
        GX_CU_CH_LOOP(k, off) {
            double xhat = (x[off] - mu) * istd;
            gx[off] += (float)(k0 * (gy[off] - mdy - xhat * mdyx));
        }
    }
}

static unsigned gx_cu_ch_blocks(int64_t C) { return (unsigned)(C < 65535 ? (C < 1 ? 1 : C) : 65535); }

extern "C" void gx_cu_batchnorm_fwd(gx_cuda_stream *s, const float *x, const float *gamma,
                                    const float *beta, float *run_mean, float *run_var, int training,
                                    double momentum, double eps, float *y, double *mean, double *rstd,
                                    int64_t B, int64_t C, int64_t S) {
    GX_CU_SKIP(s);
    const int64_t total = B * C * S;
    if (total <= 0) return;
    if (training)
        gx_cu_bn_stats_k<<<gx_cu_ch_blocks(C), GX_CU_THREADS, 0, s->st>>>(x, run_mean, run_var, momentum,
                                                                           eps, mean, rstd, B, C, S);
    else
        gx_cu_bn_eval_stats_k<<<gx_cu_blocks(C), GX_CU_THREADS, 0, s->st>>>(run_mean, run_var, eps,
                                                                            mean, rstd, C);
    GX_CU_CHECK(s);
    gx_cu_bn_apply_k<<<gx_cu_blocks(total), GX_CU_THREADS, 0, s->st>>>(x, gamma, beta, mean, rstd, y,
                                                                       total, C, S);
    GX_CU_CHECK(s);
}

extern "C" void gx_cu_batchnorm_bwd(gx_cuda_stream *s, const float *x, const float *gamma, int training,
                                    const double *mean, const double *rstd, const float *g, float *gx,
                                    float *ggamma, float *gbeta, int64_t B, int64_t C, int64_t S) {
    GX_CU_SKIP(s);
    if (B * C * S <= 0 || (!gx && !ggamma && !gbeta)) return;
    gx_cu_bn_bw_k<<<gx_cu_ch_blocks(C), GX_CU_THREADS, 0, s->st>>>(x, gamma, training, mean, rstd, g, gx,
                                                                    ggamma, gbeta, B, C, S);
    GX_CU_CHECK(s);
}
