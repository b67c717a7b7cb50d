/*
 * gx_cuda_ops_dense.c — the dense ops on device tensors: linear, matmul,
 * Gram, pairwise squared distances (gx_matmul.c), conv2d, the fused
 * upsample+conv, the causal depthwise conv1d (gx_conv.c), batch norm and
 * layer norm (gx_norm.c). Each public op of those files checks its
 * arguments' shapes, then GX_CUDA_DISPATCHes to the function of the same
 * name here when one of its inputs is a device tensor (as the other
 * families do), so the shape checks live once, in the CPU op.
 *
 * Each device op sits beside its backward (llm.c style) and is only glue:
 * the check that every tensor input is on the device, the output from gx_tensor_new (a device tensor, since ctx->cuda is set),
 * scratch from the ctx's device arena (gx_cuda_ctx_alloc, freed at
 * gx_ctx_reset), then the launchers of gx_cuda.h on the exec's stream, and
 * a tape node under the CPU op's name. Whatever the CPU backward saves
 * (norm statistics, in double) is device memory here; so is the launchers'
 * scratch, which the forward allocates once and leaves in node->saved for
 * the backward to reuse (the stream orders them, and the backward runs after
 * the forward's last use).
 *
 * Numerics differ from the CPU only in summation order: cuBLAS FP32 GEMMs
 * (the CPU's batch-invariant panels and row-invariant kernel of gx_linear
 * are CPU bit-reproducibility measures; one GEMM over all rows is fine
 * here) and double sums in another order for the norms and conv1d. The
 * dispatch tests (tests/cuda/dispatch_dense.c) hold them to the launcher
 * tests' tolerances.
 *
 * Mixing host and device inputs in one op is a programmer error: asserted,
 * naming the op and the input.
 */
#include "gx_impl.h"
#include "gx_cuda.h"

#if GX_CUDA_ON
#include "cuda/gx_cuda_ops_dense.h"

_Static_assert(sizeof(gx_real) == sizeof(float), "the device ops run the f32 engine");

/* ------------------------------------------------------------ helpers */

/* Asserts that every non-NULL input of op is a device tensor. */
static void gx_cd_on_device(const char *op, int n, gx_tensor *const *in) {
    static const char *const nth[] = { "first", "second", "third", "fourth", "fifth" };
    for (int i = 0; i < n; i++)
        GX_ASSERT_MSG(!in[i] || in[i]->device == GX_DEVICE_CUDA,
                      "%s: the %s input is a host tensor and another is on the device (gx_to_device it)", op,
                      i < 5 ? nth[i] : "next");
}

/* The stream of the exec op runs on (asserts a real device). */
static gx_cuda_stream *gx_cd_stream(gx_ctx *ctx, const char *op) {
    return gx_cuda_op_exec(ctx, op)->stream;
}

static float *gx_cd_floats(gx_ctx *ctx, int64_t n) {
    return gx_cuda_ctx_alloc(ctx, (size_t)(n > 0 ? n : 1) * sizeof(float));
}

static double *gx_cd_doubles(gx_ctx *ctx, int64_t n) {
    return gx_cuda_ctx_alloc(ctx, (size_t)(n > 0 ? n : 1) * sizeof(double));
}

/* C_i [M, N] (ldc = N) = op(A_i) op(B_i) + beta C_i for i < batch (strides
 * sA, sB, sC; batch 1 is one plain GEMM) through cuBLAS. An empty inner dim
 * K is handled here: cuBLAS refuses the leading dimension 0 such an operand
 * has, and the product is then just beta C (0, or C unchanged). */
static void gx_cd_gemm(gx_ctx *ctx, gx_cuda_stream *s, int ta, int tb, int64_t M, int64_t N, int64_t K,
                       const float *A, int64_t lda, int64_t sA, const float *B, int64_t ldb, int64_t sB,
                       float beta, float *C, int64_t sC, int64_t batch) {
    if (K > 0 && batch == 1)
        gx_cu_gemm(s, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, N);
    else if (K > 0)
        gx_cu_gemm_batched(s, ta, tb, M, N, K, 1.0f, A, lda, sA, B, ldb, sB, beta, C, N, sC, batch);
    else if (beta == 0.0f && M > 0 && N > 0 && batch > 0)
        gx_cuda_exec_memset0(ctx->cuda, C, (size_t)(batch * M * N) * sizeof(float));
}

