/*
 * gx_cuda_ops_elem.c — the device side of kernels/gx_elem.c and
 * kernels/gx_reduce.c: each op's forward beside its backward, over the
 * launchers of gx_cuda.h ("Elementwise", "reductions" and the reductions
 * added after them).
 *
 * An op here is the CPU op with its loops replaced by launches: the same
 * argument checks and messages, the same output shape, the same tape name,
 * the same saved scalars in nd->i / nd->f. What the CPU backward keeps in
 * the host arena (cross-entropy's per-row lse, the copied class indices, the
 * L2 norms) lives in the ctx's device arena here (gx_cuda_ctx_alloc); max
 * saves no argmax: its backward launcher recomputes it from x (the CPU's
 * scan, so ties pick the same element). Backward launchers accumulate into
 * gx_grad()'s device buffers, as the CPU backward functions do.
 *
 * Only the f32 library of a CUDA build compiles this file (the Makefile
 * compiles the C files of kernels/cuda there), so the launchers are always
 * declared here.
 */
#include "gx_impl.h"
#include "gx_cuda_ops_elem.h"

#include <math.h>

/* ============================================================ helpers */

/* The exec an op runs on, after checking that each of its n tensor inputs
 * is a device tensor: a host tensor in a device op is a programmer error. */
static gx_cuda_exec *gx_ops_exec(gx_ctx *ctx, const char *op, int n, gx_tensor *const *in) {
    gx_cuda_exec *e = gx_cuda_op_exec(ctx, op);
    for (int i = 0; i < n; i++)
        GX_ASSERT_MSG(in[i]->device == GX_DEVICE_CUDA,
                      "%s: input %d is a host tensor beside device tensors (gx_to_device it first)", op, i);
    return e;
}

/* The stream of a backward (the ctx that runs gx_backward is the forward's). */
static gx_cuda_stream *gx_ops_bw_stream(gx_ctx *ctx, const gx_node *nd) {
    return gx_cuda_op_exec(ctx, nd->op)->stream;
}

/* dst[0..n) = v through a host arena buffer (alive until the reset, which
 * waits for the device): the constant results the CPU gives for a reduction
 * over an empty dim (the launchers return without writing). */
static void gx_ops_fill(gx_ctx *ctx, gx_cuda_exec *e, gx_real *dst, int64_t n, gx_real v) {
    if (n <= 0) return;
    gx_real *h = gx_ctx_alloc(ctx, (size_t)n * sizeof(gx_real));
    for (int64_t i = 0; i < n; i++) h[i] = v;
    gx_cuda_exec_upload(e, dst, h, (size_t)n * sizeof(gx_real));
}

/* Class indices checked on the host (the CPU op's message), copied into the
 * host arena and uploaded from there into the ctx's device arena: the
 * caller's array need not outlive the call even when the copy is truly
 * asynchronous (pinned memory), since the arena copy lives until
 * gx_ctx_reset, which waits for the device first. */
static int32_t *gx_ops_index(gx_ctx *ctx, gx_cuda_exec *e, const char *op, const int32_t *idx, int64_t B,
                             int64_t K) {
    int32_t *h = gx_ctx_alloc(ctx, (size_t)(B > 0 ? B : 1) * sizeof(int32_t));
    for (int64_t b = 0; b < B; b++) {
        GX_ASSERT_MSG(idx[b] >= 0 && idx[b] < K, "%s: index[%lld] = %d outside [0, %lld)", op, (long long)b,
                      idx[b], (long long)K);
        h[b] = idx[b];
    }
    int32_t *d = gx_cuda_ctx_alloc(ctx, (size_t)B * sizeof(int32_t));
    gx_cuda_exec_upload(e, d, h, (size_t)B * sizeof(int32_t));
    return d;
}

/* Output shape of a reduction of x over d (gx_reduce.c's rule: the dim is
 * dropped, or kept as 1 with keepdim; the layout is [outer, inner] either way). */
