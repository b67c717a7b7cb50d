/*
 * gx_cuda_blas.cu — GEMM through cuBLAS (twin of kernels/gx_blas.c) and
 * conv2d by im2col + cuBLAS (twin of kernels/gx_conv.c).
 *
 * Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, so every
 * call swaps the operands and passes N, M instead of M, N. The stream's
 * handle decides FP32 (pedantic, the default) or TF32 (gx_cuda_stream_create).
 *
 * conv2d, per sample: im2col of the whole sample (every group) into col
 * [Cin*kh*kw, Ho*Wo], then one strided-batched GEMM over the groups. The
 * backward runs the transposed GEMMs and gathers the column gradient back
 * into x (col2im as a gather: one thread per input pixel, no atomics).
 *
 * Inference conv + BN(eval) + activation: the same GEMMs without the bias,
 * then one epilogue pass (bias, the folded per-channel affine, the
 * activation), rounding where the unfused launchers round.
 *
 * Pairwise squared distances (twin of gx_pairwise_sqdist): row norms in
 * double, -2 a b^T by cuBLAS, then the norms added and the clamp at 0; the
 * backward masks the gradient where the distance is 0 and runs two GEMMs.
 *
 * The causal depthwise conv1d (channels last) is direct: one thread per
 * output, and per (e, k) weight for its gradient.
 */
#include "gx_cuda_impl.cuh"
#include "gx_cuda_body.cuh"

static cublasOperation_t gx_cu_op(int t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; }

extern "C" void gx_cu_gemm(gx_cuda_stream *s, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                           float alpha, const float *A, int64_t lda, const float *B, int64_t ldb,
                           float beta, float *C, int64_t ldc) {
    GX_CU_SKIP(s);
    if (M <= 0 || N <= 0) return;
    gx_cu_note_blas(s, __func__,
                    cublasSgemm(s->blas, gx_cu_op(trans_b), gx_cu_op(trans_a), (int)N, (int)M, (int)K,
                                &alpha, B, (int)ldb, A, (int)lda, &beta, C, (int)ldc));
}

extern "C" void gx_cu_gemm_batched(gx_cuda_stream *s, int trans_a, int trans_b, int64_t M, int64_t N,
                                   int64_t K, float alpha, const float *A, int64_t lda, int64_t sA,
                                   const float *B, int64_t ldb, int64_t sB, float beta, float *C,
                                   int64_t ldc, int64_t sC, int64_t batch) {
    GX_CU_SKIP(s);
    if (M <= 0 || N <= 0 || batch <= 0) return;
    gx_cu_note_blas(s, __func__,
                    cublasSgemmStridedBatched(s->blas, gx_cu_op(trans_b), gx_cu_op(trans_a), (int)N, (int)M,
                                              (int)K, &alpha, B, (int)ldb, sB, A, (int)lda, sA, &beta, C,
                                              (int)ldc, sC, (int)batch));
}

/* -------------------------------------------------------------- conv2d */

extern "C" int64_t gx_cu_conv_col_floats(const gx_cu_conv_shape *c) {
    gx_cu_cv v = gx_cu_cv_make(c);
    return v.Cin * v.kh * v.kw * v.Ho * v.Wo;
}

__global__ void gx_cu_im2col_k(gx_cu_cv v, const float *x, float *col) {
    const int64_t n = v.Cin * v.kh * v.kw * v.Ho * v.Wo;
    GX_CU_LOOP(i, n) col[i] = gx_cu_im2col_at(v, x, i);
}

__global__ void gx_cu_col2im_k(gx_cu_cv v, const float *col, float *gx) {
    const int64_t n = v.Cin * v.H * v.W;
    GX_CU_LOOP(i, n) gx[i] += (float)gx_cu_col2im_at(v, col, i);
}

__global__ void gx_cu_bias_k(float *y, const float *b, int64_t total, int64_t Cout, int64_t P) {
    GX_CU_LOOP(i, total) y[i] += b[(i / P) % Cout];
}

/* The raw conv (no bias) into y: per sample, im2col and one strided-batched
 * GEMM over the groups. */
