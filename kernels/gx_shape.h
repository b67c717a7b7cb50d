/*
 * gx_shape.h — shape and layout ops (kernels/gx_shape.c). Everything but
 * reshape copies; reshape shares data with its input.
 */
#ifndef GX_SHAPE_H
#define GX_SHAPE_H
#ifdef __cplusplus
extern "C" {
#endif

/* One entry of shape may be -1 (inferred). */
gx_tensor *gx_reshape(gx_ctx *ctx, gx_tensor *x, int ndim, const int64_t *shape);
/* out.shape[i] = x.shape[perm[i]]. */
gx_tensor *gx_permute(gx_ctx *ctx, gx_tensor *x, const int *perm);
gx_tensor *gx_concat(gx_ctx *ctx, int n, gx_tensor *const *xs, int dim);
/* Splits x along dim into n parts of sizes[i] (summing to the dim), written to out[]. */
void       gx_split(gx_ctx *ctx, gx_tensor *x, int dim, int n, const int64_t *sizes,
                    gx_tensor **out);
/* x[..., start:end, ...] along dim (step 1). */
gx_tensor *gx_slice(gx_ctx *ctx, gx_tensor *x, int dim, int64_t start, int64_t end);
/* Reverse the order along dim. */
gx_tensor *gx_flip(gx_ctx *ctx, gx_tensor *x, int dim);

#ifdef __cplusplus
}
#endif
#endif
