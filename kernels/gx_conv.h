/*
 * gx_conv.h — convolutions (kernels/gx_conv.c).
 */
#ifndef GX_CONV_H
#define GX_CONV_H
#ifdef __cplusplus
extern "C" {
#endif

/* 2-D cross-correlation as torch.nn.functional.conv2d (dilation 1).
 * x [B, Cin, H, W], w [Cout, Cin/groups, kh, kw], b [Cout] or NULL.
 * Output [B, Cout, (H + 2p - kh)/s + 1, (W + 2p - kw)/s + 1].
 * groups == Cin == Cout (> 1) is depthwise and takes a direct (non-GEMM)
 * path; stride 1 runs kh*kw shifted GEMMs on a padded copy (no copy at all
 * for padding 0, so 1x1 convs are a single GEMM); stride > 1 uses im2col.
 * Scratch: about one padded (sample, group) input plus one output plane set
 * (stride 1) or Cin_g*kh*kw*Ho*Wo values (stride > 1), from the arena. */
gx_tensor *gx_conv2d(gx_ctx *ctx, gx_tensor *x, gx_tensor *w, gx_tensor *b,
                     int stride, int padding, int groups);

/* Nearest x2 upsample followed by a 3x3 conv with padding 1, fused:
 * equals gx_conv2d(gx_upsample_nearest2x(x), w, b, 1, 1, 1) up to float
 * summation order, with 2.25x fewer multiply-adds and no upsampled tensor
 * (each output parity is a 2x2 conv of x with summed weights; see
 * gx_conv.c). x [B, Cin, H, W], w [Cout, Cin, 3, 3] (the same weights the
 * unfused pair takes), b [Cout] or NULL. Output [B, Cout, 2H, 2W].
 * Forward and backward; one GEMM per sample (batch invariant). */
gx_tensor *gx_upconv2x3(gx_ctx *ctx, gx_tensor *x, gx_tensor *w, gx_tensor *b);

/* gx_leaky_relu(gx_upconv2x3(x, w, b), slope) for inference, the
 * activation fused into the op's last pass over its output. When the op
 * would be taped (grad enabled and an input requires grad) it is exactly
 * that unfused pair, so gradients and training are unchanged. Untaped:
 * the same bits as the pair, except that inputs of at most 16 pixels
 * (H*W, e.g. 4x4) on AVX2+FMA take one exact 2x2 conv per output parity
 * (fewer multiply-adds, a different float summation order). Each sample
 * is computed alone either way (batch invariant). */
gx_tensor *gx_upconv2x3_leaky(gx_ctx *ctx, gx_tensor *x, gx_tensor *w, gx_tensor *b, double slope);

/* Causal depthwise 1-D convolution over time, channels last (the SSM's
 * layout, so no transposes are needed): x [B, L, E], w [E, 1, K] (PyTorch
 * Conv1d(E, E, K, groups=E) weight), b [E] or NULL.
 * out[b,t,e] = bias[e] + sum_{k<K} w[e,0,k] * x[b, t-(K-1)+k, e], zero before t=0. */
gx_tensor *gx_conv1d_causal_dw(gx_ctx *ctx, gx_tensor *x, gx_tensor *w, gx_tensor *b);

#ifdef __cplusplus
}
#endif
#endif
