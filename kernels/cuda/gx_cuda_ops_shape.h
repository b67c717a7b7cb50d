/*
 * gx_cuda_ops_shape.h — the device ops of pooling (gx_pool.c), shape
 * (gx_shape.c), the selective scan (gx_scan.c), Sinkhorn (gx_sinkhorn.c) and
 * the optimiser's device half (gx_optim.c), in gx_cuda_ops_shape.c.
 *
 * Only the f32 CUDA build compiles these (GX_CUDA_ON). Each gx_cuda_<op> is
 * reached from its CPU entry through GX_CUDA_DISPATCH, placed right after
 * the entry's argument checks (they read shapes only, so both backends
 * refuse the same calls with the same message), and takes the arguments
 * those checks resolved (a negative dim already made positive, reshape's -1
 * already inferred). Every tensor input must be a device tensor (asserted).
 */
#ifndef GX_CUDA_OPS_SHAPE_H
#define GX_CUDA_OPS_SHAPE_H

#include "gx_cuda.h"

/* 1 when any of the n tensors lives on the device (a multi-input op's
 * dispatch condition; the device op then asserts that all of them do). */
static inline int gx_cuda_any_on(int n, gx_tensor *const *xs) {
    for (int k = 0; k < n; k++)
        if (xs[k] && xs[k]->device == GX_DEVICE_CUDA) return 1;
    return 0;
}

/* ---------------------------------------------------------- gx_pool.c */
gx_tensor *gx_cuda_adaptive_avg_pool2d(gx_ctx *ctx, gx_tensor *x, int64_t oh, int64_t ow);
gx_tensor *gx_cuda_resize_bilinear(gx_ctx *ctx, gx_tensor *x, int64_t oh, int64_t ow);
gx_tensor *gx_cuda_upsample_nearest2x(gx_ctx *ctx, gx_tensor *x);
gx_tensor *gx_cuda_max_pool2d(gx_ctx *ctx, gx_tensor *x, int kernel, int stride, int padding);

/* --------------------------------------------------------- gx_shape.c */
/* shape: the resolved target shape (no -1). */
gx_tensor *gx_cuda_reshape(gx_ctx *ctx, gx_tensor *x, int ndim, const int64_t *shape);
gx_tensor *gx_cuda_permute(gx_ctx *ctx, gx_tensor *x, const int *perm);
/* One node of at most GX_NODE_MAX_IN inputs; oshape: the joined shape. */
gx_tensor *gx_cuda_concat(gx_ctx *ctx, int n, gx_tensor *const *xs, int dim, const int64_t *oshape);
gx_tensor *gx_cuda_slice(gx_ctx *ctx, gx_tensor *x, int dim, int64_t start, int64_t end);
gx_tensor *gx_cuda_flip(gx_ctx *ctx, gx_tensor *x, int dim);

/* ---------------------------------------------------------- gx_scan.c */
gx_tensor *gx_cuda_ssm_scan(gx_ctx *ctx, gx_tensor *xs, gx_tensor *delta, gx_tensor *A, gx_tensor *Bm,
                            gx_tensor *Cm);

/* ------------------------------------------------------ gx_sinkhorn.c */
/* a, b on the device; the constant C may be a host tensor (it is uploaded
 * into the ctx's device scratch) or a device one. */
gx_tensor *gx_cuda_sinkhorn_hk(gx_ctx *ctx, gx_tensor *a, gx_tensor *b, const gx_tensor *C, double lambda,
                               int iters, double eps);

/* --------------------------------------------------------- gx_optim.c */
/* gx_optim_step's updates for parameters on the device (p->cuda), on
 * p->cuda's stream, without waiting: one gx_cu_optim_update per trained
 * tensor (o->offset[i] >= 0) with its slots of dev_state, a device mirror of
 * o->state in the same layout (NULL when the optimiser keeps no state).
 * o->step is the step being taken (already incremented). */
void   gx_cuda_optim_step(const gx_optim *o, gx_params *p, const double *lr_by_group, float *dev_state);
/* gx_clip_grad_norm over nt device gradient buffers g[t] of n[t] floats, on
 * e's stream; waits for the norm and returns it (NaN when the device
 * reported an error, which stays in e for gx_cuda_exec_sync). */
double gx_cuda_clip_grad_norm(gx_cuda_exec *e, int nt, float *const *g, const int64_t *n, double max_norm);

#endif
