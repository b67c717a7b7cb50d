/*
 * gx_sinkhorn.c — entropic Sinkhorn for the Hellinger-Kantorovich loss term
 * (spec/wavelet-mamba.md, "Training losses"), forward and reverse-mode
 * backward through every iteration.
 *
 * Per row b of a, b [B, n], with the constant cost C [n, n]:
 *   K = exp(clamp(-C/lambda, -100, 100)), v_0 = 1
 *   for k = 1..T:  p_k = K v_{k-1} + eps,  u_k = a / p_k
 *                  q_k = K^T u_k + eps,    v_k = b / q_k
 *   S = sum_ij u_i K_ij C_ij v_j,  out = sqrt(max(S, 0) + 1e-8)
 *
 * Backward (T = iters), with gu, gv the adjoints of u_k, v_k:
 *   gS = gout / (2 out) if S > 0 else 0
 *   gv = gS M^T u_T, gu = gS M v_T  (M = K o C)
 *   k = T..1:  gb += gv / q_k;  gq = -gv v_k / q_k;  gu += K gq
 *              ga += gu / p_k;  gp = -gu u_k / p_k;  gv = K^T gp;  gu = 0
 * C receives no gradient (it is a constant of the loss).
 *
 * Saved state: the denominators p_k, q_k of every iteration (B x T x 2n
 * doubles; 16 MiB at B=512, n=40, T=50), not u_k, v_k: u_k = a / p_k is
 * recomputed bit-exactly from them, while p_k could not be recovered from
 * u_k where a histogram bin is 0 (soft histograms underflow far from the
 * value). Saved only when a gradient will be needed.
 *
 * Layout: K, K^T, M = K o C and M^T are built once per call in double. Every
 * matrix-vector product is written as a sum of scaled rows (y += x_j R[j,:]),
 * so the inner loop is a contiguous axpy the compiler vectorises without
 * reassociating a reduction, and each output keeps one fixed summation order.
 * Rows are independent and spread over OpenMP threads; a row's result does
 * not depend on the other rows or on the thread count. K stays in double:
 * with lambda = 0.1 its entries reach exp(-100), below float's range.
 */
#include "gx_impl.h"
#if GX_CUDA_ON
#include "cuda/gx_cuda_ops_shape.h"
#endif

#include <omp.h>

/* The per-row kernels are also compiled for AVX2 and AVX-512 (chosen at load
 * time), as in gx_scan.c: the portable default build is SSE2-only. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define GX_SK_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GX_SK_CLONES
#endif

/* Constant matrices of one call, row-major [n, n] each, in double. */
typedef struct {
    int64_t n;
    const double *K, *KT, *M, *MT;
} gx_sk_mats;

/* Backward's view of the forward: the matrices, the saved denominators
 * (pq[(row*T + k)*2n ..]: p_k then q_k), S per row, and the iteration count. */
typedef struct {
    gx_sk_mats m;
    const double *pq;     /* [B, T, 2n] */
    const double *S;      /* [B]: S before the max, for the max's derivative */
    int iters;
} gx_sk_saved;

/* y[0..n) += x[j] * R[j, 0..n) over j: y = R^T x for row-major R. */
static inline void gx_sk_matvec_t(const double *R, const double *x, double *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = 0.0;
    for (int64_t j = 0; j < n; j++) {
        const double xj = x[j], *r = R + j * n;
        #pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] += xj * r[i];
    }
}

static gx_sk_mats gx_sk_build(gx_ctx *ctx, const gx_tensor *C, double lambda) {
    int64_t n = C->shape[0];
    double *K = gx_ctx_alloc(ctx, (size_t)(4 * n * n) * sizeof(double));
    double *KT = K + n * n, *M = KT + n * n, *MT = M + n * n;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double c = (double)C->data[i * n + j], z = -c / lambda;
            z = z < -100.0 ? -100.0 : (z > 100.0 ? 100.0 : z);
            double k = exp(z);
            K[i * n + j] = KT[j * n + i] = k;
            M[i * n + j] = MT[j * n + i] = k * c;
        }
    return (gx_sk_mats){ n, K, KT, M, MT };
}

