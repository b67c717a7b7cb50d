/*
 * gx_shape.c — shape and layout ops: reshape, permute, concat, split, slice,
 * flip, each forward beside its backward.
 *
 * Tensors are always dense and row-major (gx.h), so every op but reshape
 * copies. Reshape is free: the output's data pointer is the input's, and
 * only the gradient buffer is separate (its backward adds it into the
 * input's gradient, which is the identity on a flat buffer).
 *
 * The copying ops all reduce to one of two patterns:
 *   - a "[outer, n, inner]" view around one dim (gx_split_dims): concat,
 *     slice and flip move contiguous blocks of `inner` elements, so their
 *     inner loops are memcpy-like and vectorise;
 *   - permute, which walks the destination row by row and gathers each row
 *     from the source with one stride (1 when the last dim stays last); the
 *     backward is the same walk with the inverse permutation, so its
 *     read-modify-writes are contiguous too.
 * Backward of each is the transposed copy with `+=`. Every output element is
 * written by exactly one loop iteration, and the ops are bijections (or
 * injections) between positions, so parallel loops never race and results
 * do not depend on the thread count.
 */
#include "gx_impl.h"
#if GX_CUDA_ON
#include "cuda/gx_cuda_ops_shape.h"
#endif

/* Element count above which a copy loop gets an OpenMP team. Copies are
 * memory-bound, so the elementwise threshold is the right one. */
#define GX_SHAPE_PAR(n) ((n) > GX_PAR_THRESHOLD)

/* ================================================================ reshape */

/* dL/dx += dL/dout: the two share a layout, only the shape differs. */
static void gx_reshape_backward(gx_ctx *ctx, gx_node *n) {
    gx_real *gx = gx_grad(ctx, n->in[0]);
    if (!gx) return;
    const gx_real *go = n->out->grad;
    const int64_t N = n->out->numel;
    #pragma omp parallel for if (GX_SHAPE_PAR(N))
    for (int64_t i = 0; i < N; i++) gx[i] += go[i];
}

/* Resolves one -1 entry of shape[] so that the element count matches x. */
static void gx_reshape_infer(const gx_tensor *x, int ndim, const int64_t *shape, int64_t *out) {
    int infer = -1;
    int64_t known = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] == -1) {
            GX_ASSERT_MSG(infer < 0, "gx_reshape: more than one -1 in the target shape");
            infer = i;
        } else {
            GX_ASSERT_MSG(shape[i] >= 0, "gx_reshape: negative size %lld", (long long)shape[i]);
            known *= shape[i];
        }
        out[i] = shape[i];
    }
    if (infer >= 0) {
        GX_ASSERT_MSG(known > 0 && x->numel % known == 0,
                      "gx_reshape: cannot infer -1: %lld elements over a known product of %lld",
                      (long long)x->numel, (long long)known);
        out[infer] = x->numel / known;
    }
}

/* A bare tensor header: data is shared, grad is allocated by gx_grad on
 * first use, so gradients of the view and of x stay separate buffers. */
gx_tensor *gx_view_header(gx_ctx *ctx, const gx_tensor *x, int ndim, const int64_t *shape) {
    gx_tensor *out = gx_ctx_alloc(ctx, sizeof *out);
    memset(out, 0, sizeof *out);
    out->ndim = ndim;
    for (int i = 0; i < ndim; i++) out->shape[i] = shape[i];
    out->numel = x->numel;
    out->data = x->data;
    out->device = x->device;
    return out;
}

gx_tensor *gx_reshape(gx_ctx *ctx, gx_tensor *x, int ndim, const int64_t *shape) {
    GX_ASSERT_MSG(ndim >= 0 && ndim <= GX_MAX_DIMS, "gx_reshape: ndim %d out of range", ndim);
    int64_t s[GX_MAX_DIMS] = {0};
    gx_reshape_infer(x, ndim, shape, s);
    char buf[96];
    GX_ASSERT_MSG(gx_shape_numel(ndim, s) == x->numel,
                  "gx_reshape: %s has %lld elements, target shape has %lld",
                  gx_tensor_shape_str(x, buf, sizeof buf), (long long)x->numel,
                  (long long)gx_shape_numel(ndim, s));
    GX_CUDA_DISPATCH(gx_on_cuda(x), gx_cuda_reshape(ctx, x, ndim, s));
    gx_tensor *out = gx_view_header(ctx, x, ndim, s);
    gx_tape_record(ctx, "reshape", gx_reshape_backward, out, 1, &x);
    return out;
}

/* ================================================================ permute */

