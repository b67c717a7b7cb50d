/*
 * gx_math.h — per-element math, written once for the CPU and the GPU.
 *
 * Every function is `static inline GX_HD`: plain inline C under cc, and
 * __host__ __device__ under nvcc, so the CPU tests cover exactly the math the
 * CUDA kernels run (darknet wrote its activations twice and they drifted).
 * Derivatives are given as functions of the input x unless the name says
 * otherwise (`_from_y` takes the forward output, cheaper when it is saved).
 */
#ifndef GX_MATH_H
#define GX_MATH_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define GX_HD __host__ __device__
#else
#define GX_HD
#endif

#ifndef GX_REAL_DEFINED
#define GX_REAL_DEFINED
#ifdef GX_F64
typedef double gx_real;
#else
typedef float gx_real;
#endif
#endif

#define GX_PI 3.14159265358979323846

/* Double-precision helpers; the float/double overloads of C are avoided so
 * the same code compiles in both precisions and under nvcc. */
static inline GX_HD double gx_relu_f(double x)           { return x > 0 ? x : 0; }
static inline GX_HD double gx_relu_df(double x)          { return x > 0 ? 1 : 0; }
static inline GX_HD double gx_leaky_f(double x, double s) { return x > 0 ? x : s * x; }
static inline GX_HD double gx_leaky_df(double x, double s){ return x > 0 ? 1 : s; }

static inline GX_HD double gx_sigmoid_f(double x) {
    /* Branch keeps exp() from overflowing for large |x|. */
    if (x >= 0) { double e = exp(-x); return 1.0 / (1.0 + e); }
    double e = exp(x); return e / (1.0 + e);
}
static inline GX_HD double gx_sigmoid_df_from_y(double y) { return y * (1.0 - y); }

/* GELU, exact erf form: x * Phi(x). */
static inline GX_HD double gx_gelu_f(double x)  { return 0.5 * x * (1.0 + erf(x * 0.70710678118654752440)); }
static inline GX_HD double gx_gelu_df(double x) {
    double cdf = 0.5 * (1.0 + erf(x * 0.70710678118654752440));
    double pdf = 0.39894228040143267794 * exp(-0.5 * x * x);
    return cdf + x * pdf;
}

static inline GX_HD double gx_silu_f(double x)  { return x * gx_sigmoid_f(x); }
static inline GX_HD double gx_silu_df(double x) {
    double s = gx_sigmoid_f(x);
    return s * (1.0 + x * (1.0 - s));
}

/* Softplus with PyTorch's defaults (beta 1, threshold 20: linear above). */
static inline GX_HD double gx_softplus_f(double x) {
    if (x > 20.0) return x;
    return log1p(exp(x));
}
static inline GX_HD double gx_softplus_df(double x) { return x > 20.0 ? 1.0 : gx_sigmoid_f(x); }

static inline GX_HD double gx_tanh_df_from_y(double y) { return 1.0 - y * y; }
static inline GX_HD double gx_atan_df(double x) { return 1.0 / (1.0 + x * x); }

/* Zero-order-hold discretisation of one SSM coefficient (spec/wavelet-mamba.md
 * step 4): Abar = exp(dA), Bbar factor = (exp(dA)-1)/A, or delta where
 * |dA| < 1e-6 (the limit, avoiding 0/0). Returns the factor multiplying B. */
static inline GX_HD double gx_zoh_bfactor(double delta, double A, double abar) {
    double dA = delta * A;
    if (fabs(dA) < 1e-6) return delta;
    return (abar - 1.0) / A;
}

/* ---- Philox4x32-10 (Salmon et al. 2011), the counter-based RNG. ---- */
static inline GX_HD void gx_philox4x32(uint32_t ctr[4], uint32_t k0, uint32_t k1) {
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * ctr[0];
        uint64_t p1 = (uint64_t)0xCD9E8D57u * ctr[2];
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        uint32_t n0 = hi1 ^ ctr[1] ^ k0, n2 = hi0 ^ ctr[3] ^ k1;
        ctr[0] = n0; ctr[1] = lo1; ctr[2] = n2; ctr[3] = lo0;
        k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
    }
}
/* 32 random bits -> uniform double in [0, 1) (53-bit from two words). */
static inline GX_HD double gx_u01_from_bits(uint32_t a, uint32_t b) {
    uint64_t v = ((uint64_t)(a >> 5) << 26) | (uint64_t)(b >> 6);
    return (double)v * (1.0 / 9007199254740992.0);
}

#endif /* GX_MATH_H */