/* ============================================================== matmul */

/* i[0] = rows (x's leading dims), i[1] = in, i[2] = out, as the CPU node. */
static void gx_cd_linear_bw(gx_ctx *ctx, gx_node *nd) {
    gx_cuda_stream *s = gx_cd_stream(ctx, "linear");
    gx_tensor *x = nd->in[0], *w = nd->in[1], *b = nd->n_in > 2 ? nd->in[2] : NULL;
    const int64_t rows = nd->i[0], in = nd->i[1], out = nd->i[2];
    const float *dy = nd->out->grad;                       /* [rows, out] */
    float *dx = gx_grad(ctx, x), *dw = gx_grad(ctx, w), *db = gx_grad(ctx, b);
    if (dx) gx_cd_gemm(ctx, s, 0, 0, rows, in, out, dy, out, 0, w->data, in, 0, 1.0f, dx, 0, 1);
    if (dw) gx_cd_gemm(ctx, s, 1, 0, out, in, rows, dy, out, 0, x->data, in, 0, 1.0f, dw, 0, 1);
    if (db) gx_cu_reduce_broadcast_add(s, db, 1, &nd->i[2], dy, 2, GX_SHAPE(rows, out));
}

/* y [rows, out] = x w^T by one GEMM, then + b broadcast over the rows (in
 * place: the binary kernel reads and writes element i in one thread). */
gx_tensor *gx_cuda_linear(gx_ctx *ctx, gx_tensor *x, gx_tensor *w, gx_tensor *b) {
    gx_cuda_stream *s = gx_cd_stream(ctx, "gx_linear");
    gx_tensor *ins[3] = { x, w, b };
    gx_cd_on_device("gx_linear", 3, ins);
    const int64_t in = w->shape[1], out = w->shape[0], rows = in ? x->numel / in : 0;
    int64_t shape[GX_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) shape[d] = x->shape[d];
    shape[x->ndim - 1] = out;
    gx_tensor *y = gx_tensor_new(ctx, x->ndim, shape);
    gx_cd_gemm(ctx, s, 0, 1, rows, out, in, x->data, in, 0, w->data, in, 0, 0.0f, y->data, 0, 1);
    if (b) gx_cu_binary_fwd(s, GX_CU_ADD, y->data, 2, GX_SHAPE(rows, out), b->data, 1, &out, y->data, 2,
                            GX_SHAPE(rows, out));
    gx_node *nd = gx_tape_record(ctx, "linear", gx_cd_linear_bw, y, b ? 3 : 2, ins);
    if (nd) { nd->i[0] = rows; nd->i[1] = in; nd->i[2] = out; }
    return y;
}

/* i[0] = batch, i[1] = M, i[2] = K, i[3] = N, i[4] = 1 when b is a shared
 * 2-D matrix (then the batch folds into the rows of one GEMM). */
static void gx_cd_matmul_bw(gx_ctx *ctx, gx_node *nd) {
    gx_cuda_stream *s = gx_cd_stream(ctx, "matmul");
    gx_tensor *a = nd->in[0], *b = nd->in[1];
    const int64_t nb = nd->i[0], M = nd->i[1], K = nd->i[2], N = nd->i[3];
    const float *dc = nd->out->grad;
    float *da = gx_grad(ctx, a), *db = gx_grad(ctx, b);
    if (nd->i[4]) {
        if (da) gx_cd_gemm(ctx, s, 0, 1, nb * M, K, N, dc, N, 0, b->data, N, 0, 1.0f, da, 0, 1);
        if (db) gx_cd_gemm(ctx, s, 1, 0, K, N, nb * M, a->data, K, 0, dc, N, 0, 1.0f, db, 0, 1);
        return;
    }
    /* dA_i += dC_i B_i^T, dB_i += A_i^T dC_i, every i in one batched GEMM. */
    if (da) gx_cd_gemm(ctx, s, 0, 1, M, K, N, dc, N, M * N, b->data, N, K * N, 1.0f, da, M * K, nb);
    if (db) gx_cd_gemm(ctx, s, 1, 0, K, N, M, a->data, K, M * K, dc, N, M * N, 1.0f, db, K * N, nb);
}