static int gx_ops_rd_shape(const gx_tensor *x, int d, int keepdim, int64_t *shape) {
    int m = 0;
    for (int k = 0; k < x->ndim; k++) {
        if (k != d) shape[m++] = x->shape[k];
        else if (keepdim) shape[m++] = 1;
    }
    return m;
}

/* ================================================================ unary */

/* nd->i[0] = the gx_cu_unary op, nd->f[0..1] = p0, p1 (the CPU's f[]). */
static void gx_cuda_unary_bw(gx_ctx *ctx, gx_node *nd) {
    gx_real *gi = gx_grad(ctx, nd->in[0]);
    if (!gi) return;
    gx_cu_unary_bwd(gx_ops_bw_stream(ctx, nd), (gx_cu_unary)nd->i[0], nd->f[0], nd->f[1], nd->in[0]->data,
                    nd->out->data, nd->out->grad, gi, nd->out->numel);
}

gx_tensor *gx_cuda_unary(gx_ctx *ctx, const char *name, gx_cu_unary op, gx_tensor *x, double p0, double p1) {
    gx_cuda_exec *e = gx_ops_exec(ctx, name, 1, &x);
    gx_tensor *y = gx_tensor_like(ctx, x);
    gx_cu_unary_fwd(e->stream, op, p0, p1, x->data, y->data, x->numel);
    gx_node *nd = gx_tape_record(ctx, name, gx_cuda_unary_bw, y, 1, &x);
    if (nd) { nd->i[0] = op; nd->f[0] = p0; nd->f[1] = p1; }
    return y;
}

/* ============================================================== binary */

/* Both gradients in one launcher call (either may be NULL: not needed; the
 * same buffer when a == b, accumulated one after the other on the stream).
 * div and maximum read the output, as the CPU's backward does. */
static void gx_cuda_binary_bw(gx_ctx *ctx, gx_node *nd) {
    gx_tensor *a = nd->in[0], *b = nd->in[1], *out = nd->out;
    gx_real *ga = gx_grad(ctx, a), *gb = gx_grad(ctx, b);
    if (!ga && !gb) return;
    gx_real *scratch = gx_cuda_ctx_alloc(ctx, (size_t)out->numel * sizeof(gx_real));
    gx_cu_binary_bwd(gx_ops_bw_stream(ctx, nd), (gx_cu_binary)nd->i[0], a->data, a->ndim, a->shape, b->data,
                     b->ndim, b->shape, out->data, out->grad, out->ndim, out->shape, ga, gb, scratch);
}

gx_tensor *gx_cuda_binary(gx_ctx *ctx, const char *name, gx_cu_binary op, gx_tensor *a, gx_tensor *b) {
    gx_tensor *in[2] = { a, b };
    gx_cuda_exec *e = gx_ops_exec(ctx, name, 2, in);
    int64_t shape[GX_MAX_DIMS];
    int nd = gx_bc_shape(name, a, b, shape);
    gx_tensor *out = gx_tensor_new(ctx, nd, shape);
    gx_cu_binary_fwd(e->stream, op, a->data, a->ndim, a->shape, b->data, b->ndim, b->shape, out->data, nd, shape);
    gx_node *n = gx_tape_record(ctx, name, gx_cuda_binary_bw, out, 2, in);
    if (n) n->i[0] = op;
    return out;
}

/* ======================================================= sum, mean, max */

/* nd->i[0] = dim, nd->i[1] = the gx_cu_reduce op. max recomputes its
 * argmax from x (the CPU's first-maximum scan); sum/mean broadcast g. */
