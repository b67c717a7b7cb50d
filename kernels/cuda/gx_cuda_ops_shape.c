/*
 * gx_cuda_ops_shape.c — device ops of pooling, shape, the selective scan and
 * Sinkhorn, and the optimiser's device updates: the gx API over the
 * launchers of gx_cuda.h (gx_cuda_pool.cu, gx_cuda_shape.cu,
 * gx_cuda_scan.cu, gx_cuda_sinkhorn.cu, gx_cuda_optim.cu), forward beside
 * backward as in the CPU family files.
 *
 * Each op records the CPU op's name on the tape, with its small arguments in
 * node->i / node->f like the CPU op. Nothing these ops keep for backward
 * lives in host memory: pooling and the scan recompute what they need (the
 * launchers' design), Sinkhorn keeps its matrices and denominators in the
 * ctx's device arena. Launches are asynchronous on the ctx's stream; errors
 * surface at the caller's gx_cuda_exec_sync.
 */
#include "gx_impl.h"
#include "gx_cuda_ops_shape.h"

#include <math.h>

/* The stream an op (or its backward) runs on; asserts a real device ctx. */
static gx_cuda_stream *gx_ops_stream(gx_ctx *ctx, const char *op) {
    return gx_cuda_op_exec(ctx, op)->stream;
}

/* Mixing host and device inputs in one op is a programmer error. */
static void gx_ops_need_dev(const gx_tensor *t, const char *op, const char *what) {
    GX_ASSERT_MSG(t->device == GX_DEVICE_CUDA, "%s: %s is a host tensor, the other inputs are on the device "
                  "(move it with gx_to_device)", op, what);
}

/* ================================================================ pooling */

/* Planes, input and output sizes of a [B, C, H, W] op. */
typedef struct { int64_t P, H, W, oh, ow; } gx_ops_planes;

static gx_ops_planes gx_ops_planes_of(const gx_tensor *x, const gx_tensor *y) {
    return (gx_ops_planes){ x->shape[0] * x->shape[1], x->shape[2], x->shape[3], y->shape[2], y->shape[3] };
}

static gx_tensor *gx_ops_pool_out(gx_ctx *ctx, const gx_tensor *x, int64_t oh, int64_t ow) {
    return gx_tensor_new(ctx, 4, GX_SHAPE(x->shape[0], x->shape[1], oh, ow));
}

static void gx_cuda_adaptive_avg_pool2d_bw(gx_ctx *ctx, gx_node *nd) {
    gx_real *gi = gx_grad(ctx, nd->in[0]);
    if (!gi) return;
    gx_ops_planes s = gx_ops_planes_of(nd->in[0], nd->out);
    gx_cu_adaptive_avg_pool_bwd(gx_ops_stream(ctx, nd->op), nd->out->grad, gi, s.P, s.H, s.W, s.oh, s.ow);
}

gx_tensor *gx_cuda_adaptive_avg_pool2d(gx_ctx *ctx, gx_tensor *x, int64_t oh, int64_t ow) {
    gx_cuda_stream *st = gx_ops_stream(ctx, "adaptive_avg_pool2d");
    gx_tensor *y = gx_ops_pool_out(ctx, x, oh, ow);
    gx_ops_planes s = gx_ops_planes_of(x, y);
    gx_cu_adaptive_avg_pool_fwd(st, x->data, y->data, s.P, s.H, s.W, s.oh, s.ow);
    gx_tape_record(ctx, "adaptive_avg_pool2d", gx_cuda_adaptive_avg_pool2d_bw, y, 1, &x);
    return y;
}

static void gx_cuda_resize_bilinear_bw(gx_ctx *ctx, gx_node *nd) {
    gx_real *gi = gx_grad(ctx, nd->in[0]);
    if (!gi) return;
    gx_ops_planes s = gx_ops_planes_of(nd->in[0], nd->out);
    gx_cu_resize_bilinear_bwd(gx_ops_stream(ctx, nd->op), nd->out->grad, gi, s.P, s.H, s.W, s.oh, s.ow);
}

gx_tensor *gx_cuda_resize_bilinear(gx_ctx *ctx, gx_tensor *x, int64_t oh, int64_t ow) {
    gx_cuda_stream *st = gx_ops_stream(ctx, "resize_bilinear");
    gx_tensor *y = gx_ops_pool_out(ctx, x, oh, ow);
    gx_ops_planes s = gx_ops_planes_of(x, y);
    gx_cu_resize_bilinear_fwd(st, x->data, y->data, s.P, s.H, s.W, s.oh, s.ow);
    gx_tape_record(ctx, "resize_bilinear", gx_cuda_resize_bilinear_bw, y, 1, &x);
    return y;
}