gx_tensor *gx_cuda_matmul(gx_ctx *ctx, gx_tensor *a, gx_tensor *b) {
    gx_cuda_stream *s = gx_cd_stream(ctx, "gx_matmul");
    gx_tensor *ins[2] = { a, b };
    gx_cd_on_device("gx_matmul", 2, ins);
    const int64_t M = a->shape[a->ndim - 2], K = a->shape[a->ndim - 1], N = b->shape[b->ndim - 1];
    const int shared = b->ndim == 2;
    int64_t nb = 1, shape[GX_MAX_DIMS];
    for (int d = 0; d < a->ndim - 2; d++) nb *= a->shape[d];
    for (int d = 0; d < a->ndim; d++) shape[d] = a->shape[d];
    shape[a->ndim - 1] = N;
    gx_tensor *c = gx_tensor_new(ctx, a->ndim, shape);
    if (shared)
        gx_cd_gemm(ctx, s, 0, 0, nb * M, N, K, a->data, K, 0, b->data, N, 0, 0.0f, c->data, 0, 1);
    else
        gx_cd_gemm(ctx, s, 0, 0, M, N, K, a->data, K, M * K, b->data, N, K * N, 0.0f, c->data, M * N, nb);
    gx_node *nd = gx_tape_record(ctx, "matmul", gx_cd_matmul_bw, c, 2, ins);
    if (nd) { nd->i[0] = nb; nd->i[1] = M; nd->i[2] = K; nd->i[3] = N; nd->i[4] = shared; }
    return c;
}

/* a == b: gx_grad returns one buffer for both and the GEMMs add both halves. */
static void gx_cd_gram_bw(gx_ctx *ctx, gx_node *nd) {
    gx_cuda_stream *s = gx_cd_stream(ctx, "gram");
    gx_tensor *a = nd->in[0], *b = nd->in[1];
    const int64_t N = a->shape[0], M = b->shape[0], D = a->shape[1];
    const float *dg = nd->out->grad;                      /* [N, M] */
    float *da = gx_grad(ctx, a);
    if (da) gx_cd_gemm(ctx, s, 0, 0, N, D, M, dg, M, 0, b->data, D, 0, 1.0f, da, 0, 1);
    float *db = gx_grad(ctx, b);
    if (db) gx_cd_gemm(ctx, s, 1, 0, M, D, N, dg, M, 0, a->data, D, 0, 1.0f, db, 0, 1);
}

gx_tensor *gx_cuda_gram(gx_ctx *ctx, gx_tensor *a, gx_tensor *b) {
    gx_cuda_stream *s = gx_cd_stream(ctx, "gx_gram");
    gx_tensor *ins[2] = { a, b };
    gx_cd_on_device("gx_gram", 2, ins);
    const int64_t N = a->shape[0], M = b->shape[0], D = a->shape[1];
    gx_tensor *g = gx_tensor_new(ctx, 2, GX_SHAPE(N, M));
    gx_cd_gemm(ctx, s, 0, 1, N, M, D, a->data, D, 0, b->data, D, 0, 0.0f, g->data, 0, 1);
    gx_tape_record(ctx, "gram", gx_cd_gram_bw, g, 2, ins);
    return g;
}

/* The launcher masks with the output (entries <= 0 pass no gradient) and
 * takes ga == gb when a == b; scratch: gm [N, M] floats, N + M doubles. */
static void gx_cd_sqdist_bw(gx_ctx *ctx, gx_node *nd) {
    gx_cuda_stream *s = gx_cd_stream(ctx, "pairwise_sqdist");
    gx_tensor *a = nd->in[0], *b = nd->in[1];
    const int64_t N = a->shape[0], M = b->shape[0], D = a->shape[1];
    float *ga = gx_grad(ctx, a), *gb = gx_grad(ctx, b);
    if (!ga && !gb) return;
    gx_cu_pairwise_sqdist_bwd(s, a->data, b->data, nd->out->data, nd->out->grad, ga, gb, gx_cd_floats(ctx, N * M),
                              gx_cd_doubles(ctx, N + M), N, M, D);
}

