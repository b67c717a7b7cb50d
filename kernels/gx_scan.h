/*
 * gx_scan.h — the selective state-space scan of WaveletMamba (kernels/gx_scan.c),
 * spec/wavelet-mamba.md "SSM block" steps 4-5, fused: discretisation and the
 * recurrence in one op so that no B x L x E x N tensor is materialised in the
 * forward pass.
 */
#ifndef GX_SCAN_H
#define GX_SCAN_H
#ifdef __cplusplus
extern "C" {
#endif

/* xs [B, L, E], delta [B, L, E] or [B, 1, E] (one delta for every t: the
 * spec's `mean` mode), A [E, N] (already -exp(A_log)), Bm [E, N], Cm [E, N].
 *   Abar = exp(delta*A);  Bbar = (Abar - 1)/A * Bm   (delta*Bm where |delta*A| < 1e-6)
 *   h_t = Abar_t * h_{t-1} + Bbar_t * xs_t,  h_{-1} = 0
 *   y[b,t,e] = sum_n h_t[e,n] * Cm[e,n]
 * Output y [B, L, E]. Gradients flow to xs, delta, A, Bm and Cm; in the
 * limit branch they are those of the value computed (dBbar/ddelta = Bm,
 * dBbar/dA = 0), as autograd through torch.where gives. Nothing is saved for
 * backward: it recomputes the states one (b, e) at a time (see gx_scan.c). */
gx_tensor *gx_ssm_scan(gx_ctx *ctx, gx_tensor *xs, gx_tensor *delta, gx_tensor *A,
                       gx_tensor *Bm, gx_tensor *Cm);

#ifdef __cplusplus
}
#endif
#endif
