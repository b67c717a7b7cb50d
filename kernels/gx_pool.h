/*
 * gx_pool.h — pooling and resampling of [B, C, H, W] tensors (kernels/gx_pool.c).
 */
#ifndef GX_POOL_H
#define GX_POOL_H
#ifdef __cplusplus
extern "C" {
#endif

/* PyTorch's adaptive average pooling: output cell i covers input rows
 * floor(i*H/oh) .. ceil((i+1)*H/oh) - 1 (bins may overlap or differ in size;
 * oh > H works too, repeating rows). x [B, C, H, W] -> [B, C, oh, ow]. */
gx_tensor *gx_adaptive_avg_pool2d(gx_ctx *ctx, gx_tensor *x, int64_t oh, int64_t ow);
/* Bilinear resize, align_corners = false, no antialiasing (as
 * F.interpolate(x, size=(oh, ow), mode="bilinear"): the ratio is in/out, as
 * when a size, not a scale factor, is given). Antialiased image resizing is
 * io/'s job. */
gx_tensor *gx_resize_bilinear(gx_ctx *ctx, gx_tensor *x, int64_t oh, int64_t ow);
/* Nearest-neighbour upsampling by 2 in H and W: [B, C, 2H, 2W]. */
gx_tensor *gx_upsample_nearest2x(gx_ctx *ctx, gx_tensor *x);
/* Max pooling as F.max_pool2d(x, kernel, stride, padding) (square window,
 * dilation 1, ceil_mode false): x [B, C, H, W] ->
 * [B, C, (H + 2p - k)/s + 1, (W + 2p - k)/s + 1]. Padding counts as -inf and
 * must be at most k/2 (as PyTorch), so every window holds an input pixel.
 * Each output takes the first maximum of its window in row-major order (a
 * NaN wins, as PyTorch); backward routes the whole gradient to that pixel. */
gx_tensor *gx_max_pool2d(gx_ctx *ctx, gx_tensor *x, int kernel, int stride, int padding);

#ifdef __cplusplus
}
#endif
#endif