gx_tensor *gx_cuda_pairwise_sqdist(gx_ctx *ctx, gx_tensor *a, gx_tensor *b) {
    gx_cuda_stream *s = gx_cd_stream(ctx, "gx_pairwise_sqdist");
    gx_tensor *ins[2] = { a, b };
    gx_cd_on_device("gx_pairwise_sqdist", 2, ins);
    const int64_t N = a->shape[0], M = b->shape[0], D = a->shape[1];
    gx_tensor *d = gx_tensor_new(ctx, 2, GX_SHAPE(N, M));
    gx_cu_pairwise_sqdist_fwd(s, a->data, b->data, d->data, gx_cd_doubles(ctx, N + M), N, M, D);
    gx_tape_record(ctx, "pairwise_sqdist", gx_cd_sqdist_bw, d, 2, ins);
    return d;
}

/* ================================================================ conv */

/* The launcher's shape from x, w and the node's (or call's) options. */
static gx_cu_conv_shape gx_cd_conv_shape(const gx_tensor *x, const gx_tensor *w, int64_t stride, int64_t pad,
                                         int64_t groups) {
    gx_cu_conv_shape c = { x->shape[0], x->shape[1], x->shape[2], x->shape[3], w->shape[0], w->shape[2],
                           w->shape[3], (int)stride, (int)pad, (int)groups };
    return c;
}

/* i[] = stride, pad, groups (the CPU node's); saved = the forward's col. */
static void gx_cd_conv2d_bw(gx_ctx *ctx, gx_node *nd) {
    gx_cuda_stream *s = gx_cd_stream(ctx, "conv2d");
    gx_tensor *x = nd->in[0], *w = nd->in[1], *b = nd->n_in > 2 ? nd->in[2] : NULL;
    gx_cu_conv_shape c = gx_cd_conv_shape(x, w, nd->i[0], nd->i[1], nd->i[2]);
    float *dx = gx_grad(ctx, x), *dw = gx_grad(ctx, w), *db = gx_grad(ctx, b);
    if (dx || dw || db) gx_cu_conv2d_bwd(s, &c, x->data, w->data, nd->out->grad, dx, dw, db, nd->saved);
}

/* Every path of the CPU op (depthwise, groups, strides, 1x1) is one
 * launcher here: im2col per sample, a strided-batched GEMM over the groups. */
gx_tensor *gx_cuda_conv2d(gx_ctx *ctx, gx_tensor *x, gx_tensor *w, gx_tensor *b, int stride, int padding,
                          int groups) {
    gx_cuda_stream *s = gx_cd_stream(ctx, "gx_conv2d");
    gx_tensor *ins[3] = { x, w, b };
    gx_cd_on_device("gx_conv2d", 3, ins);
    gx_cu_conv_shape c = gx_cd_conv_shape(x, w, stride, padding, groups);
    const int64_t Ho = (c.H + 2 * padding - c.kh) / stride + 1, Wo = (c.W + 2 * padding - c.kw) / stride + 1;
    gx_tensor *y = gx_tensor_new(ctx, 4, GX_SHAPE(c.B, c.Cout, Ho, Wo));
    float *col = gx_cd_floats(ctx, gx_cu_conv_col_floats(&c));
    gx_cu_conv2d_fwd(s, &c, x->data, w->data, b ? b->data : NULL, y->data, col);
    gx_node *nd = gx_tape_record(ctx, "conv2d", gx_cd_conv2d_bw, y, b ? 3 : 2, ins);
    if (nd) { nd->i[0] = stride; nd->i[1] = padding; nd->i[2] = groups; nd->saved = col; }
    return y;
}

/* saved = the forward's scratch (gx_cu_upconv_scratch_floats). */
static void gx_cd_upconv2x3_bw(gx_ctx *ctx, gx_node *nd) {
    gx_cuda_stream *s = gx_cd_stream(ctx, "upconv2x3");
    gx_tensor *x = nd->in[0], *w = nd->in[1], *b = nd->n_in > 2 ? nd->in[2] : NULL;
    float *dx = gx_grad(ctx, x), *dw = gx_grad(ctx, w), *db = gx_grad(ctx, b);
    if (dx || dw || db)
        gx_cu_upconv2x3_bwd(s, x->data, w->data, nd->out->grad, dx, dw, db, nd->saved, x->shape[0], x->shape[1],
                            x->shape[2], x->shape[3], w->shape[0]);
}

/* act(upconv(x)) (act < 0: none) of operands gx_upconv2x3 has checked,
 * into a new tensor; *scratch_out gets the scratch for a backward. Records
 * nothing. */