static void gx_cuda_reduce_bw(gx_ctx *ctx, gx_node *nd) {
    gx_real *gi = gx_grad(ctx, nd->in[0]);
    if (!gi) return;
    int64_t outer, n, inner;
    gx_split_dims(nd->in[0], (int)nd->i[0], &outer, &n, &inner);
    gx_cu_reduce_bwd(gx_ops_bw_stream(ctx, nd), (gx_cu_reduce)nd->i[1], nd->in[0]->data, nd->out->data,
                     nd->out->grad, gi, outer, n, inner);
}

gx_tensor *gx_cuda_reduce(gx_ctx *ctx, const char *name, gx_cu_reduce op, gx_tensor *x, int dim, int keepdim) {
    gx_cuda_exec *e = gx_ops_exec(ctx, name, 1, &x);
    int d = gx_tensor_dim(x, dim);
    int64_t shape[GX_MAX_DIMS], outer, n, inner;
    gx_split_dims(x, d, &outer, &n, &inner);
    GX_ASSERT_MSG(op != GX_CU_MAXR || n > 0, "gx_max: reducing an empty dim %d", d);
    gx_tensor *out = gx_tensor_new(ctx, gx_ops_rd_shape(x, d, keepdim, shape), shape);
    if (n == 0)          /* the CPU's empty sums: 0, and 0 * (1/0) = NaN for the mean */
        gx_ops_fill(ctx, e, out->data, out->numel, op == GX_CU_MEAN ? (gx_real)NAN : 0);
    else
        gx_cu_reduce_fwd(e->stream, op, x->data, out->data, outer, n, inner);
    gx_node *nd = gx_tape_record(ctx, name, gx_cuda_reduce_bw, out, 1, &x);
    if (nd) { nd->i[0] = d; nd->i[1] = op; }
    return out;
}

/* ===================================================== sum_all, mean_all */

/* nd->i[0] = mean: gx += g[0] * (1 or 1/N). */
static void gx_cuda_sum_all_bw(gx_ctx *ctx, gx_node *nd) {
    gx_real *gi = gx_grad(ctx, nd->in[0]);
    if (!gi) return;
    gx_cu_sum_all_bwd(gx_ops_bw_stream(ctx, nd), (int)nd->i[0], nd->out->grad, gi, nd->in[0]->numel);
}

gx_tensor *gx_cuda_sum_all(gx_ctx *ctx, const char *name, int mean, gx_tensor *x) {
    gx_cuda_exec *e = gx_ops_exec(ctx, name, 1, &x);
    gx_tensor *out = gx_tensor_new(ctx, 0, NULL);
    const int64_t n = x->numel;
    if (n == 0 && mean) {           /* the CPU's 0 * (1/0): NaN (the launcher writes 0) */
        gx_ops_fill(ctx, e, out->data, 1, (gx_real)NAN);
    } else {
        double *part = gx_cuda_ctx_alloc(ctx, (size_t)gx_cu_chunk_count(n) * sizeof(double));
        gx_cu_sum_all_fwd(e->stream, mean, x->data, out->data, part, n);
    }
    gx_node *nd = gx_tape_record(ctx, name, gx_cuda_sum_all_bw, out, 1, &x);
    if (nd) nd->i[0] = mean;
    return out;
}

/* ====================================================== softmax family */

/* nd->i[0] = dim, nd->i[1] = log. Both backward passes read only y and g. */
static void gx_cuda_softmax_bw(gx_ctx *ctx, gx_node *nd) {
    gx_real *gi = gx_grad(ctx, nd->in[0]);
    if (!gi) return;
    int64_t outer, n, inner;
    gx_split_dims(nd->in[0], (int)nd->i[0], &outer, &n, &inner);
    gx_cu_softmax_bwd(gx_ops_bw_stream(ctx, nd), (int)nd->i[1], nd->out->data, nd->out->grad, gi, outer, n,
                      inner);
}