static void gx_cuda_upsample_nearest2x_bw(gx_ctx *ctx, gx_node *nd) {
    gx_real *gi = gx_grad(ctx, nd->in[0]);
    if (!gi) return;
    gx_ops_planes s = gx_ops_planes_of(nd->in[0], nd->out);
    gx_cu_upsample_nearest2x_bwd(gx_ops_stream(ctx, nd->op), nd->out->grad, gi, s.P, s.H, s.W);
}

gx_tensor *gx_cuda_upsample_nearest2x(gx_ctx *ctx, gx_tensor *x) {
    gx_cuda_stream *st = gx_ops_stream(ctx, "upsample_nearest2x");
    gx_tensor *y = gx_ops_pool_out(ctx, x, 2 * x->shape[2], 2 * x->shape[3]);
    gx_ops_planes s = gx_ops_planes_of(x, y);
    gx_cu_upsample_nearest2x_fwd(st, x->data, y->data, s.P, s.H, s.W);
    gx_tape_record(ctx, "upsample_nearest2x", gx_cuda_upsample_nearest2x_bw, y, 1, &x);
    return y;
}

/* node: i = kernel, stride, padding. The launcher's backward recomputes
 * each window's argmax from x, so no index table is kept. */
static void gx_cuda_max_pool2d_bw(gx_ctx *ctx, gx_node *nd) {
    gx_real *gi = gx_grad(ctx, nd->in[0]);
    if (!gi) return;
    gx_ops_planes s = gx_ops_planes_of(nd->in[0], nd->out);
    gx_cu_max_pool2d_bwd(gx_ops_stream(ctx, nd->op), nd->in[0]->data, nd->out->grad, gi, s.P, s.H, s.W,
                         (int)nd->i[0], (int)nd->i[1], (int)nd->i[2]);
}

gx_tensor *gx_cuda_max_pool2d(gx_ctx *ctx, gx_tensor *x, int kernel, int stride, int padding) {
    gx_cuda_stream *st = gx_ops_stream(ctx, "max_pool2d");
    const int64_t H = x->shape[2], W = x->shape[3];
    gx_tensor *y = gx_ops_pool_out(ctx, x, (H + 2 * padding - kernel) / stride + 1,
                                   (W + 2 * padding - kernel) / stride + 1);
    gx_ops_planes s = gx_ops_planes_of(x, y);
    gx_cu_max_pool2d_fwd(st, x->data, y->data, s.P, H, W, kernel, stride, padding);
    gx_node *nd = gx_tape_record(ctx, "max_pool2d", gx_cuda_max_pool2d_bw, y, 1, &x);
    if (nd) { nd->i[0] = kernel; nd->i[1] = stride; nd->i[2] = padding; }
    return y;
}

/* ================================================================== shape */

/* The gradient passes through unchanged: the view and x share a layout. */
static void gx_cuda_reshape_bw(gx_ctx *ctx, gx_node *nd) {
    gx_real *gi = gx_grad(ctx, nd->in[0]);
    if (!gi) return;
    gx_cu_accumulate(gx_ops_stream(ctx, nd->op), gi, nd->out->grad, nd->out->numel);
}

/* A header over x's device data (no launch), with its own gradient buffer
 * made by gx_grad on first use, as the CPU reshape. */
gx_tensor *gx_cuda_reshape(gx_ctx *ctx, gx_tensor *x, int ndim, const int64_t *shape) {
    gx_cuda_op_exec(ctx, "reshape");
    gx_tensor *out = gx_view_header(ctx, x, ndim, shape);
    gx_tape_record(ctx, "reshape", gx_cuda_reshape_bw, out, 1, &x);
    return out;
}

/* node: i[0..ndim) = perm (as the CPU's). */
static void gx_cuda_permute_bw(gx_ctx *ctx, gx_node *nd) {
    gx_tensor *x = nd->in[0];
    gx_real *gi = gx_grad(ctx, x);
    if (!gi) return;
    int perm[GX_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) perm[d] = (int)nd->i[d];
    gx_cu_permute_bwd(gx_ops_stream(ctx, nd->op), nd->out->grad, x->ndim, x->shape, perm, gi);
}