/* The Sinkhorn iterations and S for one row. w: 3n doubles scratch.
 * pq: 2n*T doubles to save the denominators into, or NULL. */
GX_SK_CLONES
static double gx_sk_row_forward(const gx_sk_mats *m, const gx_real *a, const gx_real *b,
                                int iters, double eps, double *w, double *pq) {
    const int64_t n = m->n;
    double *u = w, *v = w + n, *t = w + 2 * n;
    for (int64_t j = 0; j < n; j++) v[j] = 1.0;
    for (int k = 0; k < iters; k++) {
        gx_sk_matvec_t(m->KT, v, t, n);                   /* K v */
        for (int64_t i = 0; i < n; i++) {
            t[i] += eps;
            u[i] = (double)a[i] / t[i];
        }
        if (pq) memcpy(pq + (int64_t)k * 2 * n, t, (size_t)n * sizeof(double));
        gx_sk_matvec_t(m->K, u, t, n);                    /* K^T u */
        for (int64_t j = 0; j < n; j++) {
            t[j] += eps;
            v[j] = (double)b[j] / t[j];
        }
        if (pq) memcpy(pq + (int64_t)k * 2 * n + n, t, (size_t)n * sizeof(double));
    }
    gx_sk_matvec_t(m->MT, v, t, n);                       /* M v */
    double S = 0.0;
    for (int64_t i = 0; i < n; i++) S += u[i] * t[i];
    return S;
}

/* Reverse sweep of one row. gS: dL/dS. Adds into ga, gb (either may be
 * NULL). w: 7n doubles scratch (v doubles as the K gq buffer once v_T
 * has been used). */
GX_SK_CLONES
static void gx_sk_row_backward(const gx_sk_mats *m, const gx_real *a, const gx_real *b,
                               const double *pq, int iters, double gS, gx_real *ga, gx_real *gb,
                               double *w) {
    const int64_t n = m->n;
    double *u = w, *v = w + n, *gu = w + 2 * n, *gv = w + 3 * n, *g = w + 4 * n;
    double *Ga = w + 5 * n, *Gb = w + 6 * n;   /* ga, gb summed over iterations in double */
    for (int64_t i = 0; i < n; i++) Ga[i] = Gb[i] = 0.0;
    /* u_T, v_T from the last denominators; adjoints of S. */
    const double *pT = pq + (int64_t)(iters - 1) * 2 * n, *qT = pT + n;
    for (int64_t i = 0; i < n; i++) { u[i] = (double)a[i] / pT[i]; v[i] = (double)b[i] / qT[i]; }
    gx_sk_matvec_t(m->MT, v, gu, n);                      /* M v */
    gx_sk_matvec_t(m->M, u, gv, n);                       /* M^T u */
    for (int64_t i = 0; i < n; i++) { gu[i] *= gS; gv[i] *= gS; }
    for (int k = iters - 1; k >= 0; k--) {
        const double *p = pq + (int64_t)k * 2 * n, *q = p + n;
        /* v_k = b / q_k */
        for (int64_t j = 0; j < n; j++) {
            double vj = (double)b[j] / q[j];
            Gb[j] += gv[j] / q[j];
            g[j] = -gv[j] * vj / q[j];                    /* dL/dq_k */
        }
        /* q_k = K^T u_k + eps: gu += K gq */
        gx_sk_matvec_t(m->KT, g, v, n);
        for (int64_t i = 0; i < n; i++) gu[i] += v[i];
        /* u_k = a / p_k */
        for (int64_t i = 0; i < n; i++) {
            double ui = (double)a[i] / p[i];
            Ga[i] += gu[i] / p[i];
            g[i] = -gu[i] * ui / p[i];                    /* dL/dp_k */
            gu[i] = 0.0;                                  /* u_{k-1} starts fresh */
        }
        /* p_k = K v_{k-1} + eps: gv = K^T gp (v_0 = 1 is a constant) */
        gx_sk_matvec_t(m->K, g, gv, n);
    }
    for (int64_t i = 0; i < n; i++) {
        if (ga) ga[i] += (gx_real)Ga[i];
        if (gb) gb[i] += (gx_real)Gb[i];
    }
}