gx_tensor *gx_cuda_softmax(gx_ctx *ctx, const char *name, int log, gx_tensor *x, int dim) {
    gx_cuda_exec *e = gx_ops_exec(ctx, name, 1, &x);
    int d = gx_tensor_dim(x, dim);
    int64_t outer, n, inner;
    gx_split_dims(x, d, &outer, &n, &inner);
    gx_tensor *out = gx_tensor_like(ctx, x);
    gx_cu_softmax_fwd(e->stream, log, x->data, out->data, outer, n, inner);
    gx_node *nd = gx_tape_record(ctx, name, gx_cuda_softmax_bw, out, 1, &x);
    if (nd) { nd->i[0] = d; nd->i[1] = log; }
    return out;
}

/* nd->i[0] = dim: gx += g exp(x - y), from the float output as the CPU's. */
static void gx_cuda_logsumexp_bw(gx_ctx *ctx, gx_node *nd) {
    gx_real *gi = gx_grad(ctx, nd->in[0]);
    if (!gi) return;
    int64_t outer, n, inner;
    gx_split_dims(nd->in[0], (int)nd->i[0], &outer, &n, &inner);
    gx_cu_logsumexp_bwd(gx_ops_bw_stream(ctx, nd), nd->in[0]->data, nd->out->data, nd->out->grad, gi, outer, n,
                        inner);
}

gx_tensor *gx_cuda_logsumexp(gx_ctx *ctx, gx_tensor *x, int dim, int keepdim) {
    gx_cuda_exec *e = gx_ops_exec(ctx, "gx_logsumexp", 1, &x);
    int d = gx_tensor_dim(x, dim);
    int64_t shape[GX_MAX_DIMS], outer, n, inner;
    gx_split_dims(x, d, &outer, &n, &inner);
    gx_tensor *out = gx_tensor_new(ctx, gx_ops_rd_shape(x, d, keepdim, shape), shape);
    if (n == 0)          /* the CPU's log of an empty sum */
        gx_ops_fill(ctx, e, out->data, out->numel, (gx_real)-INFINITY);
    else
        gx_cu_logsumexp_fwd(e->stream, x->data, out->data, outer, n, inner);
    gx_node *nd = gx_tape_record(ctx, "gx_logsumexp", gx_cuda_logsumexp_bw, out, 1, &x);
    if (nd) nd->i[0] = d;
    return out;
}

/* ======================================================== cross-entropy */

/* Device pointers kept for the backward (the node in host memory holds them). */
typedef struct { double *lse; int32_t *target; } gx_cuda_ce_saved;

/* nd->f[0] = label smoothing; the softmax is recomputed from the saved lse. */
static void gx_cuda_cross_entropy_bw(gx_ctx *ctx, gx_node *nd) {
    gx_tensor *x = nd->in[0];
    gx_real *gi = gx_grad(ctx, x);
    if (!gi) return;
    const gx_cuda_ce_saved *sv = nd->saved;
    gx_cu_cross_entropy_bwd(gx_ops_bw_stream(ctx, nd), x->data, sv->target, nd->f[0], sv->lse, nd->out->grad,
                            gi, x->shape[0], x->shape[1]);
}

/* Called after the CPU op's checks of the logits' rank and of ls. */
gx_tensor *gx_cuda_cross_entropy(gx_ctx *ctx, gx_tensor *logits, const int32_t *target, double label_smoothing) {
    gx_cuda_exec *e = gx_ops_exec(ctx, "gx_cross_entropy", 1, &logits);
    const int64_t B = logits->shape[0], K = logits->shape[1];
    gx_cuda_ce_saved *sv = gx_ctx_alloc(ctx, sizeof *sv);
    sv->target = gx_ops_index(ctx, e, "gx_cross_entropy", target, B, K);
    sv->lse = gx_cuda_ctx_alloc(ctx, (size_t)B * sizeof(double));
    gx_tensor *out = gx_tensor_new(ctx, 1, GX_SHAPE(B));
    gx_cu_cross_entropy_fwd(e->stream, logits->data, sv->target, label_smoothing, out->data, sv->lse, B, K);
    gx_node *nd = gx_tape_record(ctx, "gx_cross_entropy", gx_cuda_cross_entropy_bw, out, 1, &logits);
    if (nd) { nd->saved = sv; nd->f[0] = label_smoothing; }
    return out;
}