static void gx_cu_conv_gemms(gx_cuda_stream *s, const gx_cu_conv_shape *c, const float *x, const float *w,
                             float *y, float *col) {
    gx_cu_cv v = gx_cu_cv_make(c);
    const int64_t G = c->groups, cig = c->Cin / G, cog = c->Cout / G;
    const int64_t P = v.Ho * v.Wo, CK = cig * v.kh * v.kw, ncol = gx_cu_conv_col_floats(c);
    for (int64_t b = 0; b < c->B; b++) {
        gx_cu_im2col_k<<<gx_cu_blocks(ncol), GX_CU_THREADS, 0, s->st>>>(v, x + b * c->Cin * v.H * v.W, col);
        GX_CU_CHECK(s);
        /* y_g [cog, P] = w_g [cog, CK] col_g [CK, P], for every group g. */
        gx_cu_gemm_batched(s, 0, 0, cog, P, CK, 1.0f, w, CK, cog * CK, col, P, CK * P, 0.0f,
                           y + b * c->Cout * P, P, cog * P, G);
    }
}

extern "C" void gx_cu_conv2d_fwd(gx_cuda_stream *s, const gx_cu_conv_shape *c, const float *x,
                                 const float *w, const float *bias, float *y, float *col) {
    GX_CU_SKIP(s);
    gx_cu_cv v = gx_cu_cv_make(c);
    const int64_t P = v.Ho * v.Wo;
    gx_cu_conv_gemms(s, c, x, w, y, col);
    if (bias) {
        int64_t total = c->B * c->Cout * P;
        gx_cu_bias_k<<<gx_cu_blocks(total), GX_CU_THREADS, 0, s->st>>>(y, bias, total, c->Cout, P);
        GX_CU_CHECK(s);
    }
}

extern "C" void gx_cu_conv2d_bwd(gx_cuda_stream *s, const gx_cu_conv_shape *c, const float *x,
                                 const float *w, const float *g, float *gx, float *gw, float *gb,
                                 float *col) {
    GX_CU_SKIP(s);
    gx_cu_cv v = gx_cu_cv_make(c);
    const int64_t G = c->groups, cig = c->Cin / G, cog = c->Cout / G;
    const int64_t P = v.Ho * v.Wo, CK = cig * v.kh * v.kw, ncol = gx_cu_conv_col_floats(c);
    for (int64_t b = 0; b < c->B; b++) {
        const float *gb_ = g + b * c->Cout * P;
        if (gw) {
            gx_cu_im2col_k<<<gx_cu_blocks(ncol), GX_CU_THREADS, 0, s->st>>>(v, x + b * c->Cin * v.H * v.W, col);
            GX_CU_CHECK(s);
            /* gw_g [cog, CK] += g_g [cog, P] col_g^T */
            gx_cu_gemm_batched(s, 0, 1, cog, CK, P, 1.0f, gb_, P, cog * P, col, P, CK * P, 1.0f, gw, CK,
                               cog * CK, G);
        }
        if (gx) {
            /* col_g [CK, P] = w_g^T g_g, then scattered back by gathering. */
            gx_cu_gemm_batched(s, 1, 0, CK, P, cog, 1.0f, w, CK, cog * CK, gb_, P, cog * P, 0.0f, col, P,
                               CK * P, G);
            int64_t n = c->Cin * v.H * v.W;
            gx_cu_col2im_k<<<gx_cu_blocks(n), GX_CU_THREADS, 0, s->st>>>(v, col, gx + b * n);
            GX_CU_CHECK(s);
        }
    }
    if (gb) {
        /* [Cout, 1] aligns with the middle dim of [B, Cout, P]. */
        int64_t from[3] = { c->B, c->Cout, P }, to[2] = { c->Cout, 1 };
        gx_cu_reduce_broadcast_add(s, gb, 2, to, g, 3, from);
    }
}

/* ------------------------------------------- conv + BN(eval) + activation */

__global__ void gx_cu_bn_fold_k(const float *gamma, const float *beta, const float *rm, const float *rv,
                                double eps, double *ab, int64_t C) {
    GX_CU_LOOP(c, C) gx_cu_bn_fold_at(gamma, beta, rm, rv, eps, c, C, ab);
}

