/*
 * gx_cuda_sinkhorn.cu — entropic Sinkhorn (Hellinger-Kantorovich term) on
 * the GPU, twin of kernels/gx_sinkhorn.c: the same iterations in double, the
 * same saved denominators, the same reverse sweep (bodies in
 * gx_cuda_body.cuh, host-tested).
 *
 * One thread per row: a row's iterations form a serial chain of n x n
 * matrix-vector products, and at the model's sizes (n = 40, 50 iterations,
 * a few hundred rows) this is a small share of a training step. A block per
 * row with the products split over threads is the faster layout to move to
 * once it shows in a profile.
 */
#include "gx_cuda_impl.cuh"
#include "gx_cuda_body.cuh"

__global__ void gx_cu_sk_build_k(const float *C, double lambda, int64_t n, double *mats) {
    GX_CU_LOOP(idx, n * n) gx_cu_sk_build_at(C, lambda, n, idx, mats);
}

__global__ void gx_cu_sk_fwd_k(const double *mats, const float *a, const float *b, int64_t n, int iters,
                               double eps, float *out, double *pq, double *work, int64_t B) {
    GX_CU_LOOP(r, B) {
        double *pr = pq ? pq + r * (int64_t)iters * 2 * n : NULL;
        double S = gx_cu_sk_row_fwd(mats, a + r * n, b + r * n, n, iters, eps, work + r * 7 * n, pr);
        if (pq) pq[B * (int64_t)iters * 2 * n + r] = S;
        out[r] = (float)sqrt((S > 0 ? S : 0.0) + 1e-8);
    }
}

__global__ void gx_cu_sk_bwd_k(const double *mats, const float *a, const float *b, const float *g,
                               const double *pq, int64_t n, int iters, float *ga, float *gb, double *work,
                               int64_t B) {
    GX_CU_LOOP(r, B) {
        double gS = gx_cu_sk_gS(pq[B * (int64_t)iters * 2 * n + r], g[r]);
        gx_cu_sk_row_bwd(mats, a + r * n, b + r * n, pq + r * (int64_t)iters * 2 * n, n, iters, gS,
                         ga ? ga + r * n : NULL, gb ? gb + r * n : NULL, work + r * 7 * n);
    }
}

extern "C" void gx_cu_sinkhorn_fwd(gx_cuda_stream *s, const float *a, const float *b, const float *C,
                                   double lambda, int iters, double eps, float *out, double *mats, double *pq,
                                   double *work, int64_t B, int64_t n) {
    GX_CU_SKIP(s);
    if (B <= 0 || n <= 0 || iters < 1) return;
    gx_cu_sk_build_k<<<gx_cu_blocks(n * n), GX_CU_THREADS, 0, s->st>>>(C, lambda, n, mats);
    GX_CU_CHECK(s);
    /* Small blocks: rows are few, and each thread runs long. */
    gx_cu_sk_fwd_k<<<(unsigned)((B + 63) / 64), 64, 0, s->st>>>(mats, a, b, n, iters, eps, out, pq, work, B);
    GX_CU_CHECK(s);
}

extern "C" void gx_cu_sinkhorn_bwd(gx_cuda_stream *s, const float *a, const float *b, const float *g,
                                   const double *mats, const double *pq, int iters, float *ga, float *gb,
                                   double *work, int64_t B, int64_t n) {
    GX_CU_SKIP(s);
    if (B <= 0 || n <= 0 || iters < 1 || (!ga && !gb)) return;
    gx_cu_sk_bwd_k<<<(unsigned)((B + 63) / 64), 64, 0, s->st>>>(mats, a, b, g, pq, n, iters, ga, gb, work, B);
    GX_CU_CHECK(s);
}