static gx_tensor *gx_cd_upconv_out(gx_ctx *ctx, gx_tensor *x, gx_tensor *w, gx_tensor *b, int act, double p0,
                                   float **scratch_out) {
    gx_cuda_stream *s = gx_cd_stream(ctx, "gx_upconv2x3");
    gx_tensor *ins[3] = { x, w, b };
    gx_cd_on_device("gx_upconv2x3", 3, ins);
    const int64_t B = x->shape[0], Cin = x->shape[1], H = x->shape[2], W = x->shape[3], Cout = w->shape[0];
    gx_tensor *y = gx_tensor_new(ctx, 4, GX_SHAPE(B, Cout, 2 * H, 2 * W));
    float *scratch = gx_cd_floats(ctx, gx_cu_upconv_scratch_floats(Cin, H, W, Cout));
    gx_cu_upconv2x3_fwd(s, x->data, w->data, b ? b->data : NULL, act, p0, 0.0, y->data, scratch, B, Cin, H, W,
                        Cout);
    *scratch_out = scratch;
    return y;
}

gx_tensor *gx_cuda_upconv2x3(gx_ctx *ctx, gx_tensor *x, gx_tensor *w, gx_tensor *b) {
    float *scratch;
    gx_tensor *y = gx_cd_upconv_out(ctx, x, w, b, -1, 0.0, &scratch);
    gx_tensor *ins[3] = { x, w, b };
    gx_node *nd = gx_tape_record(ctx, "upconv2x3", gx_cd_upconv2x3_bw, y, b ? 3 : 2, ins);
    if (nd) nd->saved = scratch;
    return y;
}

/* As the CPU op: taped, it is the unfused pair (gx_leaky_relu dispatches to
 * the device itself); untaped, the launcher's epilogue applies the LeakyReLU
 * (GX_CU_LEAKY_RELU, p0 = slope) while it scatters the parities. */
gx_tensor *gx_cuda_upconv2x3_leaky(gx_ctx *ctx, gx_tensor *x, gx_tensor *w, gx_tensor *b, double slope) {
    int taped = ctx->grad_enabled && (x->requires_grad || w->requires_grad || (b && b->requires_grad));
    if (taped) return gx_leaky_relu(ctx, gx_cuda_upconv2x3(ctx, x, w, b), slope);
    float *scratch;
    return gx_cd_upconv_out(ctx, x, w, b, GX_CU_LEAKY_RELU, slope, &scratch);
}

static void gx_cd_conv1d_bw(gx_ctx *ctx, gx_node *nd) {
    gx_cuda_stream *s = gx_cd_stream(ctx, "conv1d_causal_dw");
    gx_tensor *x = nd->in[0], *w = nd->in[1], *b = nd->n_in > 2 ? nd->in[2] : NULL;
    float *dx = gx_grad(ctx, x), *dw = gx_grad(ctx, w), *db = gx_grad(ctx, b);
    if (dx || dw || db)
        gx_cu_conv1d_causal_dw_bwd(s, x->data, w->data, nd->out->grad, dx, dw, db, x->shape[0], x->shape[1],
                                   x->shape[2], w->shape[2]);
}

gx_tensor *gx_cuda_conv1d_causal_dw(gx_ctx *ctx, gx_tensor *x, gx_tensor *w, gx_tensor *b) {
    gx_cuda_stream *s = gx_cd_stream(ctx, "gx_conv1d_causal_dw");
    gx_tensor *ins[3] = { x, w, b };
    gx_cd_on_device("gx_conv1d_causal_dw", 3, ins);
    const int64_t B = x->shape[0], L = x->shape[1], E = x->shape[2], K = w->shape[2];
    gx_tensor *y = gx_tensor_new(ctx, 3, GX_SHAPE(B, L, E));
    gx_cu_conv1d_causal_dw_fwd(s, x->data, w->data, b ? b->data : NULL, y->data, B, L, E, K);
    gx_tape_record(ctx, "conv1d_causal_dw", gx_cd_conv1d_bw, y, b ? 3 : 2, ins);
    return y;
}

/* =============================================================== norms */

/* in = {x, gamma|NULL, beta|NULL}; saved = device double[2C] (mean | 1/std,
 * the CPU node's layout); i[0] = training. */