__global__ void gx_cu_cbna_k(float *y, const float *bias, const double *ab, int act, double p0, double p1,
                             int64_t total, int64_t C, int64_t P) {
    GX_CU_LOOP(k, total) y[k] = gx_cu_cbna_at(y, bias, ab, act, p0, p1, k, C, P);
}

extern "C" void gx_cu_conv2d_bn_act_fwd(gx_cuda_stream *s, const gx_cu_conv_shape *c, const float *x,
                                        const float *w, const float *bias, const float *gamma,
                                        const float *beta, const float *run_mean, const float *run_var,
                                        double eps, int act, double p0, double p1, float *y, float *col,
                                        double *ab) {
    GX_CU_SKIP(s);
    gx_cu_cv v = gx_cu_cv_make(c);
    const int64_t P = v.Ho * v.Wo, total = c->B * c->Cout * P;
    if (total <= 0) return;
    gx_cu_bn_fold_k<<<gx_cu_blocks(c->Cout), GX_CU_THREADS, 0, s->st>>>(gamma, beta, run_mean, run_var, eps, ab,
                                                                         c->Cout);
    GX_CU_CHECK(s);
    gx_cu_conv_gemms(s, c, x, w, y, col);
    gx_cu_cbna_k<<<gx_cu_blocks(total), GX_CU_THREADS, 0, s->st>>>(y, bias, ab, act, p0, p1, total, c->Cout, P);
    GX_CU_CHECK(s);
}

/* ------------------------------------------------ pairwise sq. distances */

/* Row norms of a then b, one thread per row (k ascending, as the CPU). */
__global__ void gx_cu_sqn_k(const float *a, const float *b, double *sq, int64_t N, int64_t M, int64_t D) {
    GX_CU_LOOP(i, N + M) sq[i] = i < N ? gx_cu_row_sqnorm(a, i, D) : gx_cu_row_sqnorm(b, i - N, D);
}
__global__ void gx_cu_sqd_k(float *d, const double *sq, int64_t N, int64_t M) {
    GX_CU_LOOP(k, N * M) d[k] = gx_cu_sqd_at(d, sq, k, N, M);
}
/* The masked gradient: entries that came out <= 0 pass nothing. */
__global__ void gx_cu_sqd_mask_k(const float *d, const float *g, float *gm, int64_t n) {
    GX_CU_LOOP(k, n) gm[k] = d[k] > 0 ? g[k] : 0.0f;
}
/* sums = [row sums (N) | column sums (M)] of gm. */
__global__ void gx_cu_sqd_sums_k(const float *gm, double *sums, int64_t N, int64_t M) {
    GX_CU_LOOP(i, N + M) sums[i] = i < N ? gx_cu_mat_sum(gm, i, N, M, 0) : gx_cu_mat_sum(gm, i - N, N, M, 1);
}
/* ga[i, k] += 2 rs_i a[i, k]: the gradient of the |a_i|^2 term. */
__global__ void gx_cu_sqd_diag_k(const float *a, const double *rs, float *ga, int64_t R, int64_t D) {
    GX_CU_LOOP(k, R * D) ga[k] += (float)(2.0 * rs[k / D] * a[k]);
}

extern "C" void gx_cu_pairwise_sqdist_fwd(gx_cuda_stream *s, const float *a, const float *b, float *d, double *sq,
                                          int64_t N, int64_t M, int64_t D) {
    GX_CU_SKIP(s);
    if (N <= 0 || M <= 0) return;
    gx_cu_sqn_k<<<gx_cu_blocks(N + M), GX_CU_THREADS, 0, s->st>>>(a, b, sq, N, M, D);
    GX_CU_CHECK(s);
    gx_cu_gemm(s, 0, 1, N, M, D, -2.0f, a, D, b, D, 0.0f, d, M);
    gx_cu_sqd_k<<<gx_cu_blocks(N * M), GX_CU_THREADS, 0, s->st>>>(d, sq, N, M);
    GX_CU_CHECK(s);
}