/* Strides, in a dense tensor of shape `shape`, of its dims taken in the
 * order perm[0], perm[1], ...: walking a permuted layout through them
 * visits the dense tensor's elements. */
static void gx_permute_strides(const int64_t *shape, int ndim, const int64_t *perm, int64_t *pstride) {
    int64_t st[GX_MAX_DIMS];
    int64_t acc = 1;
    for (int d = ndim - 1; d >= 0; d--) { st[d] = acc; acc *= shape[d]; }
    for (int d = 0; d < ndim; d++) pstride[d] = st[perm[d]];
}

/* Source offset of the first element of destination row `row` (all dims
 * but the last), from the row's multi-index. */
static inline int64_t gx_permute_row_offset(int64_t row, int ndim, const int64_t *dshape,
                                            const int64_t *sstride) {
    int64_t off = 0;
    for (int d = ndim - 2; d >= 0; d--) {
        int64_t i = row % dshape[d];
        row /= dshape[d];
        off += i * sstride[d];
    }
    return off;
}

/* dst (dense, shape dshape) = or += src gathered through sstride. Both
 * directions gather so that the writes (the read-modify-write in backward)
 * are contiguous; only the reads are strided. Rows write disjoint ranges. */
static void gx_permute_walk(const gx_real *src, gx_real *dst, int ndim, const int64_t *dshape,
                            const int64_t *sstride, int64_t numel, int accumulate) {
    const int64_t inner = dshape[ndim - 1], is = sstride[ndim - 1];
    const int64_t rows = inner ? numel / inner : 0;
    #pragma omp parallel for if (GX_SHAPE_PAR(numel))
    for (int64_t r = 0; r < rows; r++) {
        const gx_real *s = src + gx_permute_row_offset(r, ndim, dshape, sstride);
        gx_real *o = dst + r * inner;
        /* Separate unit-stride loops let the compiler emit vector loads. */
        if (accumulate) {
            if (is == 1) for (int64_t k = 0; k < inner; k++) o[k] += s[k];
            else         for (int64_t k = 0; k < inner; k++) o[k] += s[k * is];
        } else {
            if (is == 1) for (int64_t k = 0; k < inner; k++) o[k] = s[k];
            else         for (int64_t k = 0; k < inner; k++) o[k] = s[k * is];
        }
    }
}

/* dL/dx = permute(dL/dout, inverse perm), accumulated: walk x's layout and
 * gather from the output gradient. */
static void gx_permute_backward(gx_ctx *ctx, gx_node *n) {
    gx_real *gx = gx_grad(ctx, n->in[0]);
    if (!gx) return;
    const int nd = n->out->ndim;
    int64_t inv[GX_MAX_DIMS], sstride[GX_MAX_DIMS];
    for (int q = 0; q < nd; q++) inv[n->i[q]] = q;          /* i[0..nd) = perm */
    gx_permute_strides(n->out->shape, nd, inv, sstride);
    gx_permute_walk(n->out->grad, gx, nd, n->in[0]->shape, sstride, n->out->numel, 1);
}

gx_tensor *gx_permute(gx_ctx *ctx, gx_tensor *x, const int *perm) {
    GX_ASSERT_MSG(x->ndim >= 1, "gx_permute: needs at least a 1-D tensor, got %d-D", x->ndim);
    int64_t p[GX_MAX_DIMS], oshape[GX_MAX_DIMS];
    int seen[GX_MAX_DIMS] = {0};
    char buf[96];
    for (int d = 0; d < x->ndim; d++) {
        GX_ASSERT_MSG(perm[d] >= 0 && perm[d] < x->ndim && !seen[perm[d]],
                      "gx_permute: entry %d (%d) of perm is not a permutation of the dims of %s",
                      d, perm[d], gx_tensor_shape_str(x, buf, sizeof buf));
        seen[perm[d]] = 1;
        p[d] = perm[d];
        oshape[d] = x->shape[perm[d]];
    }
    GX_CUDA_DISPATCH(gx_on_cuda(x), gx_cuda_permute(ctx, x, perm));
    gx_tensor *out = gx_tensor_new(ctx, x->ndim, oshape);
    int64_t sstride[GX_MAX_DIMS];
    gx_permute_strides(x->shape, x->ndim, p, sstride);
    gx_permute_walk(x->data, out->data, x->ndim, oshape, sstride, x->numel, 0);
    gx_node *n = gx_tape_record(ctx, "permute", gx_permute_backward, out, 1, &x);
    if (n) for (int d = 0; d < x->ndim; d++) n->i[d] = p[d];
    return out;
}

/* ================================================================ concat */

/* Each input k owns a band [off_k, off_k + n_k) of the concat dim; in the
 * [outer, N, inner] view that is one contiguous block per outer index. */
