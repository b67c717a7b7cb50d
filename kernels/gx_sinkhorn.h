/*
 * gx_sinkhorn.h — entropic Sinkhorn for the Hellinger-Kantorovich loss
 * (kernels/gx_sinkhorn.c), spec/wavelet-mamba.md "Training losses".
 */
#ifndef GX_SINKHORN_H
#define GX_SINKHORN_H
#ifdef __cplusplus
extern "C" {
#endif

/* For each row b: K = exp(clamp(-C/lambda, -100, 100)); v = 1;
 * repeat iters times: u = a_b / (K v + eps); v = b_b / (K^T u + eps);
 * out[b] = sqrt(max(sum_ij u_i K_ij v_j C_ij, 0) + 1e-8).
 * a, b [B, n] (histograms), C [n, n] constant cost. Output [B].
 * Differentiable with respect to a and b through every iteration (the
 * denominators of every iteration are kept in the arena: B*iters*2n doubles,
 * only when grad is recorded); C gets no gradient. */
gx_tensor *gx_sinkhorn_hk(gx_ctx *ctx, gx_tensor *a, gx_tensor *b, const gx_tensor *C,
                          double lambda, int iters, double eps);

#ifdef __cplusplus
}
#endif
#endif