static void gx_cd_batchnorm_bw(gx_ctx *ctx, gx_node *nd) {
    gx_cuda_stream *s = gx_cd_stream(ctx, "batchnorm");
    gx_tensor *x = nd->in[0], *gamma = nd->in[1];
    float *dx = gx_grad(ctx, x), *dg = gx_grad(ctx, gamma), *db = gx_grad(ctx, nd->in[2]);
    if ((!dx && !dg && !db) || x->numel == 0) return;
    const int64_t B = x->shape[0], C = x->shape[1], S = x->numel / (B * C);
    const double *st = nd->saved;
    gx_cu_batchnorm_bwd(s, x->data, gamma ? gamma->data : NULL, (int)nd->i[0], st, st + C, nd->out->grad, dx,
                        dg, db, B, C, S);
}

/* Training updates the running statistics in place where they live: on the
 * device (parameters after gx_params_to_cuda, GX_PARAM_BUFFER). */
gx_tensor *gx_cuda_batchnorm(gx_ctx *ctx, gx_tensor *x, gx_tensor *gamma, gx_tensor *beta,
                             gx_tensor *running_mean, gx_tensor *running_var, int training, double momentum,
                             double eps) {
    gx_cuda_stream *s = gx_cd_stream(ctx, "gx_batchnorm");
    gx_tensor *all[5] = { x, gamma, beta, running_mean, running_var };
    gx_cd_on_device("gx_batchnorm", 5, all);
    const int64_t B = x->shape[0], C = x->shape[1], S = (B * C != 0) ? x->numel / (B * C) : 0;
    if (training)
        GX_ASSERT_MSG(B * S > 1, "gx_batchnorm: training needs more than one value per channel "
                      "(B=%lld, spatial %lld)", (long long)B, (long long)S);
    else
        GX_ASSERT_MSG(running_mean && running_var, "gx_batchnorm: eval mode needs running statistics");
    double *st = gx_cd_doubles(ctx, 2 * C);                           /* mean | 1/std */
    gx_tensor *y = gx_tensor_like(ctx, x);
    gx_cu_batchnorm_fwd(s, x->data, gamma ? gamma->data : NULL, beta ? beta->data : NULL,
                        running_mean ? running_mean->data : NULL, running_var ? running_var->data : NULL,
                        training, momentum, eps, y->data, st, st + C, B, C, S);
    gx_node *nd = gx_tape_record(ctx, "batchnorm", gx_cd_batchnorm_bw, y, 3, all);
    if (nd) { nd->saved = st; nd->i[0] = training ? 1 : 0; }
    return y;
}

/* in = {x, gamma|NULL, beta|NULL}; saved = device double[2 rows]: the
 * launcher's mean [rows] then 1/std [rows] (the CPU interleaves them). */
static void gx_cd_layernorm_bw(gx_ctx *ctx, gx_node *nd) {
    gx_cuda_stream *s = gx_cd_stream(ctx, "layernorm");
    gx_tensor *x = nd->in[0], *gamma = nd->in[1];
    float *dx = gx_grad(ctx, x), *dg = gx_grad(ctx, gamma), *db = gx_grad(ctx, nd->in[2]);
    const int64_t D = x->shape[x->ndim - 1], rows = D ? x->numel / D : 0;
    if ((!dx && !dg && !db) || rows == 0) return;
    const double *st = nd->saved;
    gx_cu_layernorm_bwd(s, x->data, gamma ? gamma->data : NULL, st, st + rows, nd->out->grad, dx, dg, db, rows, D);
}

gx_tensor *gx_cuda_layernorm(gx_ctx *ctx, gx_tensor *x, gx_tensor *gamma, gx_tensor *beta, double eps) {
    gx_cuda_stream *s = gx_cd_stream(ctx, "gx_layernorm");
    gx_tensor *ins[3] = { x, gamma, beta };
    gx_cd_on_device("gx_layernorm", 3, ins);
    const int64_t D = x->shape[x->ndim - 1], rows = D ? x->numel / D : 0;
    double *st = gx_cd_doubles(ctx, 2 * rows);
    gx_tensor *y = gx_tensor_like(ctx, x);
    if (rows > 0)
        gx_cu_layernorm_fwd(s, x->data, gamma ? gamma->data : NULL, beta ? beta->data : NULL, y->data, st,
                            st + rows, rows, D, eps);
    gx_node *nd = gx_tape_record(ctx, "layernorm", gx_cd_layernorm_bw, y, 3, ins);
    if (nd) nd->saved = st;
    return y;
}

#endif /* GX_CUDA_ON */