gx_tensor *gx_cuda_permute(gx_ctx *ctx, gx_tensor *x, const int *perm) {
    gx_cuda_stream *st = gx_ops_stream(ctx, "permute");
    int64_t oshape[GX_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) oshape[d] = x->shape[perm[d]];
    gx_tensor *y = gx_tensor_new(ctx, x->ndim, oshape);
    gx_cu_permute_fwd(st, x->data, x->ndim, x->shape, perm, y->data);
    gx_node *nd = gx_tape_record(ctx, "permute", gx_cuda_permute_bw, y, 1, &x);
    if (nd) for (int d = 0; d < x->ndim; d++) nd->i[d] = perm[d];
    return y;
}

/* node: i[0] = dim. Inputs that need no gradient get a NULL buffer, which
 * the launcher skips. */
static void gx_cuda_concat_bw(gx_ctx *ctx, gx_node *nd) {
    const int dim = (int)nd->i[0];
    int64_t outer, N, inner, sizes[GX_NODE_MAX_IN];
    float *gxs[GX_NODE_MAX_IN];
    gx_split_dims(nd->out, dim, &outer, &N, &inner);
    for (int k = 0; k < nd->n_in; k++) {
        sizes[k] = nd->in[k]->shape[dim];
        gxs[k] = gx_grad(ctx, nd->in[k]);
    }
    gx_cu_concat_bwd(gx_ops_stream(ctx, nd->op), nd->n_in, nd->out->grad, sizes, gxs, outer, inner);
}

gx_tensor *gx_cuda_concat(gx_ctx *ctx, int n, gx_tensor *const *xs, int dim, const int64_t *oshape) {
    gx_cuda_stream *st = gx_ops_stream(ctx, "concat");
    GX_ASSERT(n >= 1 && n <= GX_NODE_MAX_IN);
    const float *src[GX_NODE_MAX_IN];
    int64_t sizes[GX_NODE_MAX_IN];
    char what[32];
    for (int k = 0; k < n; k++) {
        snprintf(what, sizeof what, "input %d", k);
        gx_ops_need_dev(xs[k], "gx_concat", what);
        src[k] = xs[k]->data;
        sizes[k] = xs[k]->shape[dim];
    }
    gx_tensor *y = gx_tensor_new(ctx, xs[0]->ndim, oshape);
    int64_t outer, N, inner;
    gx_split_dims(y, dim, &outer, &N, &inner);
    gx_cu_concat_fwd(st, n, src, sizes, y->data, outer, inner);
    gx_node *nd = gx_tape_record(ctx, "concat", gx_cuda_concat_bw, y, n, xs);
    if (nd) nd->i[0] = dim;
    return y;
}

/* node: i = dim, start (as the CPU's). */
static void gx_cuda_slice_bw(gx_ctx *ctx, gx_node *nd) {
    gx_real *gi = gx_grad(ctx, nd->in[0]);
    if (!gi) return;
    const int dim = (int)nd->i[0];
    const int64_t start = nd->i[1], end = start + nd->out->shape[dim];
    int64_t outer, N, inner;
    gx_split_dims(nd->in[0], dim, &outer, &N, &inner);
    gx_cu_slice_bwd(gx_ops_stream(ctx, nd->op), nd->out->grad, gi, outer, N, inner, start, end);
}

gx_tensor *gx_cuda_slice(gx_ctx *ctx, gx_tensor *x, int dim, int64_t start, int64_t end) {
    gx_cuda_stream *st = gx_ops_stream(ctx, "slice");
    int64_t oshape[GX_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) oshape[d] = x->shape[d];
    oshape[dim] = end - start;
    gx_tensor *y = gx_tensor_new(ctx, x->ndim, oshape);
    int64_t outer, N, inner;
    gx_split_dims(x, dim, &outer, &N, &inner);
    gx_cu_slice_fwd(st, x->data, y->data, outer, N, inner, start, end);
    gx_node *nd = gx_tape_record(ctx, "slice", gx_cuda_slice_bw, y, 1, &x);
    if (nd) { nd->i[0] = dim; nd->i[1] = start; }
    return y;
}

/* node: i[0] = dim. */
static void gx_cuda_flip_bw(gx_ctx *ctx, gx_node *nd) {
    gx_real *gi = gx_grad(ctx, nd->in[0]);
    if (!gi) return;
    int64_t outer, N, inner;
    gx_split_dims(nd->out, (int)nd->i[0], &outer, &N, &inner);
    gx_cu_flip_bwd(gx_ops_stream(ctx, nd->op), nd->out->grad, gi, outer, N, inner);
}

