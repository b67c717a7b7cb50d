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
/* Over every element: 0-D outputs (sums in double, fixed blocks). */
gx_tensor *gx_sum_all(gx_ctx *ctx, gx_tensor *x);
gx_tensor *gx_mean_all(gx_ctx *ctx, gx_tensor *x);

/* Numerically stable (the max is subtracted); logsumexp of a slice that is
 * all -inf is -inf, as in PyTorch. */
gx_tensor *gx_softmax(gx_ctx *ctx, gx_tensor *x, int dim);
gx_tensor *gx_log_softmax(gx_ctx *ctx, gx_tensor *x, int dim);
gx_tensor *gx_logsumexp(gx_ctx *ctx, gx_tensor *x, int dim, int keepdim);

/* Per-sample cross-entropy of logits [B, K] against class indices target[B]
 * (0 <= target < K, asserted; no ignore_index), with label smoothing ls in
 * [0,1) as PyTorch defines it:
 *   loss_b = (1-ls) * (-log p[b,t_b]) + ls/K * sum_k (-log p[b,k]),
 * i.e. F.cross_entropy(logits, target, reduction='none', label_smoothing=ls).
 * Output [B] (no reduction: focal and weighted losses need per-sample terms).
 * target is copied: the caller's array need not outlive the call. */
gx_tensor *gx_cross_entropy(gx_ctx *ctx, gx_tensor *logits, const int32_t *target,
                            double label_smoothing);
/* out[b] = x[b, idx[b]] for x [B, K] (indices asserted in range, copied). */
gx_tensor *gx_gather(gx_ctx *ctx, gx_tensor *x, const int32_t *idx);
/* [B, K] one-hot (no gradient). */
gx_tensor *gx_one_hot(gx_ctx *ctx, const int32_t *idx, int64_t B, int64_t K);
/* x / max(||x||_2, eps) along dim, as F.normalize(x, 2, dim, eps). Where
 * ||x|| < eps the gradient is g / eps (the clamp cuts the norm's path);
 * at ||x|| == eps the norm's path is kept, like PyTorch's clamp_min. */
gx_tensor *gx_l2_normalize(gx_ctx *ctx, gx_tensor *x, int dim, double eps);

#ifdef __cplusplus
}
#endif
#endif
