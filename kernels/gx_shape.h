/*
 * gx_shape.h — shape and layout ops (kernels/gx_shape.c). Everything but
 * reshape copies; reshape shares data with its input.
 */
#ifndef GX_SHAPE_H
#define GX_SHAPE_H
#ifdef __cplusplus
extern "C" {
#endif

/* One entry of shape may be -1 (inferred). The result shares x's data (no
 * copy; writing through one changes the other) but has its own gradient
 * buffer, whose backward adds into x's. */
gx_tensor *gx_reshape(gx_ctx *ctx, gx_tensor *x, int ndim, const int64_t *shape);
/* out.shape[i] = x.shape[perm[i]]; perm has x->ndim entries (up to 6-D). */
gx_tensor *gx_permute(gx_ctx *ctx, gx_tensor *x, const int *perm);
/* Joins n >= 1 inputs along dim (negative counts from the end); all other
 * dims must match. More than GX_NODE_MAX_IN inputs are joined as
 * concat(first 5, concat(rest)): one extra copy of the tail. */
gx_tensor *gx_concat(gx_ctx *ctx, int n, gx_tensor *const *xs, int dim);
/* Splits x along dim into n parts of sizes[i] (summing to the dim), written
 * to out[]. Each part is a gx_slice (a copy with its own tape node). */
void       gx_split(gx_ctx *ctx, gx_tensor *x, int dim, int n, const int64_t *sizes,
                    gx_tensor **out);
/* x[..., start:end, ...] along dim (step 1); requires 0 <= start <= end <=
 * size (no Python-style negative indices; dim itself may be negative). */
gx_tensor *gx_slice(gx_ctx *ctx, gx_tensor *x, int dim, int64_t start, int64_t end);
/* Reverse the order along dim (negative counts from the end). */
gx_tensor *gx_flip(gx_ctx *ctx, gx_tensor *x, int dim);

#ifdef __cplusplus
}
#endif
#endif