extern "C" void gx_cu_pairwise_sqdist_bwd(gx_cuda_stream *s, const float *a, const float *b, const float *d,
                                          const float *g, float *ga, float *gb, float *gm, double *sums,
                                          int64_t N, int64_t M, int64_t D) {
    GX_CU_SKIP(s);
    if (N <= 0 || M <= 0 || (!ga && !gb)) return;
    gx_cu_sqd_mask_k<<<gx_cu_blocks(N * M), GX_CU_THREADS, 0, s->st>>>(d, g, gm, N * M);
    GX_CU_CHECK(s);
    gx_cu_sqd_sums_k<<<gx_cu_blocks(N + M), GX_CU_THREADS, 0, s->st>>>(gm, sums, N, M);
    GX_CU_CHECK(s);
    if (ga) {       /* ga += 2 rs_i a_i, then ga -= 2 gm b (GEMM, beta 1) */
        gx_cu_sqd_diag_k<<<gx_cu_blocks(N * D), GX_CU_THREADS, 0, s->st>>>(a, sums, ga, N, D);
        GX_CU_CHECK(s);
        gx_cu_gemm(s, 0, 0, N, D, M, -2.0f, gm, M, b, D, 1.0f, ga, D);
    }
    if (gb) {
        gx_cu_sqd_diag_k<<<gx_cu_blocks(M * D), GX_CU_THREADS, 0, s->st>>>(b, sums + N, gb, M, D);
        GX_CU_CHECK(s);
        gx_cu_gemm(s, 1, 0, M, D, N, -2.0f, gm, M, a, D, 1.0f, gb, D);
    }
}

/* ----------------------------------------------------- conv1d causal dw */

__global__ void gx_cu_c1_k(const float *x, const float *w, const float *bias, float *y, int64_t n, int64_t L,
                           int64_t E, int64_t K) {
    GX_CU_LOOP(i, n) y[i] = gx_cu_c1_at(x, w, bias, i, L, E, K);
}
__global__ void gx_cu_c1_dx_k(const float *w, const float *g, float *gx, int64_t n, int64_t L, int64_t E,
                              int64_t K) {
    GX_CU_LOOP(i, n) gx[i] += (float)gx_cu_c1_dx_at(w, g, i, L, E, K);
}
/* Index i < E*K: dw[e, k]; E*K <= i < E*K + E: db[e] (k = -1). */
__global__ void gx_cu_c1_dw_k(const float *x, const float *g, float *gw, float *gb, int64_t B, int64_t L,
                              int64_t E, int64_t K) {
    GX_CU_LOOP(i, E * K + E) {
        if (i < E * K) { if (gw) gw[i] += (float)gx_cu_c1_dw_at(x, g, i / K, i % K, B, L, E, K); }
        else if (gb) gb[i - E * K] += (float)gx_cu_c1_dw_at(x, g, i - E * K, -1, B, L, E, K);
    }
}

extern "C" void gx_cu_conv1d_causal_dw_fwd(gx_cuda_stream *s, const float *x, const float *w, const float *bias,
                                           float *y, int64_t B, int64_t L, int64_t E, int64_t K) {
    GX_CU_SKIP(s);
    const int64_t n = B * L * E;
    if (n <= 0) return;
    gx_cu_c1_k<<<gx_cu_blocks(n), GX_CU_THREADS, 0, s->st>>>(x, w, bias, y, n, L, E, K);
    GX_CU_CHECK(s);
}

extern "C" void gx_cu_conv1d_causal_dw_bwd(gx_cuda_stream *s, const float *x, const float *w, const float *g,
                                           float *gx, float *gw, float *gb, int64_t B, int64_t L, int64_t E,
                                           int64_t K) {
    GX_CU_SKIP(s);
    const int64_t n = B * L * E;
    if (n <= 0) return;
    if (gx) {
        gx_cu_c1_dx_k<<<gx_cu_blocks(n), GX_CU_THREADS, 0, s->st>>>(w, g, gx, n, L, E, K);
        GX_CU_CHECK(s);
    }
    if (gw || gb) {
        gx_cu_c1_dw_k<<<gx_cu_blocks(E * K + E), GX_CU_THREADS, 0, s->st>>>(x, g, gw, gb, B, L, E, K);
        GX_CU_CHECK(s);
    }
}