gx_tensor *gx_cuda_flip(gx_ctx *ctx, gx_tensor *x, int dim) {
    gx_cuda_stream *st = gx_ops_stream(ctx, "flip");
    gx_tensor *y = gx_tensor_like(ctx, x);
    int64_t outer, N, inner;
    gx_split_dims(x, dim, &outer, &N, &inner);
    gx_cu_flip_fwd(st, x->data, y->data, outer, N, inner);
    gx_node *nd = gx_tape_record(ctx, "flip", gx_cuda_flip_bw, y, 1, &x);
    if (nd) nd->i[0] = dim;
    return y;
}

/* =========================================================== selective scan */

/* node: i = B, L, E, N, Ld (as the CPU's). The launcher recomputes the
 * states into H (B*L*E*N doubles of the ctx's device arena, this backward
 * only) and adds into whichever gradients are asked for. */
static void gx_cuda_ssm_scan_bw(gx_ctx *ctx, gx_node *nd) {
    gx_real *g[5];
    int any = 0;
    for (int k = 0; k < 5; k++) any |= (g[k] = gx_grad(ctx, nd->in[k])) != NULL;
    if (!any) return;
    const int64_t B = nd->i[0], L = nd->i[1], E = nd->i[2], N = nd->i[3], Ld = nd->i[4];
    double *H = gx_cuda_ctx_alloc(ctx, (size_t)(B * L * E * N) * sizeof(double));
    gx_tensor *const *in = nd->in;
    gx_cu_ssm_scan_bwd(gx_ops_stream(ctx, nd->op), in[0]->data, in[1]->data, in[2]->data, in[3]->data,
                       in[4]->data, nd->out->grad, g[0], g[1], g[2], g[3], g[4], H, B, L, Ld, E, N);
}

gx_tensor *gx_cuda_ssm_scan(gx_ctx *ctx, gx_tensor *xs, gx_tensor *delta, gx_tensor *A, gx_tensor *Bm,
                            gx_tensor *Cm) {
    gx_cuda_stream *st = gx_ops_stream(ctx, "ssm_scan");
    gx_tensor *in[5] = { xs, delta, A, Bm, Cm };
    static const char *const names[5] = { "xs", "delta", "A", "Bm", "Cm" };
    for (int k = 0; k < 5; k++) gx_ops_need_dev(in[k], "gx_ssm_scan", names[k]);
    const int64_t B = xs->shape[0], L = xs->shape[1], E = xs->shape[2], N = A->shape[1];
    const int64_t Ld = delta->shape[1];
    /* The launcher's layout: one lane per state in a warp, samples on the
     * grid's y axis. */
    GX_ASSERT_MSG(N >= 1 && N <= 32, "gx_ssm_scan: the device scan supports N (state size) 1..32, got %lld",
                  (long long)N);
    GX_ASSERT_MSG(B <= 65535, "gx_ssm_scan: the device scan supports a batch of at most 65535, got %lld",
                  (long long)B);
    gx_tensor *y = gx_tensor_new(ctx, 3, GX_SHAPE(B, L, E));
    gx_cu_ssm_scan_fwd(st, xs->data, delta->data, A->data, Bm->data, Cm->data, y->data, B, L, Ld, E, N);
    gx_node *nd = gx_tape_record(ctx, "ssm_scan", gx_cuda_ssm_scan_bw, y, 5, in);
    if (nd) { nd->i[0] = B; nd->i[1] = L; nd->i[2] = E; nd->i[3] = N; nd->i[4] = Ld; }
    return y;
}

/* ================================================================ Sinkhorn */

/* What backward reads, in the ctx's device arena: K, K^T, K o C and its
 * transpose (4n^2 doubles) and every iteration's denominators followed by
 * S per row (B*iters*2n + B doubles), as the launchers lay them out. */
typedef struct { const double *mats, *pq; } gx_cuda_sk_saved;

/* node: i[0] = iters. */
static void gx_cuda_sinkhorn_hk_bw(gx_ctx *ctx, gx_node *nd) {
    gx_tensor *a = nd->in[0], *b = nd->in[1];
    gx_real *ga = gx_grad(ctx, a), *gb = gx_grad(ctx, b);
    if (!ga && !gb) return;
    const gx_cuda_sk_saved *sv = nd->saved;
    const int64_t B = a->shape[0], n = a->shape[1];
    double *work = gx_cuda_ctx_alloc(ctx, (size_t)(B * 7 * n) * sizeof(double));
    gx_cu_sinkhorn_bwd(gx_ops_stream(ctx, nd->op), a->data, b->data, nd->out->grad, sv->mats, sv->pq,
                       (int)nd->i[0], ga, gb, work, B, n);
}

