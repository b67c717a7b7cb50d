/*
 * gx_blas.c — the one place the engine talks to BLAS, and thread control.
 * The precision of the build picks sgemm or dgemm.
 */
#include "gx_impl.h"

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* OpenBLAS exports this; declared here so we do not depend on its header
 * layout beyond cblas.h. */
void openblas_set_num_threads(int num_threads);

void gx_gemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, double alpha,
             const gx_real *A, int64_t lda, const gx_real *B, int64_t ldb,
             double beta, gx_real *C, int64_t ldc) {
    if (M == 0 || N == 0) return;
    if (K == 0) {
        /* BLAS leaves C untouched for K == 0 only when beta == 1. */
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) C[i * ldc + j] = (gx_real)(beta * C[i * ldc + j]);
        return;
    }
#ifdef GX_F64
    cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
#else
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                (int)M, (int)N, (int)K, (float)alpha, A, (int)lda, B, (int)ldb, (float)beta, C, (int)ldc);
#endif
}

void gx_set_threads(int n) {
    if (n < 1) n = 1;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    openblas_set_num_threads(n);
}

int gx_get_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
