/*
 * gx_cuda_elem.cu — elementwise ops on the GPU, twin of kernels/gx_elem.c.
 *
 * Unary: one kernel for every op, the op a uniform switch (no divergence:
 * every thread takes the same arm), math in double through gx_math.h and
 * rounded once, exactly as the CPU loop. One kernel instead of a template per
 * op keeps nvcc's time down (make test builds it on 2 cores).
 *
 * Binary: every output element decomposes its index over the output shape
 * and reads a and b through strides that are 0 on broadcast dims; arithmetic
 * in float as on the CPU. Backward writes each operand's per-element term
 * (g, -g, g*b, g/b, ...) into scratch and sums it over the broadcast dims
 * (gx_cu_reduce_broadcast_add: double accumulators, a fixed order per target
 * element, so results do not depend on the launch geometry).
 */
#include "gx_cuda_impl.cuh"
#include "gx_cuda_body.cuh"

/* --------------------------------------------------------------- unary */

__global__ void gx_cu_unary_fwd_k(int op, double p0, double p1, const float *x, float *y, int64_t n) {
    GX_CU_LOOP(i, n) y[i] = (float)gx_cu_uf(op, (double)x[i], p0, p1);
}

__global__ void gx_cu_unary_bwd_k(int op, double p0, double p1, const float *x, const float *y,
                                  const float *g, float *gx, int64_t n) {
    GX_CU_LOOP(i, n) gx[i] += (float)((double)g[i] * gx_cu_ud(op, (double)x[i], (double)y[i], p0, p1));
}

extern "C" void gx_cu_unary_fwd(gx_cuda_stream *s, gx_cu_unary op, double p0, double p1,
                                const float *x, float *y, int64_t n) {
    GX_CU_SKIP(s);
    if (n <= 0) return;
    gx_cu_unary_fwd_k<<<gx_cu_blocks(n), GX_CU_THREADS, 0, s->st>>>((int)op, p0, p1, x, y, n);
    GX_CU_CHECK(s);
}

extern "C" void gx_cu_unary_bwd(gx_cuda_stream *s, gx_cu_unary op, double p0, double p1,
                                const float *x, const float *y, const float *g, float *gx, int64_t n) {
    GX_CU_SKIP(s);
    if (n <= 0) return;
    gx_cu_unary_bwd_k<<<gx_cu_blocks(n), GX_CU_THREADS, 0, s->st>>>((int)op, p0, p1, x, y, g, gx, n);
    GX_CU_CHECK(s);
}

/* ------------------------------------------------------------ broadcast */

__global__ void gx_cu_binary_fwd_k(int op, gx_cu_bc c, const float *a, const float *b, float *o, int64_t n) {
    GX_CU_LOOP(i, n) o[i] = gx_cu_binary_at(op, c, a, b, i);
}

__global__ void gx_cu_binary_term_k(int op, int which, gx_cu_bc c, const float *a, const float *b,
                                    const float *out, const float *g, float *t, int64_t n) {
    GX_CU_LOOP(i, n) t[i] = gx_cu_binary_term_at(op, which, c, a, b, out, g, i);
}

extern "C" void gx_cu_binary_fwd(gx_cuda_stream *s, gx_cu_binary op,
                                 const float *a, int na, const int64_t *ashape,
                                 const float *b, int nb, const int64_t *bshape,
                                 float *out, int no, const int64_t *oshape) {
    GX_CU_SKIP(s);
    int64_t n = gx_shape_numel(no, oshape);
    if (n <= 0) return;
    gx_cu_bc c = gx_cu_bc_make(na, ashape, nb, bshape, no, oshape);
    gx_cu_binary_fwd_k<<<gx_cu_blocks(n), GX_CU_THREADS, 0, s->st>>>((int)op, c, a, b, out, n);
    GX_CU_CHECK(s);
}

extern "C" void gx_cu_binary_bwd(gx_cuda_stream *s, gx_cu_binary op,
                                 const float *a, int na, const int64_t *ashape,
                                 const float *b, int nb, const int64_t *bshape,
                                 const float *out, const float *g, int no, const int64_t *oshape,
                                 float *ga, float *gb, float *scratch) {
    GX_CU_SKIP(s);
    int64_t n = gx_shape_numel(no, oshape);
    if (n <= 0) return;
    gx_cu_bc c = gx_cu_bc_make(na, ashape, nb, bshape, no, oshape);
    for (int which = 0; which < 2; which++) {
        float *dst = which ? gb : ga;
        if (!dst) continue;
        gx_cu_binary_term_k<<<gx_cu_blocks(n), GX_CU_THREADS, 0, s->st>>>((int)op, which, c, a, b, out,
                                                                          g, scratch, n);
        GX_CU_CHECK(s);
        if (which) gx_cu_reduce_broadcast_add(s, dst, nb, bshape, scratch, no, oshape);
        else gx_cu_reduce_broadcast_add(s, dst, na, ashape, scratch, no, oshape);
    }
}

/* ------------------------------------------------- reduce over broadcast */

/* One thread per target element (few reduced values, or many targets). */
__global__ void gx_cu_rb_thread_k(gx_cu_rb r, const float *g, float *acc) {
    GX_CU_LOOP(e, r.n_kept) acc[e] += (float)gx_cu_rb_sum(r, g, e, 0, 1);
}

/* One block per target element (long reductions, e.g. per channel). */
__global__ void gx_cu_rb_block_k(gx_cu_rb r, const float *g, float *acc) {
    __shared__ double sh[32];
    for (int64_t e = blockIdx.x; e < r.n_kept; e += gridDim.x) {
        double sum = gx_cu_block_sum(gx_cu_rb_sum(r, g, e, threadIdx.x, blockDim.x), sh);
        if (threadIdx.x == 0) acc[e] += (float)sum;
    }
}

extern "C" void gx_cu_reduce_broadcast_add(gx_cuda_stream *s, float *acc, int nt, const int64_t *to,
                                           const float *g, int nf, const int64_t *from) {
    GX_CU_SKIP(s);
    gx_cu_rb r;
    if (!gx_cu_rb_make(&r, nt, to, nf, from)) return;
    if (r.n_red >= 2048 && r.n_kept < 4096) {
        unsigned nb = (unsigned)(r.n_kept < 65535 ? r.n_kept : 65535);
        gx_cu_rb_block_k<<<nb, GX_CU_THREADS, 0, s->st>>>(r, g, acc);
    } else {
        gx_cu_rb_thread_k<<<gx_cu_blocks(r.n_kept), GX_CU_THREADS, 0, s->st>>>(r, g, acc);
    }
    GX_CU_CHECK(s);
}