static void gx_concat_backward(gx_ctx *ctx, gx_node *n) {
    const int dim = (int)n->i[0];
    int64_t outer, N, inner;
    gx_split_dims(n->out, dim, &outer, &N, &inner);
    const gx_real *go = n->out->grad;
    int64_t off = 0;
    for (int k = 0; k < n->n_in; k++) {
        gx_tensor *x = n->in[k];
        const int64_t nk = x->shape[dim], blk = nk * inner;
        gx_real *gx = gx_grad(ctx, x);
        if (gx) {
            #pragma omp parallel for if (GX_SHAPE_PAR(x->numel))
            for (int64_t o = 0; o < outer; o++) {
                const gx_real *src = go + (o * N + off) * inner;
                gx_real *dst = gx + o * blk;
                for (int64_t t = 0; t < blk; t++) dst[t] += src[t];
            }
        }
        off += nk;
    }
}

/* Concat of at most GX_NODE_MAX_IN inputs (one tape node). */
static gx_tensor *gx_concat_node(gx_ctx *ctx, int n, gx_tensor *const *xs, int dim) {
    gx_tensor *x0 = xs[0];
    int64_t oshape[GX_MAX_DIMS];
    for (int d = 0; d < x0->ndim; d++) oshape[d] = x0->shape[d];
    oshape[dim] = 0;
    char b0[96], b1[96];
    for (int k = 0; k < n; k++) {
        int same = xs[k]->ndim == x0->ndim;
        for (int d = 0; same && d < x0->ndim; d++)
            same = d == dim || xs[k]->shape[d] == x0->shape[d];
        GX_ASSERT_MSG(same, "gx_concat: input %d %s does not match input 0 %s outside dim %d", k,
                      gx_tensor_shape_str(xs[k], b1, sizeof b1),
                      gx_tensor_shape_str(x0, b0, sizeof b0), dim);
        oshape[dim] += xs[k]->shape[dim];
    }
    GX_CUDA_DISPATCH(gx_cuda_any_on(n, xs), gx_cuda_concat(ctx, n, xs, dim, oshape));
    gx_tensor *out = gx_tensor_new(ctx, x0->ndim, oshape);
    int64_t outer, N, inner;
    gx_split_dims(out, dim, &outer, &N, &inner);
    int64_t off = 0;
    for (int k = 0; k < n; k++) {
        const int64_t blk = xs[k]->shape[dim] * inner;
        const gx_real *src = xs[k]->data;
        #pragma omp parallel for if (GX_SHAPE_PAR(xs[k]->numel))
        for (int64_t o = 0; o < outer; o++)
            memcpy(out->data + (o * N + off) * inner, src + o * blk, (size_t)blk * sizeof(gx_real));
        off += xs[k]->shape[dim];
    }
    gx_node *nd = gx_tape_record(ctx, "concat", gx_concat_backward, out, n, xs);
    if (nd) nd->i[0] = dim;
    return out;
}

gx_tensor *gx_concat(gx_ctx *ctx, int n, gx_tensor *const *xs, int dim) {
    GX_ASSERT_MSG(n >= 1, "gx_concat: needs at least one input, got %d", n);
    dim = gx_tensor_dim(xs[0], dim);
    /* A tape node holds at most GX_NODE_MAX_IN inputs. Concat is
     * associative, so longer lists become concat(x0..x4, concat(rest)):
     * one extra copy of the tail, and the gradients route unchanged. */
    if (n > GX_NODE_MAX_IN) {
        gx_tensor *parts[GX_NODE_MAX_IN];
        for (int k = 0; k < GX_NODE_MAX_IN - 1; k++) parts[k] = xs[k];
        parts[GX_NODE_MAX_IN - 1] = gx_concat(ctx, n - (GX_NODE_MAX_IN - 1),
                                              xs + GX_NODE_MAX_IN - 1, dim);
        return gx_concat_node(ctx, GX_NODE_MAX_IN, parts, dim);
    }
    return gx_concat_node(ctx, n, xs, dim);
}

/* ================================================================ slice */

/* dL/dx[..., start:end, ...] += dL/dout; the rest of dL/dx is untouched. */
static void gx_slice_backward(gx_ctx *ctx, gx_node *n) {
    gx_real *gx = gx_grad(ctx, n->in[0]);
    if (!gx) return;
    const int dim = (int)n->i[0];
    const int64_t start = n->i[1];
    int64_t outer, N, inner;
    gx_split_dims(n->in[0], dim, &outer, &N, &inner);
    const int64_t blk = n->out->shape[dim] * inner;
    const gx_real *go = n->out->grad;
    #pragma omp parallel for if (GX_SHAPE_PAR(n->out->numel))
    for (int64_t o = 0; o < outer; o++) {
        gx_real *dst = gx + (o * N + start) * inner;
        const gx_real *src = go + o * blk;
        for (int64_t t = 0; t < blk; t++) dst[t] += src[t];
    }
}