gx_tensor *gx_cuda_sinkhorn_hk(gx_ctx *ctx, gx_tensor *a, gx_tensor *b, const gx_tensor *C, double lambda,
                               int iters, double eps) {
    gx_cuda_exec *e = gx_cuda_op_exec(ctx, "sinkhorn_hk");
    gx_ops_need_dev(a, "gx_sinkhorn_hk", "a");
    gx_ops_need_dev(b, "gx_sinkhorn_hk", "b");
    const int64_t B = a->shape[0], n = a->shape[1];
    /* C is a constant of the loss (no gradient): a host C is uploaded, so
     * a caller may build it on the host as the CPU path does. */
    const gx_real *Cd = C->data;
    if (C->device != GX_DEVICE_CUDA) {
        gx_real *up = gx_cuda_ctx_alloc(ctx, (size_t)(n * n) * sizeof(gx_real));
        gx_cuda_exec_upload(e, up, C->data, (size_t)(n * n) * sizeof(gx_real));
        Cd = up;
    }
    gx_tensor *out = gx_tensor_new(ctx, 1, GX_SHAPE(B));
    double *mats = gx_cuda_ctx_alloc(ctx, (size_t)(4 * n * n) * sizeof(double));
    /* The denominators only when the tape will record this op (the CPU's
     * rule); the launcher then also stores S per row after them. */
    int need = ctx->grad_enabled && (a->requires_grad || b->requires_grad);
    double *pq = need ? gx_cuda_ctx_alloc(ctx, (size_t)(B * iters * 2 * n + B) * sizeof(double)) : NULL;
    double *work = gx_cuda_ctx_alloc(ctx, (size_t)(B * 7 * n) * sizeof(double));
    gx_cu_sinkhorn_fwd(e->stream, a->data, b->data, Cd, lambda, iters, eps, out->data, mats, pq, work, B, n);
    gx_tensor *in[2] = { a, b };
    gx_node *nd = gx_tape_record(ctx, "sinkhorn_hk", gx_cuda_sinkhorn_hk_bw, out, 2, in);
    if (nd) {
        gx_cuda_sk_saved *sv = gx_ctx_alloc(ctx, sizeof *sv);
        *sv = (gx_cuda_sk_saved){ mats, pq };
        nd->saved = sv;
        nd->i[0] = iters;
    }
    return out;
}

/* =============================================================== optimiser */

void gx_cuda_optim_step(const gx_optim *o, gx_params *p, const double *lr_by_group, float *dev_state) {
    gx_cuda_exec *e = p->cuda;
    GX_ASSERT_MSG(e && !e->emulated, "gx_optim_step: the device update needs parameters on a real device");
    for (int i = 0; i < p->n; i++) {
        gx_param *q = p->items[i];
        if (o->offset[i] < 0) continue;   /* buffers and frozen tensors */
        double wd = (q->flags & GX_PARAM_DECAY) ? o->cfg.weight_decay : 0.0;
        gx_cu_optim_update(e->stream, &o->cfg, q->t.data, q->t.grad, dev_state ? dev_state + o->offset[i] : NULL,
                           q->t.numel, o->step, lr_by_group[q->group], wd);
    }
}

double gx_cuda_clip_grad_norm(gx_cuda_exec *e, int nt, float *const *g, const int64_t *n, double max_norm) {
    GX_ASSERT_MSG(!e->emulated, "gx_clip_grad_norm: the device clipping needs a real device");
    /* The partial sums, then the norm, in one pool block for this call. */
    const size_t np = (size_t)gx_cu_clip_scratch(nt, n), bytes = (np + 1) * sizeof(double);
    double *part = gx_cuda_pool_alloc(e->pool, bytes);
    if (!part) {   /* out of device memory: no norm (NaN: the caller skips the step), the error at the sync */
        char msg[128];
        snprintf(msg, sizeof msg, "out of device memory: %zu bytes of clipping scratch refused", bytes);
        gx_cuda_stream_fail(e->stream, msg);
        return NAN;
    }
    gx_cu_clip_grad_norm(e->stream, nt, g, n, max_norm, part, part + np);
    double norm = NAN;
    gx_cuda_exec_download(e, &norm, part + np, sizeof norm);
    /* The host needs the norm now. A device error makes it NaN (a caller
     * skips the step on a non-finite norm) and is put back into the exec,
     * so the caller's own gx_cuda_exec_sync still reports it. */
    gx_err err;
    gx_status st = gx_cuda_exec_sync(e, &err);
    if (st != GX_OK) {
        norm = NAN;
        if (e->status == GX_OK) { e->status = st; e->err = err; }
    }
    gx_cuda_pool_free(e->pool, part, bytes);
    return norm;
}