/* ========================================================= gather, one-hot */

/* nd->saved = the device indices. One thread per row: no colliding adds. */
static void gx_cuda_gather_bw(gx_ctx *ctx, gx_node *nd) {
    gx_tensor *x = nd->in[0];
    gx_real *gi = gx_grad(ctx, x);
    if (!gi) return;
    gx_cu_gather_bwd(gx_ops_bw_stream(ctx, nd), nd->saved, nd->out->grad, gi, x->shape[0], x->shape[1]);
}

/* Called after the CPU op's check that x is [B, K]. */
gx_tensor *gx_cuda_gather(gx_ctx *ctx, gx_tensor *x, const int32_t *idx) {
    gx_cuda_exec *e = gx_ops_exec(ctx, "gx_gather", 1, &x);
    const int64_t B = x->shape[0], K = x->shape[1];
    int32_t *di = gx_ops_index(ctx, e, "gx_gather", idx, B, K);
    gx_tensor *out = gx_tensor_new(ctx, 1, GX_SHAPE(B));
    gx_cu_gather_fwd(e->stream, x->data, di, out->data, B, K);
    gx_node *nd = gx_tape_record(ctx, "gx_gather", gx_cuda_gather_bw, out, 1, &x);
    if (nd) nd->saved = di;
    return out;
}

/* A constant, never recorded (as the CPU's). Called after its shape check. */
gx_tensor *gx_cuda_one_hot(gx_ctx *ctx, const int32_t *idx, int64_t B, int64_t K) {
    gx_cuda_exec *e = gx_ops_exec(ctx, "gx_one_hot", 0, NULL);
    int32_t *di = gx_ops_index(ctx, e, "gx_one_hot", idx, B, K);
    gx_tensor *out = gx_tensor_new(ctx, 2, GX_SHAPE(B, K));
    gx_cu_one_hot(e->stream, di, out->data, B, K);    /* writes every element */
    return out;
}

/* ======================================================== L2 normalise */

/* nd->i[0] = dim, nd->f[0] = eps, nd->saved = the device norms (double),
 * which decide the clamped branch as on the CPU. */
static void gx_cuda_l2_normalize_bw(gx_ctx *ctx, gx_node *nd) {
    gx_real *gi = gx_grad(ctx, nd->in[0]);
    if (!gi) return;
    int64_t outer, n, inner;
    gx_split_dims(nd->in[0], (int)nd->i[0], &outer, &n, &inner);
    gx_cu_l2_normalize_bwd(gx_ops_bw_stream(ctx, nd), nd->out->data, nd->saved, nd->out->grad, gi, nd->f[0],
                           outer, n, inner);
}

/* Called after the CPU op's check of eps. */
gx_tensor *gx_cuda_l2_normalize(gx_ctx *ctx, gx_tensor *x, int dim, double eps) {
    gx_cuda_exec *e = gx_ops_exec(ctx, "gx_l2_normalize", 1, &x);
    int d = gx_tensor_dim(x, dim);
    int64_t outer, n, inner;
    gx_split_dims(x, d, &outer, &n, &inner);
    double *norm = gx_cuda_ctx_alloc(ctx, (size_t)(outer * inner) * sizeof(double));
    gx_tensor *out = gx_tensor_like(ctx, x);
    gx_cu_l2_normalize_fwd(e->stream, x->data, out->data, norm, eps, outer, n, inner);
    gx_node *nd = gx_tape_record(ctx, "gx_l2_normalize", gx_cuda_l2_normalize_bw, out, 1, &x);
    if (nd) { nd->saved = norm; nd->i[0] = d; nd->f[0] = eps; }
    return out;
}