gx_tensor *gx_slice(gx_ctx *ctx, gx_tensor *x, int dim, int64_t start, int64_t end) {
    dim = gx_tensor_dim(x, dim);
    char buf[96];
    GX_ASSERT_MSG(0 <= start && start <= end && end <= x->shape[dim],
                  "gx_slice: range [%lld, %lld) out of bounds for dim %d of %s",
                  (long long)start, (long long)end, dim, gx_tensor_shape_str(x, buf, sizeof buf));
    GX_CUDA_DISPATCH(gx_on_cuda(x), gx_cuda_slice(ctx, x, dim, start, end));
    int64_t oshape[GX_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) oshape[d] = x->shape[d];
    oshape[dim] = end - start;
    gx_tensor *out = gx_tensor_new(ctx, x->ndim, oshape);
    int64_t outer, N, inner;
    gx_split_dims(x, dim, &outer, &N, &inner);
    const int64_t blk = (end - start) * inner;
    #pragma omp parallel for if (GX_SHAPE_PAR(out->numel))
    for (int64_t o = 0; o < outer; o++)
        memcpy(out->data + o * blk, x->data + (o * N + start) * inner, (size_t)blk * sizeof(gx_real));
    gx_node *n = gx_tape_record(ctx, "slice", gx_slice_backward, out, 1, &x);
    if (n) { n->i[0] = dim; n->i[1] = start; }
    return out;
}

/* ================================================================ split */

/* n slices, each its own tape node: a part that receives no gradient is
 * skipped by the sweep, and the input gradient is the sum of the parts'. */
void gx_split(gx_ctx *ctx, gx_tensor *x, int dim, int n, const int64_t *sizes,
              gx_tensor **out) {
    dim = gx_tensor_dim(x, dim);
    int64_t total = 0;
    for (int k = 0; k < n; k++) {
        GX_ASSERT_MSG(sizes[k] >= 0, "gx_split: part %d has negative size %lld", k, (long long)sizes[k]);
        total += sizes[k];
    }
    char buf[96];
    GX_ASSERT_MSG(total == x->shape[dim], "gx_split: sizes sum to %lld, dim %d of %s is %lld",
                  (long long)total, dim, gx_tensor_shape_str(x, buf, sizeof buf),
                  (long long)x->shape[dim]);
    int64_t start = 0;
    for (int k = 0; k < n; k++) {
        out[k] = gx_slice(ctx, x, dim, start, start + sizes[k]);
        start += sizes[k];
    }
}

/* ================================================================ flip */

/* out[o, j, :] = x[o, n-1-j, :]: reversing is its own inverse, so forward
 * and backward share this block walk (backward with accumulate). */
static void gx_flip_walk(const gx_real *src, gx_real *dst, int64_t outer, int64_t N,
                         int64_t inner, int accumulate) {
    #pragma omp parallel for if (GX_SHAPE_PAR(outer * N * inner))
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < N; j++) {
            const gx_real *s = src + (o * N + (N - 1 - j)) * inner;
            gx_real *d = dst + (o * N + j) * inner;
            if (accumulate) for (int64_t t = 0; t < inner; t++) d[t] += s[t];
            else            for (int64_t t = 0; t < inner; t++) d[t] = s[t];
        }
}

static void gx_flip_backward(gx_ctx *ctx, gx_node *n) {
    gx_real *gx = gx_grad(ctx, n->in[0]);
    if (!gx) return;
    int64_t outer, N, inner;
    gx_split_dims(n->out, (int)n->i[0], &outer, &N, &inner);
    gx_flip_walk(n->out->grad, gx, outer, N, inner, 1);
}

gx_tensor *gx_flip(gx_ctx *ctx, gx_tensor *x, int dim) {
    dim = gx_tensor_dim(x, dim);
    GX_CUDA_DISPATCH(gx_on_cuda(x), gx_cuda_flip(ctx, x, dim));
    gx_tensor *out = gx_tensor_like(ctx, x);
    int64_t outer, N, inner;
    gx_split_dims(x, dim, &outer, &N, &inner);
    gx_flip_walk(x->data, out->data, outer, N, inner, 0);
    gx_node *n = gx_tape_record(ctx, "flip", gx_flip_backward, out, 1, &x);
    if (n) n->i[0] = dim;
    return out;
}
