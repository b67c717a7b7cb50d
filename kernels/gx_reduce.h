/*
 * gx_reduce.h — reductions and the softmax family (kernels/gx_reduce.c).
 *
 * A reduction over `dim` views x as [outer, n, inner]; keepdim keeps a size-1
 * dim in the output. Negative dims count from the end.
 */
#ifndef GX_REDUCE_H
#define GX_REDUCE_H
#ifdef __cplusplus
extern "C" {
#endif

gx_tensor *gx_sum(gx_ctx *ctx, gx_tensor *x, int dim, int keepdim);
gx_tensor *gx_mean(gx_ctx *ctx, gx_tensor *x, int dim, int keepdim);
/* Max over dim; the gradient goes to the first maximal element. */
gx_tensor *gx_max(gx_ctx *ctx, gx_tensor *x, int dim, int keepdim);
/* Over every element: 0-D outputs. */
gx_tensor *gx_sum_all(gx_ctx *ctx, gx_tensor *x);
gx_tensor *gx_mean_all(gx_ctx *ctx, gx_tensor *x);

gx_tensor *gx_softmax(gx_ctx *ctx, gx_tensor *x, int dim);
gx_tensor *gx_log_softmax(gx_ctx *ctx, gx_tensor *x, int dim);
gx_tensor *gx_logsumexp(gx_ctx *ctx, gx_tensor *x, int dim, int keepdim);

/* Per-sample cross-entropy of logits [B, K] against class indices target[B]
 * (0 <= target < K), with label smoothing ls in [0,1) as PyTorch defines it.
 * Output [B] (no reduction: focal and weighted losses need per-sample terms). */
gx_tensor *gx_cross_entropy(gx_ctx *ctx, gx_tensor *logits, const int32_t *target,
                            double label_smoothing);
/* out[b] = x[b, idx[b]] for x [B, K]. */
gx_tensor *gx_gather(gx_ctx *ctx, gx_tensor *x, const int32_t *idx);
/* [B, K] one-hot (no gradient). */
gx_tensor *gx_one_hot(gx_ctx *ctx, const int32_t *idx, int64_t B, int64_t K);
/* x / max(||x||_2, eps) along dim. */
gx_tensor *gx_l2_normalize(gx_ctx *ctx, gx_tensor *x, int dim, double eps);

#ifdef __cplusplus
}
#endif
#endif