static void gx_sinkhorn_hk_backward(gx_ctx *ctx, gx_node *node) {
    const gx_sk_saved *sv = node->saved;
    gx_tensor *a = node->in[0], *b = node->in[1], *out = node->out;
    gx_real *ga = gx_grad(ctx, a), *gb = gx_grad(ctx, b);
    const int64_t B = a->shape[0], n = a->shape[1];
    const int T = sv->iters;
    double *scratch = gx_ctx_alloc(ctx, (size_t)(gx_get_threads() * 7 * n) * sizeof(double));
    #pragma omp parallel for schedule(static) if (B * n * n * T > GX_PAR_THRESHOLD)
    for (int64_t r = 0; r < B; r++) {
        double *w = scratch + omp_get_thread_num() * 7 * n;
        /* d sqrt(max(S,0) + 1e-8) / dS; 0 where the max clamps (S <= 0). */
        double S = sv->S[r];
        double gS = S > 0 ? (double)out->grad[r] * 0.5 / sqrt(S + 1e-8) : 0.0;
        gx_sk_row_backward(&sv->m, a->data + r * n, b->data + r * n, sv->pq + r * (int64_t)T * 2 * n,
                           T, gS, ga ? ga + r * n : NULL, gb ? gb + r * n : NULL, w);
    }
}

gx_tensor *gx_sinkhorn_hk(gx_ctx *ctx, gx_tensor *a, gx_tensor *b, const gx_tensor *C,
                          double lambda, int iters, double eps) {
    char sa[48], sb[48], sc[48];
    gx_tensor_shape_str(a, sa, sizeof sa);
    gx_tensor_shape_str(b, sb, sizeof sb);
    gx_tensor_shape_str(C, sc, sizeof sc);
    GX_ASSERT_MSG(a->ndim == 2 && gx_tensor_same_shape(a, b) && C->ndim == 2 &&
                  C->shape[0] == a->shape[1] && C->shape[1] == a->shape[1],
                  "gx_sinkhorn_hk: need a, b [B,n] and C [n,n]; got a %s b %s C %s", sa, sb, sc);
    GX_ASSERT_MSG(lambda > 0 && iters >= 1 && eps >= 0,
                  "gx_sinkhorn_hk: need lambda > 0, iters >= 1, eps >= 0 (got %g, %d, %g)",
                  lambda, iters, eps);
    GX_CUDA_DISPATCH(gx_on_cuda(a) || gx_on_cuda(b), gx_cuda_sinkhorn_hk(ctx, a, b, C, lambda, iters, eps));
    const int64_t B = a->shape[0], n = a->shape[1];
    gx_tensor *out = gx_tensor_new(ctx, 1, GX_SHAPE(B));
    gx_sk_mats m = gx_sk_build(ctx, C, lambda);
    /* Save the iterates only when the tape will record this op. */
    int need = ctx->grad_enabled && (a->requires_grad || b->requires_grad);
    double *pq = need ? gx_ctx_alloc(ctx, (size_t)(B * iters * 2 * n + B) * sizeof(double)) : NULL;
    double *Ssave = need ? pq + B * (int64_t)iters * 2 * n : NULL;
    double *scratch = gx_ctx_alloc(ctx, (size_t)(gx_get_threads() * 3 * n) * sizeof(double));
    #pragma omp parallel for schedule(static) if (B * n * n * iters > GX_PAR_THRESHOLD)
    for (int64_t r = 0; r < B; r++) {
        double *w = scratch + omp_get_thread_num() * 3 * n;
        double S = gx_sk_row_forward(&m, a->data + r * n, b->data + r * n, iters, eps, w,
                                     need ? pq + r * (int64_t)iters * 2 * n : NULL);
        if (Ssave) Ssave[r] = S;
        out->data[r] = (gx_real)sqrt((S > 0 ? S : 0.0) + 1e-8);
    }
    gx_tensor *in[2] = { a, b };
    gx_node *node = gx_tape_record(ctx, "sinkhorn_hk", gx_sinkhorn_hk_backward, out, 2, in);
    if (node) {
        gx_sk_saved *sv = gx_ctx_alloc(ctx, sizeof *sv);
        *sv = (gx_sk_saved){ m, pq, Ssave, iters };
        node->saved = sv;
    }
    return out;
}
